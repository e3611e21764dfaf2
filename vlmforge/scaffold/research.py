"""Automated Phase-1 research: answer "how is this VLM built?" from its config alone, with evidence.

The seed guide (``adding-a-new-vlm.md``, Phase 1) asks a person to load the model in a REPL and read
off the model class, the path to the decoder, the attention's rotary function, the image token, the
processor conventions and three capability flags. :func:`research` does the same mechanically:

1. resolve the input (local checkpoint dir, hub id in the local HF cache, a stored reference config or
   a bare ``model_type``) to a config, never touching the network;
2. instantiate the model class on the **meta device** (no weights, near-zero memory even for 72B) and
   read structure off the module tree, the attention class's source and the config;
3. test the chat template of the real processor (checkpoint dir) or the tiny one;
4. *measure* the capability flags on a tiny random model of the same architecture.

Every answer carries its evidence and a status; what cannot be answered is reported as
``unknown`` / ``hand_edit`` (and becomes a ``# TODO(vlmforge)`` in the generated module), never guessed.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import keyword
import os
import re
import resource
import sys
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from vlmforge.core.spec import (
    AttentionRecipe,
    Capabilities,
    FamilySpec,
    ImageTokenSource,
    ModulePaths,
    PromptFormat,
)
from vlmforge.scaffold.errors import ScaffoldError
from vlmforge.scaffold.forward_analysis import (
    ForwardAnalysis,
    analyze_forward,
    evaluate_condition,
    gated_mlp_roles,
)

__all__ = [
    "Answer",
    "ResearchReport",
    "ResolvedSource",
    "Status",
    "default_family_name",
    "offline",
    "research",
    "resolve_source",
]

Status = Literal["found", "measured", "default", "unknown", "hand_edit"]
SourceKind = Literal["local_dir", "hub_cache", "reference", "model_type"]

# Statuses that leave work for a person: they become TODO comments in the generated module.
NEEDS_EDIT: frozenset[str] = frozenset({"unknown", "hand_edit"})
STATUS_HELP = {
    "found": "read from the config / module tree / source",
    "measured": "measured on a tiny random model or a real processor",
    "default": "not encoded anywhere inspectable; the conventional default is used (see evidence)",
    "unknown": "could not be answered; the generated module carries a TODO",
    "hand_edit": "answered, but the generic mechanism cannot express it; needs a hand edit",
}
# Places in the generated module a TODO can sit at (copier question names of the family template).
TEMPLATE_SLOTS = frozenset(
    {
        "model_class", "model_types", "language_model", "lm_head", "layers", "final_norm", "attention", "mlp",
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "rotary_function", "q_norm",
        "k_norm", "scaling", "image_token", "image_in_message", "image_before_text", "continue_final_message",
        "contiguous_image_tokens", "supports_batching", "strict_residual_stream", "tiny_reference", "processor",
        "attention_recipe",
    }
)  # fmt: skip
PROBE_TEXT = "Describe this picture in one sentence."
PROBE_PREFILL = "The picture shows"

_ATTENTION_NAMES = ("self_attn", "self_attention", "attention", "attn")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "mlp_block")
_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_norm", "ln_f", "norm_f")
# Role -> accepted attribute names of the attention projections (transformers' naming conventions).
_PROJECTION_NAMES = {
    "q_proj": ("q_proj", "query", "q", "wq", "q_lin"),
    "k_proj": ("k_proj", "key", "k", "wk", "k_lin"),
    "v_proj": ("v_proj", "value", "v", "wv", "v_lin"),
    "o_proj": ("o_proj", "out_proj", "o", "wo", "dense", "out_lin", "c_proj"),
}
_FUSED_QKV = re.compile(r"^(qkv|qkv_proj|query_key_value|c_attn|wqkv|in_proj)$", re.IGNORECASE)
_IMAGE_TOKEN_KEY = re.compile(r"^(image|img)_(token|patch|pad)(_token)?_(id|index)$")
# Image-processor attributes that make the number of image tokens depend on the image (transformers names).
_DYNAMIC_RESIZE_ATTRIBUTES = (
    "min_pixels",
    "max_pixels",
    "do_image_splitting",
    "image_grid_pinpoints",
    "do_pan_and_scan",
    "crop_to_patches",
    "max_image_tiles",
    "max_patches",
)


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Answer:
    """One research answer.

    Attributes:
        key: stable identifier (``"language_model"``), also the copier question it feeds, if any.
        question: the Phase-1 question in words.
        value: the answer (``None`` when unknown).
        evidence: what in the objects shows it ("model.model.language_model.layers is a ModuleList ...").
        status: see :data:`STATUS_HELP`.
        slot: where in the generated module a TODO for this answer belongs (a copier question name).
    """

    key: str
    question: str
    value: Any
    evidence: str
    status: Status = "found"
    slot: str | None = None

    @property
    def needs_edit(self) -> bool:
        return self.status in NEEDS_EDIT


@dataclass(frozen=True)
class ResolvedSource:
    """The input, resolved to a config.

    Attributes:
        given: the argument as typed.
        kind: ``local_dir``, ``hub_cache`` (hub id found in the local HF cache), ``reference`` (stored
            config of :mod:`vlmforge.harness.tiny`) or ``model_type`` (transformers' default config).
        config: the loaded config.
        checkpoint: hub id to list in the family's checkpoints (None for a model_type / local dir).
        files_dir: directory that may hold the real processor / tokenizer files.
        description: one line for the report.
    """

    given: str
    kind: SourceKind
    config: PretrainedConfig
    checkpoint: str | None
    files_dir: Path | None
    description: str


@dataclass
class ResearchReport:
    """All answers for one architecture, plus how they were obtained.

    Attributes:
        source: the resolved input.
        model_type: ``config.model_type``.
        transformers_version: the transformers the answers hold for.
        answers: ordered answers by key.
        timings: seconds per research phase.
        peak_rss_mb: the process's peak resident memory after research (MiB).
    """

    source: ResolvedSource
    model_type: str
    transformers_version: str
    answers: dict[str, Answer] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None

    # ----------------------------------------------------------------- access
    def add(self, answer: Answer) -> Answer:
        self.answers[answer.key] = answer
        return answer

    def __getitem__(self, key: str) -> Answer:
        return self.answers[key]

    def value(self, key: str, default: Any = None) -> Any:
        answer = self.answers.get(key)
        return default if answer is None or answer.value is None else answer.value

    @property
    def needs_edit(self) -> list[Answer]:
        """Answers that leave work for a person."""
        return [a for a in self.answers.values() if a.needs_edit]

    def todos(self) -> dict[str, str]:
        """TODO text per template slot: what is missing and why (several answers may share a slot).

        Answers with no place in the generated code (processor class, resize strategy) stay in the report
        only: a TODO must sit where the edit is made.
        """
        todos: dict[str, list[str]] = {}
        for answer in self.needs_edit:
            slot = answer.slot or (answer.key if answer.key in TEMPLATE_SLOTS else None)
            if slot is not None:
                evidence = answer.evidence.removeprefix("unknown: ")
                todos.setdefault(slot, []).append(f"{answer.question} [{answer.status}]: {evidence}")
        return {slot: " ".join(texts) for slot, texts in todos.items()}

    # ------------------------------------------------------------ spec values
    def spec_kwargs(self) -> dict[str, Any]:
        """The researched :class:`FamilySpec` fields (all but name / checkpoints / aliases / notes)."""
        v = self.value
        modules = ModulePaths(
            layers=v("layers", "layers"),
            final_norm=v("final_norm", "norm"),
            attention=v("attention", "self_attn"),
            mlp=v("mlp", "mlp"),
            q_proj=v("q_proj", "q_proj"),
            k_proj=v("k_proj", "k_proj"),
            v_proj=v("v_proj", "v_proj"),
            o_proj=v("o_proj", "o_proj"),
            gate_proj=v("gate_proj") or None,
            up_proj=v("up_proj") or None,
            down_proj=v("down_proj") or None,
        )
        return {
            "model_types": tuple(v("model_types", (self.model_type,))),
            "model_class": v("model_class", ""),
            "language_model": v("language_model", ""),
            "lm_head": v("lm_head", "lm_head"),
            "modules": modules,
            "attention": AttentionRecipe(
                rotary_function=v("rotary_function") or None,
                q_norm=v("q_norm") or None,
                k_norm=v("k_norm") or None,
                scaling=v("scaling", "scaling"),
            ),
            "image_token": ImageTokenSource(
                config_attribute=v("image_token_attribute") or None, token=v("image_token") or None
            ),
            "prompt": PromptFormat(
                image_in_message=bool(v("image_in_message", False)),
                image_before_text=bool(v("image_before_text", True)),
                continue_final_message=bool(v("continue_final_message", True)),
            ),
            "capabilities": Capabilities(
                contiguous_image_tokens=bool(v("contiguous_image_tokens", True)),
                supports_batching=bool(v("supports_batching", True)),
                strict_residual_stream=bool(v("strict_residual_stream", True)),
            ),
        }

    def to_spec(
        self, name: str, checkpoints: Sequence[str] = (), aliases: Mapping[str, str] | None = None
    ) -> FamilySpec:
        """A :class:`FamilySpec` built from the answers (what the generated module will declare)."""
        return FamilySpec(
            name=name,
            checkpoints=tuple(checkpoints),
            aliases=dict(aliases or {}),
            tiny_reference=self.value("tiny_reference"),
            **self.spec_kwargs(),
        )

    # ------------------------------------------------------------- renderings
    def copier_answers(
        self,
        name: str,
        *,
        checkpoints: Sequence[str] = (),
        aliases: Mapping[str, str] | None = None,
        notes: str = "",
    ) -> dict[str, Any]:
        """Answers for the ``family`` copier template (``vlmforge/templates/family/copier.yml``)."""
        spec = self.spec_kwargs()
        modules: ModulePaths = spec["modules"]
        attention: AttentionRecipe = spec["attention"]
        image_token: ImageTokenSource = spec["image_token"]
        prompt: PromptFormat = spec["prompt"]
        capabilities: Capabilities = spec["capabilities"]
        checkpoints = list(dict.fromkeys(checkpoints))
        tiny_reference = self.value("tiny_reference") or ""
        if checkpoints and tiny_reference == checkpoints[0]:
            tiny_reference = ""  # FamilySpec already defaults the tiny reference to the first checkpoint
        return {
            "name": name,
            "adapter_class": default_adapter_class(name, self.value("model_class", ""), self.model_type),
            "summary": self.summary(),
            "checkpoints": checkpoints,
            "aliases": dict(aliases or {}),
            "model_types": list(spec["model_types"]),
            "model_class": spec["model_class"],
            "language_model": spec["language_model"],
            "lm_head": spec["lm_head"],
            "layers": modules.layers,
            "final_norm": modules.final_norm,
            "attention": modules.attention,
            "mlp": modules.mlp,
            "q_proj": modules.q_proj,
            "k_proj": modules.k_proj,
            "v_proj": modules.v_proj,
            "o_proj": modules.o_proj,
            "gate_proj": modules.gate_proj or "",
            "up_proj": modules.up_proj or "",
            "down_proj": modules.down_proj or "",
            "rotary_function": attention.rotary_function or "",
            "q_norm": attention.q_norm or "",
            "k_norm": attention.k_norm or "",
            "scaling": attention.scaling,
            "image_token_attribute": image_token.config_attribute or "",
            "image_token": image_token.token or "",
            "image_in_message": prompt.image_in_message,
            "image_before_text": prompt.image_before_text,
            "continue_final_message": prompt.continue_final_message,
            "contiguous_image_tokens": capabilities.contiguous_image_tokens,
            "supports_batching": capabilities.supports_batching,
            "strict_residual_stream": capabilities.strict_residual_stream,
            "tiny_reference": tiny_reference,
            "custom_processor": bool(self.value("custom_processor", False)),
            "notes": notes,
            "todos": self.todos(),
        }

    def summary(self) -> str:
        """One line for the generated module's docstring."""
        decoder = self.value("decoder_architecture", "unknown decoder")
        return f"{self.value('model_class', self.model_type)} ({self.model_type}): {decoder} decoder."

    def to_markdown(self) -> str:
        """The report as Markdown: source, one row per question with evidence, timings, open items."""
        lines = [
            f"# Research report: `{self.source.given}`",
            "",
            f"- source: {self.source.description}",
            f"- model_type: `{self.model_type}`; transformers {self.transformers_version}",
        ]
        if self.timings:
            timing = ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items())
            lines.append(f"- time: {timing}")
        if self.peak_rss_mb is not None:
            lines.append(f"- peak RSS of the process: {self.peak_rss_mb:.0f} MiB")
        lines += ["", "| question | answer | status | evidence |", "|---|---|---|---|"]
        for answer in self.answers.values():
            value = _format_value(answer.value)
            evidence = answer.evidence.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {answer.question} | {value} | {answer.status} | {evidence} |")
        open_items = self.needs_edit
        lines += ["", f"## Needs a hand edit ({len(open_items)})", ""]
        lines += [f"- **{a.question}** ({a.status}): {a.evidence}" for a in open_items] or ["- nothing"]
        lines += ["", "Statuses: " + "; ".join(f"`{k}` = {v}" for k, v in STATUS_HELP.items()), ""]
        return "\n".join(lines)


def _format_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value) or "—"
    text = str(value).replace("|", "\\|").replace("\n", "\\n")
    return f"`{text}`"


# ------------------------------------------------------------------------------------------------ naming
def default_family_name(model_type: str) -> str:
    """A registry id from a model_type: lowercase, non-identifier characters -> ``_`` (``blip-2`` -> ``blip_2``)."""
    name = re.sub(r"\W", "_", model_type.lower())
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = f"family_{name}"
    return name


def default_adapter_class(name: str, model_class: str, model_type: str) -> str:
    """``<Prefix>Adapter``: the model class's prefix when the family is named after its model_type
    (``Qwen2_5_VLForConditionalGeneration`` -> ``Qwen2_5_VLAdapter``), else CamelCase of the name."""
    prefix = re.sub(r"For[A-Z]\w*$", "", model_class) if model_class else ""
    if name != default_family_name(model_type) or not prefix.isidentifier():
        prefix = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Family"
    return f"{prefix}Adapter"


# ------------------------------------------------------------------------------------------- resolution
@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Force transformers / huggingface_hub offline for the block (belt and braces with local_files_only)."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet() -> contextlib.AbstractContextManager[Any]:
    """Silence transformers' and Python's warnings while probing (they are not the user's problem)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    stack.callback(transformers.logging.set_verbosity, verbosity)
    return stack


def _is_hub_id(source: str) -> bool:
    """``org/name`` (exactly one slash, no path prefix) is a hub id; anything else with a slash is a path."""
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and not source.endswith("/")


def _load_local_config(directory: Path, trust_remote_code: bool) -> PretrainedConfig:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raw = _config_json(directory)
        model_type = raw.get("model_type") if raw is not None else None
        if raw is not None and raw.get("auto_map") and not trust_remote_code:
            raise ScaffoldError(
                f"{directory} needs custom code from the checkpoint (its config.json has an auto_map). "
                "vlmforge never runs remote code unless you pass --trust-remote-code; read that code first."
            ) from error
        if raw is None or not model_type:
            raise ScaffoldError(
                f"{directory / 'config.json'} is not a readable JSON config with a model_type; point at a "
                "Hugging Face checkpoint directory"
            ) from error
        if model_type not in CONFIG_MAPPING:
            raise _unknown_model_type_error(str(directory), model_type, error) from error
        raise ScaffoldError(
            f"transformers {transformers.__version__} cannot load {directory / 'config.json'} "
            f"({type(error).__name__}: {error}); check the file"
        ) from error


def _config_json(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _unknown_model_type_error(source: str, model_type: str | None, error: Exception) -> ScaffoldError:
    return ScaffoldError(
        f"{source!r} has model_type {model_type!r}, which the installed transformers "
        f"{transformers.__version__} does not know ({type(error).__name__}). Install a transformers release that "
        "has this architecture (check its model documentation for the first version), or pass "
        "--trust-remote-code if the checkpoint ships its own modelling code."
    )


def resolve_source(source: str, *, trust_remote_code: bool = False) -> ResolvedSource:
    """Resolve a hub id / local dir / stored reference id / model_type to a config, offline.

    Order: an existing directory; an ``org/name`` id (local HF cache first, then the stored reference
    configs of :mod:`vlmforge.harness.tiny`); otherwise a bare ``model_type``.

    Raises:
        ScaffoldError: not found offline, not a directory with a config.json, or an unknown model_type.
    """
    from vlmforge.harness.tiny import load_reference_config, reference_checkpoints

    source = source.strip()
    if not source:
        raise ScaffoldError("give a hub id, a local checkpoint directory or a model_type to scaffold")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ScaffoldError(
                f"{source!r} is a directory without a config.json. Point at a checkpoint directory (the "
                "folder with config.json and, ideally, the tokenizer / processor files)."
            )
        with offline(), _quiet():
            config = _load_local_config(path, trust_remote_code)
        return ResolvedSource(
            source, "local_dir", config, None, path.resolve(), f"local checkpoint directory {path.resolve()}"
        )
    if path.exists():
        raise ScaffoldError(
            f"{source!r} is a file, not a checkpoint directory; point at the folder with config.json"
        )
    if "/" in source:
        if not _is_hub_id(source):
            raise ScaffoldError(
                f"{source!r} looks like a path, but no such directory exists; point at a checkpoint directory"
            )
        cached = _cached_hub_config(source, trust_remote_code)
        if cached is not None:
            config, files_dir = cached
            return ResolvedSource(
                source, "hub_cache", config, source, files_dir, f"hub id {source} from the local HF cache"
            )
        if source in reference_checkpoints():
            return ResolvedSource(
                source,
                "reference",
                load_reference_config(source),
                source,
                None,
                f"stored reference config of {source} (vlmforge.harness.tiny)",
            )
        raise ScaffoldError(
            f"{source!r} is not in the local Hugging Face cache and vlmforge works offline, so it cannot be "
            "downloaded. Download the checkpoint elsewhere (at least config.json plus the tokenizer / "
            "processor files) and pass its local directory instead, e.g. "
            f"`scaffold-new-model /path/to/{source.split('/')[-1]}`, or pass the architecture's model_type. "
            f"Stored reference configs: {', '.join(reference_checkpoints())}."
        )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if source not in CONFIG_MAPPING:
        near = [t for t in CONFIG_MAPPING if source.replace("-", "_") == t.replace("-", "_")]
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ScaffoldError(
            f"{source!r} is neither an existing directory, an org/name hub id, nor a model_type known to the "
            f"installed transformers {transformers.__version__}.{hint} If it is a new architecture, install a "
            "transformers release that has it; if it is a checkpoint, pass its local directory."
        )
    with _quiet():
        try:
            config = AutoConfig.for_model(source)
        except Exception as error:  # a broken default config is transformers' problem; report it plainly
            raise ScaffoldError(
                f"transformers {transformers.__version__} cannot build a default config for model_type "
                f"{source!r} ({type(error).__name__}: {error}). Pass a checkpoint directory instead."
            ) from error
    return ResolvedSource(
        source, "model_type", config, None, None, f"transformers' default config for `{source}`"
    )


def _cached_hub_config(hub_id: str, trust_remote_code: bool) -> tuple[PretrainedConfig, Path] | None:
    """The config of ``hub_id`` if its config.json is in the local HF cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        cached = try_to_load_from_cache(hub_id, "config.json")
    except Exception:  # invalid repo id syntax and the like: "not cached"
        return None
    if not isinstance(cached, str) or not Path(cached).is_file():
        return None
    with offline(), _quiet():
        config = _load_local_config(Path(cached).parent, trust_remote_code)
    return config, Path(cached).parent


# ------------------------------------------------------------------------------------ model class + meta
def _image_text_classes() -> dict[str, str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return dict(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def _model_class(
    resolved: ResolvedSource, report: ResearchReport, trust_remote_code: bool
) -> type[nn.Module]:
    """Pick the generation class and refuse what is not an image+text decoder VLM."""
    config = resolved.config
    model_type = config.model_type
    mapping = _image_text_classes()
    if config.is_encoder_decoder or getattr(config.get_text_config(), "is_encoder_decoder", False):
        raise ScaffoldError(
            f"{resolved.given!r} ({model_type}) is an encoder-decoder model: its text is produced by a decoder "
            "that cross-attends to a separate encoder, so there is no single decoder-only residual stream "
            "for vlmforge's hooks (resid_pre/post, attention patterns over the prompt). vlmforge supports "
            "image+text decoder VLMs (LLaVA, Qwen-VL, Idefics/SmolVLM style)."
        )
    architectures = [a for a in (config.architectures or []) if a]
    vlm_classes = set(mapping.values())
    for name in architectures:
        cls = getattr(transformers, name, None)
        if cls is not None and (name in vlm_classes or model_type in mapping):
            report.add(
                Answer("model_class", "HF model class", name, f"config.architectures = {architectures}")
            )
            return cls
    if model_type in mapping:
        name = mapping[model_type]
        cls = getattr(transformers, name, None)
        if cls is not None:
            evidence = f"transformers' image-text-to-text auto mapping: {model_type!r} -> {name}"
            if architectures:
                evidence += f" (config.architectures {architectures} is not a transformers class)"
            report.add(Answer("model_class", "HF model class", name, evidence))
            return cls
    auto_map = getattr(config, "auto_map", None) or {}
    remote = auto_map.get("AutoModelForImageTextToText") or auto_map.get("AutoModelForVision2Seq")
    if remote and trust_remote_code and resolved.files_dir is not None:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        cls = get_class_from_dynamic_module(remote, str(resolved.files_dir))
        report.add(
            Answer(
                "model_class",
                "HF model class",
                cls.__name__,
                f"remote code {remote} (config.auto_map); the registry needs the class in transformers",
                "hand_edit",
            )
        )
        return cls
    has_vision = any(
        isinstance(getattr(config, key, None), PretrainedConfig) and "vision" in key
        for key in config.to_dict()
    )
    reason = (
        "it has a vision sub-config, but transformers maps its model_type to no image-text-to-text class"
        if has_vision
        else "its config has no vision tower and transformers maps it to no image-text-to-text class "
        "(a text-only language model)"
    )
    raise ScaffoldError(
        f"{resolved.given!r} (model_type {model_type!r}, {type(config).__name__}) is not an image+text decoder "
        f"VLM: {reason}. vlmforge adds vision-language models whose decoder reads image tokens; for a "
        "text-only model use a text interpretability library instead, or point at the VLM checkpoint built "
        "on it."
    )


def build_meta_model(cls: type[nn.Module], config: PretrainedConfig) -> nn.Module:
    """Instantiate ``cls`` on the meta device: the full module tree with no storage behind any weight."""
    with _quiet(), torch.device("meta"):
        try:
            return cls._from_config(config)
        except Exception as error:
            raise ScaffoldError(
                f"transformers {transformers.__version__} cannot build {cls.__name__} from this config "
                f"({type(error).__name__}: {error}). If this is transformers' default config for the "
                "model_type, pass a real checkpoint directory (or stored reference id) instead."
            ) from error


class _PerLayer:
    """Marker for a config value that differs per layer (transformers' heterogeneous configs)."""

    def __repr__(self) -> str:
        return "<per-layer>"


PER_LAYER = _PerLayer()


def config_value(config: Any, name: str, default: Any = None) -> Any:
    """``getattr(config, name, default)`` that survives heterogeneous configs.

    transformers 5 raises on reading a global attribute (``head_dim``) that differs per layer; that is
    an answer in itself (the adapter reads one global value), so it is returned as :data:`PER_LAYER`.
    """
    try:
        return getattr(config, name, default)
    except AttributeError:
        return default
    except Exception:  # AmbiguousGlobalPerLayerAttributeError and friends
        return PER_LAYER


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _module_paths(root: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in root.named_modules()}


def _describe(module: nn.Module) -> str:
    return type(module).__name__


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
    )


def _attention_child(layer: nn.Module) -> str | None:
    """The token-mixing child of a block: conventional names, else an ``*attn*`` / ``*Attention*`` child."""
    children = dict(layer.named_children())
    for name in _ATTENTION_NAMES:
        if name in children:
            return name
    matches = [
        n
        for n, c in children.items()
        if not _is_norm(c)
        and ("attention" in type(c).__name__.lower() or "attn" in n.lower() or "attention" in n.lower())
    ]
    return matches[0] if len(matches) == 1 else None


def _mlp_child(layer: nn.Module) -> str | None:
    children = dict(layer.named_children())
    for name in _MLP_NAMES:
        if name in children:
            return name
    matches = [
        n
        for n, c in children.items()
        if any(tag in type(c).__name__.lower() for tag in ("mlp", "feedforward", "moe", "experts"))
    ]
    return matches[0] if len(matches) == 1 else None


@dataclass(frozen=True)
class _Decoder:
    path: str
    module: nn.Module
    layers_attr: str
    layers: nn.ModuleList


def _block_lists(root: nn.Module, prefix: str = "") -> list[_Decoder]:
    """Every module under ``root`` owning a non-empty ModuleList of blocks (modules with children)."""
    found = []
    for path, module in root.named_modules():
        for child_name, child in module.named_children():
            if (
                isinstance(child, nn.ModuleList)
                and len(child)
                and all(any(True for _ in b.children()) for b in child)
            ):
                full = ".".join(p for p in (prefix, path) if p)
                found.append(_Decoder(full, module, child_name, child))
    return found


def _final_norm(decoder: _Decoder) -> tuple[str | None, str]:
    """The norm the decoder applies after its layer loop, read from ``forward``; else by name."""
    cls = type(decoder.module)
    norms = {n: c for n, c in decoder.module.named_children() if _is_norm(c)}
    with contextlib.suppress(OSError, TypeError, SyntaxError):
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
        loops = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.For)
            and any(
                isinstance(sub, ast.Attribute) and sub.attr == decoder.layers_attr
                for sub in ast.walk(node.iter)
            )
        ]
        if loops:
            end = max(getattr(loop, "end_lineno", loop.lineno) or loop.lineno for loop in loops)
            after = [
                node.func.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
                and node.func.attr in norms
                and node.lineno > end
            ]
            if len(set(after)) == 1:
                return after[
                    0
                ], f"{cls.__name__}.forward applies self.{after[0]} ({_describe(norms[after[0]])}) "
            return None, (
                f"unknown: {cls.__name__}.forward applies {sorted(set(after)) or 'no norm'} after its loop over "
                f"self.{decoder.layers_attr} (norm children: {sorted(norms) or 'none'})"
            )
    final = next((n for n in _FINAL_NORM_NAMES if n in norms), None)
    if final is None:
        return (
            None,
            f"unknown: no source for {cls.__name__}.forward and norm children {sorted(norms) or 'none'}",
        )
    return (
        final,
        f"{cls.__name__}.{final} is a {_describe(norms[final])} (by name; forward source unavailable)",
    )


# ------------------------------------------------------------------------------------- structure research
def _research_structure(
    model: nn.Module, config: PretrainedConfig, report: ResearchReport
) -> _Decoder | None:
    """language_model, layers, final norm, lm_head, decoder architecture."""
    text_config = config.get_text_config(decoder=True)
    expected = config_value(text_config, "num_hidden_layers")
    paths = _module_paths(model)
    by_api = None
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        with contextlib.suppress(Exception):
            by_api = get_decoder()
    everything = _block_lists(model)
    listing = ", ".join(f"{c.path or '<root>'}.{c.layers_attr} ({len(c.layers)})" for c in everything)
    # Narrow down: inside what get_decoder() returns (it may be a *ForCausalLM wrapping the decoder), then
    # owned by the module whose .config is the text config, then the layer count of the text config.
    chosen: list[_Decoder] = []
    how = ""
    if isinstance(by_api, nn.Module) and id(by_api) in paths:
        chosen = _block_lists(by_api, paths[id(by_api)])
        how = f"it is the block list inside model.get_decoder() (model.{paths[id(by_api)]})"
    if len(chosen) != 1:
        chosen = [c for c in everything if getattr(c.module, "config", None) is text_config]
        how = "its owner's .config is the text config"
    if len(chosen) != 1:
        chosen = [
            c for c in everything if len(c.layers) == expected and any(map(_is_norm, c.module.children()))
        ]
        how = f"its length matches text_config.num_hidden_layers = {expected} and its owner has a norm"
    if len(chosen) != 1:
        report.add(
            Answer(
                "language_model",
                "Dotted path to the decoder that owns .layers",
                None,
                f"unknown: {len(chosen)} block lists qualify as the text decoder's among [{listing or 'none'}]",
                "unknown",
            )
        )
        return None
    decoder = chosen[0]
    layer_classes = Counter(type(layer).__name__ for layer in decoder.layers)
    layer_desc = ", ".join(f"{n} {cls}" for cls, n in layer_classes.items())
    report.add(
        Answer(
            "language_model",
            "Dotted path to the decoder that owns .layers",
            decoder.path,
            f"model.{decoder.path}.{decoder.layers_attr} is a ModuleList of {layer_desc}; chosen because {how} "
            f"(block lists found: {listing})",
        )
    )
    uniform = len(layer_classes) == 1
    report.add(
        Answer(
            "layers",
            "Decoder layer list attribute",
            decoder.layers_attr,
            f"{type(decoder.module).__name__}.{decoder.layers_attr}"
            + (
                ""
                if uniform
                else f"; layers are not uniform ({layer_desc}): per-layer hooks need a hand check"
            ),
            "found" if uniform else "hand_edit",
        )
    )
    final, evidence = _final_norm(decoder)
    report.add(Answer("final_norm", "Final norm attribute", final, evidence, "found" if final else "unknown"))
    # lm_head: the output embeddings, located by identity in the module tree.
    head = None
    get_output = getattr(model, "get_output_embeddings", None)
    if callable(get_output):
        with contextlib.suppress(Exception):
            head = get_output()
    head_path = _module_paths(model).get(id(head)) if head is not None else None
    report.add(
        Answer(
            "lm_head",
            "Unembedding (lm_head) path",
            head_path,
            f"model.get_output_embeddings() is model.{head_path} ({_describe(head)})"
            if head_path
            else "unknown: model.get_output_embeddings() returned nothing in the module tree",
            "found" if head_path else "unknown",
        )
    )
    text_type = config_value(text_config, "model_type", "?")
    report.add(
        Answer(
            "decoder_architecture",
            "LLM architecture the decoder is based on",
            f"{type(decoder.module).__name__} ({text_type})",
            f"decoder class {type(decoder.module).__module__}.{type(decoder.module).__name__}; "
            f"text config {type(text_config).__name__} (model_type {text_type!r})",
        )
    )
    return decoder


def _research_blocks(decoder: _Decoder, text_config: PretrainedConfig, report: ResearchReport) -> None:
    """Attention / MLP attribute names, projections, rotary, norms, scaling, GQA, head_dim, windows."""
    layers = list(decoder.layers)
    attention_names = Counter(_attention_child(layer) for layer in layers)
    # In a hybrid decoder analyse the softmax attention (the one with a query projection): it is what
    # attention patterns and the score recomputation are about.
    softmax = [
        n
        for n in attention_names
        if n
        and any(
            _find_projection(dict(getattr(l, n).named_children()), "q_proj") for l in layers if hasattr(l, n)
        )
    ]
    attention_name = max(softmax or list(attention_names), key=lambda n: attention_names[n])
    uniform = len(attention_names) == 1 and attention_name is not None
    first = next((layer for layer in layers if attention_name and hasattr(layer, attention_name)), layers[0])
    attn = getattr(first, attention_name) if attention_name else None
    report.add(
        Answer(
            "attention",
            "Attention module attribute (and class)",
            attention_name,
            (
                f"layers[{layers.index(first)}].{attention_name} is {type(attn).__module__}.{type(attn).__name__}"
                if attn is not None
                else "unknown: no attention child in the decoder layers"
            )
            + ("" if uniform else f"; differs across layers: {dict(attention_names)} (hybrid decoder)"),
            "found" if uniform else ("hand_edit" if attention_name else "unknown"),
            slot="attention",
        )
    )
    mlp_names = Counter(_mlp_child(layer) for layer in layers)
    mlp_name = mlp_names.most_common(1)[0][0]
    mlp = getattr(layers[0], mlp_name) if mlp_name else None
    report.add(
        Answer(
            "mlp",
            "MLP module attribute",
            mlp_name,
            f"layers[0].{mlp_name} is {_describe(mlp)}"
            if mlp is not None
            else "unknown: no MLP child in layers[0]",
            "found" if mlp is not None and len(mlp_names) == 1 else "unknown",
        )
    )
    hidden = _int(config_value(text_config, "hidden_size"))
    heads = _int(config_value(text_config, "num_attention_heads"))
    kv_heads = _int(config_value(text_config, "num_key_value_heads")) or heads
    raw_head_dim = config_value(text_config, "head_dim")
    explicit_head_dim = _int(raw_head_dim)
    head_dim = explicit_head_dim or (hidden // heads if hidden and heads else None)
    per_layer = [
        key
        for key in (
            "hidden_size",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
        )
        if config_value(text_config, key) is PER_LAYER
    ]
    if per_layer:
        report.add(
            Answer(
                "per_layer_config",
                "Config values that differ per layer",
                per_layer,
                f"{type(text_config).__name__} is heterogeneous: {per_layer} differ per layer, but the adapter "
                "reads one global value for head counts / head_dim",
                "hand_edit",
                slot="layers",
            )
        )
    if attn is not None:
        _research_attention(attn, layers, attention_name, text_config, head_dim, heads, kv_heads, report)
    if mlp is not None:
        _research_mlp(mlp, hidden, report)
    # Head geometry the adapter derives from the config (lm_head_dim / lm_num_kv_heads).
    groups = getattr(attn, "num_key_value_groups", None)
    report.add(
        Answer(
            "gqa",
            "Grouped-query attention",
            f"{heads} heads / {kv_heads} kv heads",
            f"text config num_attention_heads={heads}, num_key_value_heads={kv_heads}; "
            f"{type(attn).__name__}.num_key_value_groups = {groups}",
        )
    )
    attn_head_dim = getattr(attn, "head_dim", None)
    consistent = attn_head_dim is None or attn_head_dim == head_dim
    report.add(
        Answer(
            "head_dim",
            "Head dim (explicit or hidden/heads)",
            head_dim,
            (
                f"text config head_dim = {explicit_head_dim} (explicit; hidden/heads = {hidden // heads})"
                if explicit_head_dim and hidden and heads
                else f"hidden_size / num_attention_heads = {hidden} / {heads}"
            )
            + (
                f"; attention.head_dim = {attn_head_dim}"
                if consistent
                else f"; but attention.head_dim = {attn_head_dim}: the adapter's lm_head_dim would be wrong"
            ),
            "found" if consistent else "hand_edit",
            slot="attention_recipe",
        )
    )
    window = config_value(text_config, "sliding_window")
    layer_types = config_value(text_config, "layer_types")
    type_counts = Counter(layer_types or [])
    layer_windows = Counter(
        getattr(getattr(layer, attention_name, None), "sliding_window", None) for layer in layers
    )
    unsupported = sorted(t for t in type_counts if t not in ("full_attention", "sliding_attention"))
    evidence = f"text config sliding_window = {window}; layer_types = {dict(type_counts) or None}; "
    evidence += f"attention.sliding_window per layer: {dict(layer_windows)}"
    if unsupported:
        evidence += (
            f"; layer types {unsupported} are not softmax attention: hooks/attention recomputation need care"
        )
    else:
        evidence += " (the adapter masks each layer with its module's sliding_window)"
    report.add(
        Answer(
            "sliding_window",
            "Sliding windows / layer types",
            dict(type_counts) or window,
            evidence,
            "hand_edit" if unsupported else "found",
            slot="layers",
        )
    )


def _find_projection(children: Mapping[str, nn.Module], role: str) -> str | None:
    for name in _PROJECTION_NAMES[role]:
        if name in children and _is_linear(children[name]):
            return name
    return None


def _research_attention(
    attn: nn.Module,
    layers: list[nn.Module],
    attention_name: str,
    text_config: PretrainedConfig,
    head_dim: int | None,
    heads: int | None,
    kv_heads: int | None,
    report: ResearchReport,
) -> None:
    children = dict(attn.named_children())
    linears = {n: c for n, c in children.items() if _is_linear(c)}
    shapes = ", ".join(f"{n} {c.in_features}->{c.out_features}" for n, c in linears.items())
    fused = [n for n in linears if _FUSED_QKV.match(n)]
    names = {role: _find_projection(children, role) for role in _PROJECTION_NAMES}
    if names["o_proj"] is None and heads and head_dim:
        # The output projection maps heads*head_dim back to hidden; find it by shape when the name is unusual.
        hidden = _int(config_value(text_config, "hidden_size"))
        by_shape = [
            n
            for n, c in linears.items()
            if c.in_features == heads * head_dim and c.out_features == hidden and n not in names.values()
        ]
        names["o_proj"] = by_shape[0] if len(by_shape) == 1 else None
    for role in ("q_proj", "k_proj", "v_proj", "o_proj"):
        name = names[role]
        status: Status = "found"
        if name is not None:
            module = linears[name]
            evidence = f"{type(attn).__name__}.{name}: Linear {module.in_features} -> {module.out_features}"
            expected = {"q_proj": heads, "k_proj": kv_heads, "v_proj": kv_heads}.get(role)
            if expected and head_dim and module.out_features != expected * head_dim:
                status = "hand_edit"
                gated = role == "q_proj" and module.out_features == 2 * expected * head_dim
                evidence += (
                    f"; out dim {module.out_features} = 2 x heads x head_dim: the query projection is gated "
                    "(half of it gates the output), the generic view(B, L, heads, head_dim) is wrong"
                    if gated
                    else f"; out dim != {expected} heads x {head_dim} head_dim: the generic head split is wrong"
                )
        elif fused:
            status = "hand_edit"
            evidence = (
                f"{type(attn).__name__} has no separate {role} but a fused {fused[0]} "
                f"({shapes}): q/k/v hooks and score recomputation need a split by hand"
            )
        else:
            status = "unknown"
            evidence = f"unknown: no {role} among the attention's linear children ({shapes or 'none'})"
        default_name = getattr(ModulePaths, role)
        report.add(
            Answer(
                role,
                f"Attention {role.replace('_proj', '')} projection",
                name or (default_name if status != "unknown" else None),
                evidence,
                status,
            )
        )
    norms = [n for n, c in children.items() if _is_norm(c)]
    analysis = analyze_forward(
        type(attn), q_proj=names["q_proj"], k_proj=names["k_proj"], norm_attributes=norms
    )
    _research_rotary(analysis, attn, layers, attention_name, text_config, report)
    _research_qk_norms(analysis, attn, norms, head_dim, report)
    _research_scaling(analysis, attn, head_dim, report)
    _research_attention_extras(analysis, attn, report)


def _research_rotary(
    analysis: ForwardAnalysis,
    attn: nn.Module,
    layers: list[nn.Module],
    attention_name: str,
    text_config: PretrainedConfig,
    report: ResearchReport,
) -> None:
    question = "Rotary function the attention calls"
    cls = type(attn).__name__
    has_rope = any(
        config_value(text_config, key) for key in ("rope_parameters", "rope_scaling", "rope_theta")
    )
    if not analysis.source_available:
        report.add(
            Answer("rotary_function", question, None, f"unknown: no source for {cls}.forward", "unknown")
        )
        return
    calls = {call.dotted_path: call for call in analysis.rotary_calls}
    if not calls:
        status: Status = "unknown" if has_rope else "found"
        evidence = (
            f"unknown: {cls}.forward calls no *rotary*/*rope* function although the text config has RoPE "
            "parameters; find where RoPE is applied"
            if has_rope
            else f"{cls}.forward calls no rotary function and the text config has no RoPE parameters"
        )
        report.add(Answer("rotary_function", question, None, evidence, status))
        return
    if len(calls) > 1:
        report.add(
            Answer(
                "rotary_function",
                question,
                None,
                f"unknown: {cls}.forward calls several rotary functions: {sorted(calls)}",
                "unknown",
            )
        )
        return
    call = next(iter(calls.values()))
    evidence = f"{cls}.forward calls {call.source}"
    if call.defined_in != analysis.module:
        evidence += f" (imported from {call.defined_in})"
    status = "found"
    value: str | None = call.dotted_path
    # The generic adapter calls rotary(q, k, cos, sin) on [B, H, L, d_h] tensors; anything else is a hand edit.
    signature = inspect.signature(call.function)
    required = [
        p
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    extra_keywords = [k for k in call.keywords if k not in ("unsqueeze_dim", "position_ids")]
    if call.positional_args != 4 or len(required) > 4 or extra_keywords:
        status = "hand_edit"
        evidence += (
            f"; signature {call.name}{signature} / call with {call.positional_args} positional args "
            f"{extra_keywords or ''} differs from the adapter's rotary(q, k, cos, sin)"
        )
    if call.conditions:
        outcomes = []
        for module in (getattr(layer, attention_name) for layer in layers if hasattr(layer, attention_name)):
            results = [evaluate_condition(node, module) for node in call.condition_nodes]
            outcomes.append(None if None in results else all(results))
        condition = " and ".join(call.conditions)
        if None in outcomes:
            status = "hand_edit"
            evidence += f"; applied only if `{condition}`, which depends on runtime values: check by hand"
        elif all(outcomes):
            evidence += (
                f"; applied under `{condition}`, which holds on all {len(layers)} layers of this config"
            )
        elif not any(outcomes):
            value = None
            evidence += f"; but `{condition}` is false on every layer of this config, so no rotary is applied"
        else:
            status = "hand_edit"
            applied = [i for i, o in enumerate(outcomes) if o]
            evidence += (
                f"; applied only where `{condition}` holds (layers {applied}); the adapter applies one "
                "rotary recipe to every layer"
            )
    report.add(Answer("rotary_function", question, value, evidence, status))


def _research_qk_norms(
    analysis: ForwardAnalysis, attn: nn.Module, norms: list[str], head_dim: int | None, report: ResearchReport
) -> None:
    cls = type(attn).__name__
    for role, variable in (("q_norm", analysis.query_var), ("k_norm", analysis.key_var)):
        question = f"Per-head {role.replace('_', ' ')} before RoPE"
        applied = [call for call in analysis.norm_calls if variable and call.variable == variable]
        if not applied:
            evidence = f"{cls}.forward applies no norm to {variable or role[0]}"
            if norms:
                evidence += f" (norm children {norms} are not applied to it)"
            report.add(Answer(role, question, None, evidence))
            continue
        call = applied[0]
        norm = getattr(attn, call.attribute)
        weight = getattr(norm, "weight", None)
        width = weight.shape[-1] if isinstance(weight, torch.Tensor) and weight.dim() else None
        evidence = (
            f"{cls}.forward applies self.{call.attribute} ({_describe(norm)}, width {width}) to {variable}"
        )
        status: Status = "found"
        if len(applied) > 1:
            status = "hand_edit"
            evidence += f"; several norms apply to it: {[c.attribute for c in applied]}"
        if analysis.rotary_line is not None and call.line > analysis.rotary_line:
            status, evidence = (
                "hand_edit",
                evidence + "; but after RoPE (the adapter applies norms before RoPE)",
            )
        if width is not None and head_dim and width != head_dim:
            status = "hand_edit"
            evidence += (
                f"; normalises {width} features, not one head ({head_dim}): the adapter norms per head"
            )
        if call.conditions:
            condition = " and ".join(call.conditions)
            results = [evaluate_condition(node, attn) for node in call.condition_nodes]
            if None in results:
                status, evidence = "hand_edit", evidence + f"; only if `{condition}` (a runtime value)"
            elif not all(results):
                report.add(Answer(role, question, None, evidence + f"; but `{condition}` is false here"))
                continue
            else:
                evidence += f"; under `{condition}`, which holds here"
        report.add(Answer(role, question, call.attribute, evidence, status, slot=role))


def _research_scaling(
    analysis: ForwardAnalysis, attn: nn.Module, head_dim: int | None, report: ResearchReport
) -> None:
    cls = type(attn).__name__
    question = "Softmax scale attribute"
    name = analysis.scaling_attribute
    if name is None and isinstance(getattr(attn, "scaling", None), int | float):
        name = "scaling"
    value = getattr(attn, name, None) if name else None
    if name and isinstance(value, int | float):
        default = head_dim**-0.5 if head_dim else None
        relation = (
            "= head_dim**-0.5" if default and abs(value - default) < 1e-9 else f"(head_dim**-0.5 = {default})"
        )
        source = "passed as scaling=self." + name if analysis.scaling_attribute else "attribute"
        report.add(Answer("scaling", question, name, f"{cls}.{name} = {value:.6g} {relation}; {source}"))
        return
    report.add(
        Answer(
            "scaling",
            question,
            None,
            f"unknown: {cls} passes no scaling=self.<attr> to its attention kernel and has no numeric "
            "`scaling`; the adapter would fall back to head_dim**-0.5",
            "unknown",
        )
    )


def _research_attention_extras(analysis: ForwardAnalysis, attn: nn.Module, report: ResearchReport) -> None:
    """Anything in the score computation beyond the recipe: softcapping, sinks, unknown q/k transforms."""
    cls = type(attn).__name__
    problems: list[str] = []
    softcap = analysis.kernel_keywords.get("softcap")
    softcap_value = getattr(attn, "attn_logit_softcapping", None)
    if softcap_value is not None or (softcap and softcap not in ("None",)):
        problems.append(f"logit softcapping (softcap={softcap}, attn_logit_softcapping={softcap_value})")
    for key in ("sinks", "s_aux"):
        if key in analysis.kernel_keywords:
            problems.append(f"attention sinks ({key}={analysis.kernel_keywords[key]})")
    problems += [f"unrecognized q/k transformation `{line}`" for line in analysis.unrecognized]
    if not analysis.source_available:
        problems.append(f"no source for {cls}.forward")
    report.add(
        Answer(
            "attention_extras",
            "Score computation beyond project/norm/RoPE/GQA/scale",
            "; ".join(problems) or "none",
            (f"{cls}.forward: " + "; ".join(problems) + ": compute_attention_scores needs an override")
            if problems
            else f"{cls}.forward does nothing to q/k beyond the generic recipe "
            f"(kernel keywords: {sorted(analysis.kernel_keywords)})",
            "hand_edit" if problems else "found",
            slot="attention_recipe",
        )
    )


def _research_mlp(mlp: nn.Module, hidden: int | None, report: ResearchReport) -> None:
    cls = _describe(mlp)
    children = dict(mlp.named_children())
    linears = {n: c for n, c in children.items() if _is_linear(c)}
    shapes = ", ".join(f"{n} {c.in_features}->{c.out_features}" for n, c in linears.items()) or "none"
    if "experts" in children or not linears:
        for role in ("gate_proj", "up_proj", "down_proj"):
            report.add(
                Answer(
                    role,
                    f"MLP {role.replace('_proj', '')} projection",
                    None,
                    f"{cls} is a mixture of experts or has no linear children ({sorted(children)}): per-expert "
                    "projections do not fit ModulePaths",
                    "hand_edit",
                )
            )
        return
    downs = [n for n, c in linears.items() if c.out_features == hidden]
    ins = [n for n, c in linears.items() if c.in_features == hidden]
    down = downs[0] if len(downs) == 1 else None
    gate = next((n for n in ins if "gate" in n), None)
    ups = [n for n in ins if n != gate]
    up = ups[0] if len(ups) == 1 else None
    role_evidence = ""
    if gate is None and len(ins) == 2:
        # Unconventional names (w1 / w3): the forward source says which one goes through the activation.
        gate, up, role_evidence = gated_mlp_roles(type(mlp), ins)
        ups = [up] if up else ins
    fused = gate is not None and up is None and linears[gate].out_features > 0 and len(ins) == 1
    for role, name in (("gate_proj", gate), ("up_proj", up), ("down_proj", down)):
        question = f"MLP {role.replace('_proj', '')} projection"
        if fused and role in ("gate_proj", "up_proj"):
            report.add(
                Answer(
                    role,
                    question,
                    name if role == "gate_proj" else None,
                    f"{cls}.{gate} fuses gate and up ({shapes}): split it by hand",
                    "hand_edit",
                )
            )
            continue
        if name is not None:
            module = linears[name]
            report.add(
                Answer(
                    role,
                    question,
                    name,
                    f"{cls}.{name}: Linear {module.in_features} -> {module.out_features}"
                    + (f"; {role_evidence}" if role_evidence and role != "down_proj" else ""),
                )
            )
        elif role == "gate_proj" and up is not None:
            report.add(Answer(role, question, None, f"{cls} is not gated: linear children {shapes}"))
        else:
            why = f"; {role_evidence}" if role_evidence else ""
            report.add(
                Answer(
                    role, question, None, f"unknown: cannot tell {role} from {cls}'s {shapes}{why}", "unknown"
                )
            )


# ----------------------------------------------------------------------------------------- image token
def _research_image_token(
    config: PretrainedConfig, processor: Any, provenance: str, trusted: bool, report: ResearchReport
) -> None:
    """Config attribute holding the image token id, and the token string.

    ``trusted`` says whether the processor's tokenizer is the family's real one (a checkpoint's files or
    stored tokenizer facts); a stand-in tokenizer's token string is only accepted when it is the
    processor class's own ``image_token`` default, i.e. transformers itself says so.
    """
    text_config = config.get_text_config(decoder=True)
    attribute, value, evidence = None, None, ""
    for owner, cfg in (("config", config), ("text config", text_config)):
        if _int(config_value(cfg, "image_token_id")) is not None:
            mapped = getattr(cfg, "attribute_map", {}).get("image_token_id")
            attribute, value = "image_token_id", cfg.image_token_id
            evidence = f"{owner}.image_token_id = {value}" + (
                f" (attribute_map -> {mapped})" if mapped else ""
            )
            break
    if attribute is None:
        keys = sorted(
            k for k, v in config.to_dict().items() if _IMAGE_TOKEN_KEY.match(k) and isinstance(v, int)
        )
        if len(keys) == 1:
            attribute, value = keys[0], getattr(config, keys[0])
            evidence = f"config.{keys[0]} = {value}"
        else:
            evidence = f"no image_token_id in the config (candidates: {keys or 'none'})"
    token = getattr(processor, "image_token", None) if processor is not None else None
    token = token if isinstance(token, str) and token else None
    token_status: Status = "found"
    if processor is None:
        token_evidence = f"no processor to read the token string from ({provenance})"
    elif token is None:
        token_evidence = f"{type(processor).__name__} has no image_token attribute"
    else:
        token_evidence = f"{type(processor).__name__}.image_token = {token!r} ({provenance})"
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            token_evidence += f", tokenizer id {tokenizer.convert_tokens_to_ids(token)}"
        if not trusted:
            parameter = inspect.signature(type(processor).__init__).parameters.get("image_token")
            class_default = parameter.default if parameter is not None else None
            if token == class_default:
                token_evidence += f"; it is {type(processor).__name__}'s own default"
            else:
                token_evidence = (
                    f"{type(processor).__name__}.image_token comes from the tokenizer, and only a stand-in "
                    f"tokenizer is available ({provenance}, giving {token!r}): pass a checkpoint dir"
                )
                token, token_status = None, "unknown"
    if token is None and token_status == "found":
        token_status = "unknown"
    if token is None and attribute:
        # The adapter reads the id from the config first; the token string is only its fallback.
        token_status, token_evidence = (
            "default",
            token_evidence + "; not needed, the config attribute suffices",
        )
    report.add(
        Answer(
            "image_token_attribute",
            "Image token id: config attribute",
            attribute,
            evidence
            if attribute
            else f"{evidence}; the adapter will look the token string up instead"
            if token
            else f"unknown: {evidence} and no token string",
            "found" if attribute else ("default" if token else "unknown"),
            slot="image_token",
        )
    )
    report.add(
        Answer("image_token", "Image token string", token, token_evidence, token_status, slot="image_token")
    )


# ---------------------------------------------------------------------------------- processor research
def _load_processor(
    resolved: ResolvedSource, trust_remote_code: bool, tiny_processor: Any, tiny_error: str | None
) -> tuple[Any, str]:
    """The real processor from the checkpoint files if present, else the tiny one; and where it came from."""
    if resolved.files_dir is not None:
        has_files = any(
            (resolved.files_dir / name).is_file()
            for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
        )
        if has_files:
            with offline(), _quiet():
                try:
                    processor = transformers.AutoProcessor.from_pretrained(
                        resolved.files_dir, local_files_only=True, trust_remote_code=trust_remote_code
                    )
                    return processor, f"real processor from {resolved.files_dir}"
                except Exception as error:  # fall back to the tiny processor, but say so
                    return tiny_processor, f"tiny processor (loading the real one failed: {error})"
    if tiny_processor is None:
        return None, f"no processor (no processor files with the source; {tiny_error})"
    return tiny_processor, "tiny processor of vlmforge.harness.tiny"


def _research_processor(
    config: PretrainedConfig, processor: Any, provenance: str, report: ResearchReport
) -> None:
    if processor is None:
        report.add(
            Answer(
                "processor_class",
                "Processor / image processor class",
                None,
                "unknown: no processor",
                "unknown",
            )
        )
        report.add(
            Answer(
                "image_resizing",
                "Image preprocessing: fixed or dynamic",
                None,
                "unknown: no processor",
                "unknown",
            )
        )
        return
    image_processor = getattr(processor, "image_processor", None)
    report.add(
        Answer(
            "processor_class",
            "Processor / image processor class",
            f"{type(processor).__name__} / {type(image_processor).__name__ if image_processor else '-'}",
            f"{provenance}; transformers' processor mapping for {config.model_type!r}",
        )
    )
    if image_processor is None:
        report.add(
            Answer(
                "image_resizing",
                "Image preprocessing: fixed or dynamic",
                None,
                "unknown: the processor has no image processor",
                "unknown",
            )
        )
        return
    # Read the *class* defaults: the tiny processor shrinks sizes, but which knobs exist is what matters.
    image_cls = type(image_processor)
    knobs = {
        name: getattr(image_cls, name, getattr(image_processor, name, None))
        for name in _DYNAMIC_RESIZE_ATTRIBUTES
        if getattr(image_cls, name, getattr(image_processor, name, None)) not in (None, False)
    }
    size = getattr(image_cls, "size", None) or getattr(image_processor, "size", None)
    crop = getattr(image_cls, "crop_size", None) if getattr(image_cls, "do_center_crop", False) else None
    if knobs:
        value, evidence = (
            "dynamic",
            f"{image_cls.__name__} has " + ", ".join(f"{k}={v}" for k, v in knobs.items()),
        )
    elif isinstance(size, dict) and "longest_edge" in size and crop is None:
        value = "dynamic"
        evidence = (
            f"{image_cls.__name__} resizes keeping the aspect ratio within size={size} and does not crop"
        )
    elif isinstance(crop, dict) and {"height", "width"} <= crop.keys():
        value, evidence = "fixed", f"{image_cls.__name__} resizes (size={size}) then center-crops to {crop}"
    elif isinstance(size, dict) and {"height", "width"} <= size.keys():
        value, evidence = "fixed", f"{image_cls.__name__}.size = {size}"
    else:
        value, evidence = (
            "unknown",
            f"unknown: {image_cls.__name__}.size = {size} and no dynamic-resolution knob",
        )
    report.add(
        Answer(
            "image_resizing",
            "Image preprocessing: fixed or dynamic",
            value,
            evidence,
            "found" if value != "unknown" else "unknown",
            slot="processor",
        )
    )


def _render(processor: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    with _quiet():
        return processor.apply_chat_template(messages, tokenize=False, **kwargs)


def _inserted(with_image: str, without: str) -> tuple[int, str]:
    """Where ``with_image`` differs from ``without``: (start index, inserted text)."""
    prefix = 0
    while prefix < min(len(with_image), len(without)) and with_image[prefix] == without[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(with_image), len(without)) - prefix
        and with_image[-1 - suffix] == without[-1 - suffix]
    ):
        suffix += 1
    return prefix, with_image[prefix : len(with_image) - suffix]


def _user(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def _research_chat_template(
    processor: Any, provenance: str, stored_template: bool, model_class: type | None, report: ResearchReport
) -> None:
    """image_in_message, image_before_text, continue_final_message: measured on the chat template."""
    from PIL import Image

    template = getattr(processor, "chat_template", None) if processor is not None else None
    q_in, q_order, q_prefill = (
        "Image given inside the message (not a bare placeholder)",
        "Image before text in the user turn",
        "continue_final_message renders an assistant prefill",
    )
    if processor is None:
        reason = f"unknown: {provenance}"
        for key, question in (
            ("image_in_message", q_in),
            ("image_before_text", q_order),
            ("continue_final_message", q_prefill),
        ):
            report.add(Answer(key, question, None, reason, "unknown", slot=key))
        report.add(
            Answer(
                "custom_processor",
                "Family needs a processor subclass",
                None,
                reason,
                "unknown",
                slot="processor",
            )
        )
        return
    if not template:
        reason = f"unknown: {provenance} has no chat template; prompts must be built by a processor subclass"
        for key, question in (
            ("image_in_message", q_in),
            ("image_before_text", q_order),
            ("continue_final_message", q_prefill),
        ):
            report.add(Answer(key, question, None, reason, "unknown"))
        report.add(
            Answer(
                "custom_processor",
                "Family needs a processor subclass",
                True,
                reason,
                "hand_edit",
                slot="processor",
            )
        )
        return
    caveat = (
        ""
        if stored_template
        else (
            " (the tiny processor has no stored copy of this family's real template and uses a generic ChatML one, "
            "so this is NOT evidence about the real template: check with a checkpoint dir)"
        )
    )
    status_measured: Status = "measured" if stored_template else "unknown"
    image = Image.new("RGB", (32, 32))
    text_item = {"type": "text", "text": PROBE_TEXT}
    try:
        bare = _render(processor, _user([text_item]), add_generation_prompt=True)
        placeholder = _render(processor, _user([{"type": "image"}, text_item]), add_generation_prompt=True)
        in_message = _render(
            processor, _user([{"type": "image", "image": image}, text_item]), add_generation_prompt=True
        )
    except Exception as error:
        reason = f"unknown: {provenance}'s chat template failed to render a user turn ({error})"
        for key, question in (("image_in_message", q_in), ("image_before_text", q_order)):
            report.add(Answer(key, question, None, reason, "unknown"))
        in_message = placeholder = bare = ""
    if bare:
        at, marker = _inserted(placeholder, bare)
        if marker:
            report.add(
                Answer(
                    "image_in_message",
                    q_in,
                    False,
                    f"the bare {{'type': 'image'}} placeholder renders {marker!r} ({provenance}){caveat}",
                    status_measured,
                    slot="image_in_message",
                )
            )
        else:
            at, marker = _inserted(in_message, bare)
            report.add(
                Answer(
                    "image_in_message",
                    q_in,
                    bool(marker) or None,
                    f"the bare placeholder renders nothing; with the image inside the item it renders {marker!r}"
                    if marker
                    else f"unknown: the template renders no image marker either way ({provenance})",
                    status_measured if marker else "unknown",
                    slot="image_in_message",
                )
            )
        _research_order(
            processor, image, marker, provenance, caveat, stored_template, model_class, report, q_order
        )
    # continue_final_message: the rendered prompt must end with the prefill (nothing closes the turn).
    prefill_messages = [
        *_user([{"type": "image"}, text_item]),
        {"role": "assistant", "content": [{"type": "text", "text": PROBE_PREFILL}]},
    ]
    try:
        rendered = _render(processor, prefill_messages, continue_final_message=True)
        works = rendered.endswith(PROBE_PREFILL)
        evidence = f"renders ...{rendered[-40:]!r}" + ("" if works else " (does not end with the prefill)")
    except Exception as error:  # transformers raises when it cannot find the final message to continue
        works, evidence = False, f"apply_chat_template(continue_final_message=True) raised {error}"
    report.add(
        Answer(
            "continue_final_message",
            q_prefill,
            works,
            f"{evidence} ({provenance}){caveat}",
            status_measured,
            slot="continue_final_message",
        )
    )


def _research_order(
    processor: Any,
    image: Any,
    marker: str,
    provenance: str,
    caveat: str,
    stored_template: bool,
    model_class: type | None,
    report: ResearchReport,
    question: str,
) -> None:
    """Whether the template fixes the image position; if it follows the content order, ask the docs."""
    in_message = report.value("image_in_message", False)
    item = {"type": "image", "image": image} if in_message else {"type": "image"}
    text_item = {"type": "text", "text": PROBE_TEXT}
    positions = []
    try:
        bare = _render(processor, _user([text_item]), add_generation_prompt=True)
        for content in ([item, text_item], [text_item, item]):
            rendered = _render(processor, _user(content), add_generation_prompt=True)
            at, _ = _inserted(rendered, bare)
            positions.append(at <= rendered.find(PROBE_TEXT) if PROBE_TEXT in rendered else None)
    except Exception as error:
        report.add(
            Answer("image_before_text", question, None, f"unknown: rendering failed ({error})", "unknown")
        )
        return
    status: Status = "measured" if stored_template else "unknown"
    if positions == [True, True] or positions == [False, False]:
        where = "before" if positions[0] else "after"
        report.add(
            Answer(
                "image_before_text",
                question,
                positions[0],
                f"the template puts the image {where} the text whatever the content order "
                f"({provenance}){caveat}",
                status,
                slot="image_before_text",
            )
        )
        return
    documented = _documented_order(model_class, report.value("image_token"))
    if documented is not None:
        before, evidence = documented
        report.add(
            Answer(
                "image_before_text",
                question,
                before,
                f"the template follows the content order; {evidence}",
                "found",
                slot="image_before_text",
            )
        )
        return
    report.add(
        Answer(
            "image_before_text",
            question,
            True,
            "the template follows the content order and no usage example shows the convention; "
            "image first is the default (the order the seed families were trained with)",
            "default",
            slot="image_before_text",
        )
    )


def _documented_order(model_class: type | None, image_token: str | None) -> tuple[bool, str] | None:
    """The image/text order of the usage example in the model class's ``forward`` docstring, if any."""
    forward = getattr(model_class, "forward", None) if model_class is not None else None
    doc = (inspect.getdoc(forward) or "") if forward is not None else ""
    example = doc[doc.find("Example") :] if "Example" in doc else ""
    if not example:
        return None
    where = f"{model_class.__name__}.forward docstring example"
    user = example.find('"role": "user"')
    if user >= 0:
        image_at = example.find('"type": "image"', user)
        text_at = example.find('"type": "text"', user)
        if image_at >= 0 and text_at >= 0:
            return (
                image_at < text_at,
                f"{where} lists the {'image' if image_at < text_at else 'text'} item first",
            )
    if image_token:
        for line in example.splitlines():
            match = re.search(r"prompt\s*=\s*(['\"])(.*)\1", line)
            if match and image_token in match.group(2):
                before, _, after = match.group(2).partition(image_token)
                words_before, words_after = (
                    len(re.findall(r"[A-Za-z]+", before)),
                    len(re.findall(r"[A-Za-z]+", after)),
                )
                return words_after > words_before, f"{where} prompt {match.group(2)!r}"
    return None


# --------------------------------------------------------------------------------------- capabilities
def _research_capabilities(report: ResearchReport, tiny: Any, tiny_error: str | None, name: str) -> None:
    """Measure the three flags on the tiny model through an adapter built from the researched spec."""
    questions = {
        "contiguous_image_tokens": "Capability: contiguous image tokens",
        "supports_batching": "Capability: batching gives the same result as singles",
        "strict_residual_stream": "Capability: resid_post[i] == resid_pre[i+1]",
    }
    if tiny is None:
        for key, question in questions.items():
            report.add(
                Answer(key, question, None, f"unknown: no tiny model to measure on ({tiny_error})", "unknown")
            )
        return
    from vlmforge.core.adapter import ModelAdapter
    from vlmforge.core.runtime import HookedVLM

    try:
        from vlmforge.harness.measure import measure_capabilities
    except ImportError as error:
        for key, question in questions.items():
            report.add(
                Answer(
                    key, question, None, f"unknown: vlmforge.harness.measure unavailable ({error})", "unknown"
                )
            )
        return
    spec = FamilySpec(
        name=name,
        checkpoints=(),
        tiny_reference=report.value("tiny_reference", report.model_type),
        **report.spec_kwargs(),
    )
    adapter_class = type(f"{name}ResearchAdapter", (ModelAdapter,), {"spec": spec, "__module__": __name__})
    try:
        vlm = HookedVLM(
            tiny.model, tiny.processor, adapter=adapter_class(tiny.model), model_name=f"tiny/{name}"
        )
        with _quiet():
            measured = measure_capabilities(vlm)
    except Exception as error:  # the measurement itself failed: report it, do not guess the flags
        for key, question in questions.items():
            report.add(
                Answer(
                    key,
                    question,
                    None,
                    f"unknown: measuring failed ({type(error).__name__}: {error})",
                    "unknown",
                    slot=key,
                )
            )
        return
    for key, question in questions.items():
        measurement = measured[key]
        report.add(
            Answer(
                key,
                question,
                bool(measurement.value),
                f"tiny model: {measurement.evidence}",
                "measured",
                slot=key,
            )
        )


# -------------------------------------------------------------------------------------------- research
def _tiny_reference(resolved: ResolvedSource) -> tuple[str, str]:
    """What ``build_tiny_model`` should be given to rebuild this architecture, and why."""
    from vlmforge.harness.tiny import reference_checkpoints, resolve_reference

    if resolved.kind == "reference" or (
        resolved.checkpoint and resolved.checkpoint in reference_checkpoints()
    ):
        return resolved.checkpoint or resolved.given, "stored reference config"
    if resolved.kind == "model_type":
        return resolved.given, "bare model_type: build_tiny_model uses transformers' default config"
    # A local dir / cached hub id: use it if the tiny builder accepts it, else fall back to the model_type.
    candidate = str(resolved.files_dir) if resolved.kind == "local_dir" else resolved.given
    with _quiet():
        try:
            resolve_reference(candidate)
            return candidate, "build_tiny_model accepts this location"
        except Exception as error:
            return resolved.config.model_type, (
                f"build_tiny_model cannot load {candidate!r} ({type(error).__name__}); the tiny model is "
                f"rebuilt from transformers' default {resolved.config.model_type!r} config instead"
            )


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def research(
    source: str,
    *,
    name: str | None = None,
    trust_remote_code: bool = False,
    measure: bool = True,
) -> ResearchReport:
    """Answer the Phase-1 questions for ``source`` (hub id / local dir / stored reference id / model_type).

    Args:
        source: what to research; resolved offline by :func:`resolve_source`.
        name: the family id (only used to name the throwaway adapter the capability measurement needs).
        trust_remote_code: allow a checkpoint's own modelling code (off by default; never implied).
        measure: build a tiny random model and measure the capability flags (else they are ``unknown``).

    Raises:
        ScaffoldError: the input cannot be resolved offline or is not an image+text decoder VLM.
    """
    started = time.perf_counter()
    resolved = resolve_source(source, trust_remote_code=trust_remote_code)
    config = resolved.config
    report = ResearchReport(resolved, config.model_type, transformers.__version__)
    name = name or default_family_name(config.model_type)
    report.timings["config"] = time.perf_counter() - started

    phase = time.perf_counter()
    model_cls = _model_class(resolved, report, trust_remote_code)
    report.add(
        Answer(
            "model_types",
            "config.model_type values",
            [config.model_type],
            f"config.model_type = {config.model_type!r} ({type(config).__name__})",
        )
    )
    model = build_meta_model(model_cls, config)
    decoder = _research_structure(model, config, report)
    if decoder is not None:
        _research_blocks(decoder, config.get_text_config(decoder=True), report)
    report.timings["meta model + structure"] = time.perf_counter() - phase
    del model, decoder

    phase = time.perf_counter()
    reference, why = _tiny_reference(resolved)
    report.add(
        Answer("tiny_reference", "Tiny model reference (what build_tiny_model rebuilds)", reference, why)
    )
    tiny, tiny_error = None, None
    if measure:
        from vlmforge.harness.tiny import build_tiny_model

        with _quiet():
            try:
                tiny = build_tiny_model(config if resolved.kind != "model_type" else reference, seed=0)
            except Exception as error:  # the tiny builder cannot do this architecture: say so
                tiny_error = f"build_tiny_model failed: {type(error).__name__}: {error}"
    tiny_processor = tiny.processor if tiny is not None else None
    if tiny_processor is None and tiny_error is None:
        from vlmforge.harness.tiny import build_tiny_processor

        with _quiet():
            try:
                tiny_processor = build_tiny_processor(config if resolved.kind != "model_type" else reference)
            except Exception as error:
                tiny_error = f"build_tiny_processor failed: {type(error).__name__}: {error}"
    report.timings["tiny model"] = time.perf_counter() - phase

    phase = time.perf_counter()
    processor, provenance = _load_processor(resolved, trust_remote_code, tiny_processor, tiny_error)
    stored_template = provenance.startswith("real") or _has_stored_template(config)
    _research_image_token(config, processor, provenance, stored_template, report)
    _research_processor(config, processor, provenance, report)
    _research_chat_template(processor, provenance, stored_template, model_cls, report)
    report.answers.setdefault(
        "custom_processor",
        Answer(
            "custom_processor",
            "Family needs a processor subclass",
            False,
            "the chat template renders image placeholders; the generic VLMProcessor suffices",
        ),
    )
    report.timings["processor"] = time.perf_counter() - phase

    phase = time.perf_counter()
    if measure:
        _research_capabilities(report, tiny, tiny_error, name)
    else:
        for key, question in (
            ("contiguous_image_tokens", "Capability: contiguous image tokens"),
            ("supports_batching", "Capability: batching gives the same result as singles"),
            ("strict_residual_stream", "Capability: resid_post[i] == resid_pre[i+1]"),
        ):
            report.add(
                Answer(key, question, None, "unknown: not measured (measure=False)", "unknown", slot=key)
            )
    report.timings["capabilities"] = time.perf_counter() - phase
    report.timings["total"] = time.perf_counter() - started
    report.peak_rss_mb = _peak_rss_mb()
    return report


def _has_stored_template(config: PretrainedConfig) -> bool:
    """Whether the tiny processor's chat template is a stored copy of the family's real one."""
    from vlmforge.harness.tiny import family_spec

    with contextlib.suppress(Exception):
        return bool(family_spec(config).stored)
    return False
