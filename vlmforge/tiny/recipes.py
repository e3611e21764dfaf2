"""Per-model_type tokenizer facts (special tokens, roles, chat template) and HF class resolution.

Facts about the *real* tokenizers live in data files (``chat_templates/<model_type>.jinja`` and ``.json``),
not in code. A model_type without data files gets a generic ChatML spec derived from its processor class and
config, so new families work without edits here.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import json
import pkgutil
import re
import tokenize
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import transformers
from transformers import PretrainedConfig

__all__ = [
    "CHATML_IMAGE_PLACEHOLDER",
    "TokenizerRecipe",
    "processor_literal_tokens",
    "resolve_processor_classes",
    "stored_families",
    "tokenizer_recipe",
    "vocabulary_map_tokens",
]

_DATA = resources.files(__package__) / "chat_templates"
CHATML_IMAGE_PLACEHOLDER = "__IMAGE_TOKEN__"
_CHATML_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_TOKEN_FIELD_SUFFIXES = ("_token_id", "_token_index", "_token_ids")
_ROLE_TOKENS = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}
# `tokenizer.image_token if hasattr(tokenizer, "image_token") else "<|image_pad|>"` and
# `"<|image_pad|>" if not hasattr(tokenizer, "image_token") else ...` -> image_token: <|image_pad|>
_HASATTR_DEFAULT = re.compile(r'hasattr\(\s*tokenizer\s*,\s*"(\w+_token)"\s*\)\s*else\s*"([^"]+)"')
_NOT_HASATTR_DEFAULT = re.compile(r'"([^"]+)"\s+if\s+not\s+hasattr\(\s*tokenizer\s*,\s*"(\w+_token)"\s*\)')
# `tokenizer.boi_token` / `tokenizer.boi_token_id` -> boi_token
_TOKENIZER_ATTRIBUTE = re.compile(r"tokenizer\.(\w+_token)(?:_id)?\b")
# `self.image_token = "|SPEAKER|"`: the processor hard-codes the string it looks up in the vocabulary.
_SELF_LITERAL = re.compile(r'self\.(\w+_token)\s*=\s*"([^"]+)"')
# `IMAGE_TOKEN = "<image>"` at module level: the string a processor looks for in prompts.
_MODULE_CONSTANT = re.compile(r'^([A-Z][A-Z0-9_]*_TOKEN)\s*=\s*"([^"]+)"', re.MULTILINE)
# Special-looking literals (`<IMG_ATOM>`, `<|im_start|>`, `</img>`) a processor writes into prompts: they must
# be single tokens of the tiny vocabulary, as in the real one, or the expanded prompt is split into bytes.
_LITERAL_TOKEN = re.compile(r"</?\|?[A-Za-z][\w|]*\|?>")


@dataclass(frozen=True)
class TokenizerRecipe:
    """What a tiny tokenizer/processor for one model_type needs: special tokens, their roles, a chat template.

    ``token_fields`` maps config token-id field names (``image_token_id``, ``bos_token_id``...) to token
    strings; the tiny tokenizer turns it into the ``token_ids`` argument of :func:`shrink_config`.
    """

    model_type: str
    chat_template: str
    special_tokens: tuple[str, ...]
    leading_special_tokens: tuple[str, ...] = ()
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    add_bos_token: bool = False
    token_fields: dict[str, str | list[str]] = field(default_factory=dict)
    named_tokens: dict[str, str] = field(default_factory=dict)
    stored: bool = True

    def tokenizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`build_tiny_tokenizer`."""
        return {
            "special_tokens": list(self.special_tokens),
            "chat_template": self.chat_template,
            "leading_special_tokens": list(self.leading_special_tokens),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "add_bos_token": self.add_bos_token,
            "named_tokens": dict(self.named_tokens),
        }


def stored_families() -> list[str]:
    """model_types with stored chat template + special-token data."""
    return sorted(p.name.removesuffix(".json") for p in _DATA.iterdir() if p.name.endswith(".json"))


@cache
def _stored_recipe(model_type: str) -> TokenizerRecipe | None:
    data_file, template_file = _DATA / f"{model_type}.json", _DATA / f"{model_type}.jinja"
    if not data_file.is_file():
        return None
    data = json.loads(data_file.read_text())
    return TokenizerRecipe(
        model_type=model_type,
        chat_template=template_file.read_text(),
        special_tokens=tuple(data["special_tokens"]),
        leading_special_tokens=tuple(data.get("leading_special_tokens", ())),
        bos_token=data.get("bos_token"),
        eos_token=data.get("eos_token"),
        pad_token=data.get("pad_token"),
        unk_token=data.get("unk_token"),
        add_bos_token=bool(data.get("add_bos_token", False)),
        token_fields=dict(data.get("token_fields", {})),
        named_tokens=dict(data.get("named_tokens", {})),
    )


def _class(name: str | None) -> type | None:
    return getattr(transformers, name, None) if name else None


def _pick_backend(entry: str | dict[str, str] | tuple | None) -> str | None:
    # transformers 5 maps a model_type to {"torchvision": fast, "pil": slow}; prefer the default (torchvision)
    # backend, which is what AutoProcessor instantiates for real checkpoints.
    if isinstance(entry, dict):
        return entry.get("torchvision") or next(iter(entry.values()), None)
    if isinstance(entry, tuple | list):
        return next((e for e in entry if e), None)
    return entry


def _config_class(model_type: str) -> type | None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[model_type]
    except KeyError:
        return None


_MODULAR_IMPORT = re.compile(r"^from \.\.(\w+)\.", re.MULTILINE)


def _modular_bases(config_cls: type) -> list[str]:
    """Package names of the families a transformers ``modular_<name>.py`` imports from (``llava``).

    The generated ``configuration_``/``modeling_`` files no longer subclass the parent family's classes; the
    modular file, shipped next to them, still says which family the model derives from.
    """
    package, _, module = config_cls.__module__.rpartition(".")
    name = module.removeprefix("configuration_")
    try:
        spec = importlib.util.find_spec(f"{package}.modular_{name}")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin:
        return []
    try:
        with open(spec.origin, encoding="utf-8") as source:
            found = _MODULAR_IMPORT.findall(source.read())
    except OSError:
        return []
    return [m for m in dict.fromkeys(found) if m != "auto"]


def _package_processor(config_cls: type | None) -> type | None:
    """The one processor class defined in the config class's own transformers package, if any.

    Some families ship a processor (``processing_<name>.py``) that transformers' auto mapping does not list
    under their model_type (Kosmos-2 in transformers 5): the model's own package is still the authority on
    which processor its checkpoints use. Only a package defining exactly one ``ProcessorMixin`` subclass
    answers; several would need a choice the package does not make.
    """
    if config_cls is None:
        return None
    package = config_cls.__module__.rpartition(".")[0]
    try:
        module = importlib.import_module(package)
        names = [
            info.name for info in pkgutil.iter_modules(module.__path__) if info.name.startswith("processing_")
        ]
    except (ImportError, AttributeError):
        return None
    found = []
    for name in names:
        try:
            submodule = importlib.import_module(f"{package}.{name}")
        except ImportError:  # a processor needing an optional backend: not this environment's
            continue
        found += [
            value
            for value in vars(submodule).values()
            if isinstance(value, type)
            and issubclass(value, transformers.ProcessorMixin)
            and value.__module__ == submodule.__name__
        ]
    return found[0] if len(found) == 1 else None


def _related_model_types(model_type: str, config: PretrainedConfig | None) -> list[str]:
    """``model_type`` first, then the model_types likely to share its processor, most specific first.

    Some model_types have no processor registered under their own name: a "thinker" or MoE variant of a family
    (``qwen2_5_omni_thinker`` -> ``qwen2_5_omni``), a model built on another family's towers (its sub-configs'
    model_types, ``glm4v_vision`` -> ``glm4v``), a model_type spelled with a dash (``kosmos-2``), another
    model_type defined in the same transformers package, or a family its modular file builds on.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES, model_type_to_module_name

    candidates = [model_type, model_type.replace("-", "_"), model_type.replace("_", "-")]
    parts = model_type.split("_")
    candidates += ["_".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    config_cls = type(config) if config is not None else _config_class(model_type)
    if config_cls is not None:
        # `transformers.models.<package>.configuration_x`: compare package names, importing nothing more.
        package = config_cls.__module__.split(".")[-2]
        candidates += [t for t in CONFIG_MAPPING_NAMES if model_type_to_module_name(t) == package]
        # The families its modular file builds on (FastVLM's is LLaVA's classes with a new projector): their
        # processor is what its checkpoints use.
        for module in _modular_bases(config_cls):
            candidates += [t for t in CONFIG_MAPPING_NAMES if model_type_to_module_name(t) == module]
    if config is None and config_cls is not None:
        try:
            config = config_cls()
        except Exception:  # a config class without usable defaults: no sub-configs to look at
            config = None
    if config is not None:
        for key in config.sub_configs:
            sub_type = getattr(getattr(config, key, None), "model_type", None)
            if isinstance(sub_type, str):
                for suffix in ("_vision_model", "_text_model", "_vision", "_text", "_model"):
                    sub_type = sub_type.removesuffix(suffix)
                candidates.append(sub_type)
    return list(dict.fromkeys(candidates))


def resolve_processor_classes(model_type_or_config: str | PretrainedConfig) -> dict[str, type]:
    """HF classes for the processor of a model_type and its components, from transformers' auto mappings.

    Accepts a model_type or a config (a config also lets the processor of a parent family be found through its
    sub-configs, see :func:`_related_model_types`). Returns a dict with ``"processor"`` and, where the
    processor has them, ``"image_processor"``, ``"video_processor"`` and ``"feature_extractor"`` (the audio
    front end of an any-to-text processor such as Gemma3n's: the tiny model never hears audio, but the
    processor cannot be built without one).
    """
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    if isinstance(model_type_or_config, PretrainedConfig):
        model_type, config = model_type_or_config.model_type, model_type_or_config
    else:
        model_type, config = model_type_or_config, None
    related = _related_model_types(model_type, config)
    owner = next((t for t in related if _class(PROCESSOR_MAPPING_NAMES.get(t))), None)
    if owner is not None:
        processor_name = PROCESSOR_MAPPING_NAMES[owner]
        processor_cls = _class(processor_name)
    else:
        owner = model_type
        processor_cls = _package_processor(config_cls=type(config) if config else _config_class(model_type))
        if processor_cls is None:
            version = transformers.__version__
            raise KeyError(f"transformers {version} has no processor class for model_type {model_type!r}")
        processor_name = processor_cls.__name__
    # Variants (e.g. a MoE sibling) often share the processor but lack their own component entries: fall back
    # to the entries of any model_type that uses the same processor class.
    siblings = [
        model_type,
        owner,
        *sorted(t for t, n in PROCESSOR_MAPPING_NAMES.items() if n == processor_name),
    ]
    classes: dict[str, type] = {"processor": processor_cls}
    for attribute, mapping in (
        ("image_processor", IMAGE_PROCESSOR_MAPPING_NAMES),
        ("video_processor", VIDEO_PROCESSOR_MAPPING_NAMES),
        ("feature_extractor", FEATURE_EXTRACTOR_MAPPING_NAMES),
    ):
        if attribute not in processor_cls.get_attributes():
            continue
        component = next((c for t in siblings if (c := _class(_pick_backend(mapping.get(t))))), None)
        if component is None:
            raise KeyError(f"no {attribute} class for model_type {model_type!r}")
        classes[attribute] = component
    return classes


def _processor_named_tokens(processor_cls: type) -> dict[str, str]:
    """Named tokens the processor reads from its tokenizer (``image_token``, ``boi_token``...) with strings.

    Heuristic for families without stored data: string defaults of ``__init__`` parameters, strings the
    processor hard-codes (``self.image_token = "|SPEAKER|"``, a module-level ``IMAGE_TOKEN = "<image>"``),
    the ``hasattr(tokenizer, "x_token") else "<...>"`` idiom, and any other ``tokenizer.x_token`` access
    (given a placeholder ``<|x|>``). The tiny tokenizer exposes them as attributes, as real multimodal
    tokenizers do. Which of them the model's ``image_token_id`` must be is settled by probing the processor
    (``pipeline._align_image_token``).
    """
    named: dict[str, str] = {}
    for name, param in inspect.signature(processor_cls.__init__).parameters.items():
        if name.endswith("_token") and isinstance(param.default, str) and param.default:
            named[name] = param.default
    try:
        source = inspect.getsource(processor_cls.__init__)
    except (OSError, TypeError):
        return named
    # A hard-coded string wins over a signature default: it is what the processor really looks up.
    for name, literal in _SELF_LITERAL.findall(source):
        named[name] = literal
    for name, default in _HASATTR_DEFAULT.findall(source):
        named.setdefault(name, default)
    for default, name in _NOT_HASATTR_DEFAULT.findall(source):
        named.setdefault(name, default)
    try:
        module_source = inspect.getsource(inspect.getmodule(processor_cls) or processor_cls)
    except (OSError, TypeError):
        module_source = ""
    for constant, literal in _MODULE_CONSTANT.findall(module_source):
        named.setdefault(constant.lower(), literal)  # PaliGemma: IMAGE_TOKEN = "<image>"
    for name in _TOKENIZER_ATTRIBUTE.findall(source):
        if name not in _ROLE_TOKENS and not name.startswith("add_"):  # add_bos_token is a flag, not a token
            named.setdefault(name, f"<|{name.removesuffix('_token')}|>")
    return named


def _reads_tokenizer_role(processor_cls: type, role: str) -> bool:
    """Whether the processor's code reads the tokenizer's ``role`` token or its id (``unk_token_id``)."""
    try:
        source = inspect.getsource(processor_cls)
    except (OSError, TypeError):
        return False
    return role in _TOKENIZER_ATTRIBUTE.findall(source)


def processor_literal_tokens(processor_cls: type) -> list[str]:
    """Special-looking string literals in the processor's code (not its docstrings), in order of appearance.

    Processors such as Ovis2's expand the image token into ``<IMG_START><IMG_ATOM>...<IMG_END>``; the real
    tokenizer has each of these as one added token, so the tiny one must too.
    """
    try:
        source = inspect.getsource(inspect.getmodule(processor_cls) or processor_cls)
    except (OSError, TypeError):
        return []
    found: list[str] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    for token in tokens:
        text = token.string
        if token.type != tokenize.STRING or text.lstrip("rbfuRBFU").startswith(('"""', "'''")):
            continue  # docstrings mention tokens without the processor ever writing them
        found.extend(_LITERAL_TOKEN.findall(text))
    return list(dict.fromkeys(found))


def _config_token_fields(config: PretrainedConfig) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    stack = [config.to_dict()]
    while stack:
        node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append(value)
            elif isinstance(key, str) and key.lstrip("_").endswith(_TOKEN_FIELD_SUFFIXES):
                fields.setdefault(key.lstrip("_"), value)
    return fields


# How a model maps VQ codes to vocabulary tokens, read from its modeling code (Chameleon, Emu3):
# `vocab_map.get("<image>")` names a token it needs, `name.startswith("IMGIMG")` the prefix of code tokens.
_VOCAB_LOOKUP = re.compile(r"""vocab_map\.get\(\s*["']([^"']+)["']""")
_CODE_PREFIX = re.compile(r"""\.startswith\(\s*["']([^"']+)["']""")
# `chr(ord("A") + i)`: code digits written as letters A..J (Chameleon's IMGIMGBAZ is code 10).
_LETTER_DIGITS = re.compile(r"""chr\(\s*ord\(\s*["']A["']\s*\)\s*\+""")
# `token[-8:-2]`: a fixed-width number before a 2-character suffix (Emu3's <|visual token 000010|>).
_FIXED_WIDTH_SLICE = re.compile(r"\[\s*-(\d+)\s*:\s*-(\d+)\s*\]")


def _modeling_source(config: PretrainedConfig) -> str:
    module_name = type(config).__module__.replace(".configuration_", ".modeling_")
    try:
        return inspect.getsource(importlib.import_module(module_name))
    except (ImportError, OSError, TypeError):
        return ""


def _code_token(prefix: str, code: int, source: str) -> str:
    """The vocabulary token of VQ code ``code``, as the modeling code parses it back (patterns above)."""
    if _LETTER_DIGITS.search(source):
        # The parser drops one trailing character after the letter digits (the real tokens end in "Z").
        return f"{prefix}{''.join(chr(ord('A') + int(d)) for d in str(code))}Z"
    if match := _FIXED_WIDTH_SLICE.search(source):
        width, suffix = int(match.group(1)) - int(match.group(2)), int(match.group(2))
        closing = "|>" if prefix.startswith("<|") and suffix == 2 else "_" * suffix
        return f"{prefix} {code:0{width}d}{closing}"
    return f"{prefix}{code}"


def vocabulary_map_tokens(config: PretrainedConfig, codes: int) -> tuple[list[str], list[str]]:
    """(named tokens, VQ code tokens) a model with a ``vocabulary_map`` looks up in it.

    Chameleon and Emu3 turn an image into VQ codes and each code into a vocabulary token found by name in
    ``config.vocabulary_map`` (the whole tokenizer vocabulary): ``<image>``, Emu3's ``<|extra_200|>`` row
    separator, and one token per code (``IMGIMG<letters>Z``, ``<|visual token NNNNNN|>``). The names and the
    code-token format are read from the modeling code, so the tiny tokenizer has them as single tokens;
    ``codes`` is the tiny codebook size. Empty for configs without a ``vocabulary_map``.
    """
    if "vocabulary_map" not in config.to_dict():
        return [], []
    source = _modeling_source(config)
    named = list(dict.fromkeys(_VOCAB_LOOKUP.findall(source)))
    prefixes = list(dict.fromkeys(_CODE_PREFIX.findall(source)))
    if not prefixes:
        return named, []
    # A codebook already smaller than the tiny one keeps its size (the shrinker only caps it).
    real = [v for v in _config_values(config, ("num_embeddings", "codebook_size")) if v > 0]
    return named, [_code_token(prefixes[0], code, source) for code in range(min([codes, *real]))]


def _config_values(config: PretrainedConfig, keys: tuple[str, ...]) -> list[int]:
    """Integer values of ``keys`` anywhere in the config tree."""
    values, stack = [], [config.to_dict()]
    while stack:
        node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append(value)
            elif key in keys and isinstance(value, int) and not isinstance(value, bool):
                values.append(value)
    return values


def _generic_recipe(config: PretrainedConfig, codes: int = 0) -> TokenizerRecipe:
    """ChatML spec for a model_type without stored data: image token from the processor, ChatML roles."""
    processor_cls = resolve_processor_classes(config)["processor"]
    named_tokens = _processor_named_tokens(processor_cls)
    looked_up, code_tokens = vocabulary_map_tokens(config, codes)
    for token in looked_up:
        # The model finds `<image>` by name in its vocabulary map: a processor attribute guessed as the
        # placeholder `<|image|>` must be that very token, or processor and model count different ids.
        name = token.strip("<|>") + "_token"
        if named_tokens.get(name) == f"<|{name.removesuffix('_token')}|>":
            named_tokens[name] = token
    named_tokens.setdefault("image_token", "<image>")
    token_fields: dict[str, str | list[str]] = {
        "bos_token_id": "<|endoftext|>",
        "eos_token_id": "<|im_end|>",
        "pad_token_id": "<|endoftext|>",
    }
    extra_tokens: list[str] = []
    for name, value in sorted(_config_token_fields(config).items()):
        # image_token_index -> image_token, visual_indicator_token_ids -> visual_indicator_token
        base = name.removesuffix("_ids").removesuffix("_id").removesuffix("_index")
        # An unset field stays unset unless the processor names a token for it (a default config may leave
        # image_token_index=None while real checkpoints and the processor use one).
        if name in token_fields or (value is None and base not in named_tokens):
            continue
        # Prefer the processor's own string for this role; otherwise give the field distinct placeholder
        # token(s) so its id is valid and unambiguous in the tiny vocabulary.
        if isinstance(value, list):
            tokens = [f"<|{base}_{i}|>" for i in range(len(value))]
            token_fields[name] = tokens
            extra_tokens.extend(tokens)
        else:
            token = named_tokens.get(base) or f"<|{base}|>"
            token_fields[name] = token
            extra_tokens.append(token)
    # The image slot of the template is filled by `processor_for_config` with the image token the processor
    # instance actually expects in text (it may differ from `image_token`, e.g. a begin-of-image token).
    template = (_DATA / "chatml.jinja").read_text()
    literals = processor_literal_tokens(processor_cls)
    specials = [*_CHATML_TOKENS, *named_tokens.values(), *extra_tokens, *literals, *looked_up, *code_tokens]
    # A processor computing ids from the unknown token's (Kosmos-2's image placeholders are the ids right
    # after `unk_token_id`) needs one; it gets the first id, as in the sentencepiece-style vocabularies
    # such processors come with, so the ids after it are ordinary vocabulary.
    unk_token = "<unk>" if _reads_tokenizer_role(processor_cls, "unk_token") else None
    return TokenizerRecipe(
        model_type=config.model_type,
        chat_template=template,
        special_tokens=tuple(dict.fromkeys(specials)),
        leading_special_tokens=(unk_token,) if unk_token else (),
        unk_token=unk_token,
        # The config's bos_token_id is <|endoftext|>; processors that read `tokenizer.bos_token` (Mllama
        # prepends it to every prompt) need the role set, and it changes nothing else (no add_bos_token).
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        token_fields=token_fields,
        named_tokens=named_tokens,
        stored=False,
    )


def tokenizer_recipe(config: PretrainedConfig, *, codes: int = 0) -> TokenizerRecipe:
    """The stored spec for ``config.model_type``, or a generic ChatML one derived from the processor class.

    ``codes``: VQ codes that get a vocabulary token each (the tiny codebook size, see
    :func:`vocabulary_map_tokens`).
    """
    return _stored_recipe(config.model_type) or _generic_recipe(config, codes)
