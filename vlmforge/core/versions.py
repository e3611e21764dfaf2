"""What differs between the transformers minors vlmforge supports — one place, one comment per fact.

The supported range is ``dependencies`` in ``pyproject.toml`` (the only copy; CI tests its oldest
and newest release). It starts at 5.23 because of what breaks below it, measured by running the
whole suite per release with ``.ci/transformers-env VERSION``. It ends below 5.25 (released, the newest)
because 5.25 requires ``kernels>=0.19.1``, which the package registries these machines install from do not
serve (0.17.2 is their newest): a fresh install of 5.25 fails to resolve, so it cannot be tested or
supported here yet. Inside the range, 5.24's ``Llama4ForConditionalGeneration.forward`` raises
``AttributeError`` on every call (:data:`BROKEN_FORWARDS`; 5.23 runs it, 5.25 fixes it), so the llama4 family
refuses to load there and its conformance cells are reported not applicable. Below the range:

* 5.22 and 5.20 (both measured; 5.21 was not run): the tiny GOT-OCR2 processor writes 256 image tokens
  whatever ``num_image_tokens`` it is given (4 features), VipLLaVA's processor and model disagree on the
  CLS token, the MLP/processor field handling of a few other new families differs; on 5.20 also the
  DeepSeek-VL / Janus image processors' resized images differ from the reconstructed ones by up to 0.05
  per channel. The four seed families pass from 5.20 on (the range started there before #9's families);

* 5.19 and older: ``Idefics3Config()`` hands its default Llama text config ``pad_token_id=128002``
  with a 32,000-token vocabulary, so the SmolVLM/Idefics3 architecture cannot be built from its
  model_type (the scaffolder's research on ``idefics3`` fails);
* 5.18 and older: the Qwen2.5-VL / Qwen3-VL rotary modules take only 3-D ``(3, B, L)`` position ids;
* 5.16 and older: Qwen2.5-VL's attention applies M-RoPE through
  ``apply_multimodal_rotary_pos_emb(..., mrope_section)``; ``apply_rotary_pos_emb``, which the
  ``qwen2_5_vl`` family names, does not exist there.

Code that depends on one of the facts below reads it from here, never from a version check of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import transformers
from packaging.version import Version

#: The installed transformers release (``major, minor``).
TRANSFORMERS_VERSION: tuple[int, int] = Version(transformers.__version__).release[:2]  # type: ignore[assignment]

#: The keyword under which decoder layers and attention modules receive the KV cache: 5.24 renamed
#: ``past_key_values`` to ``cache`` (models, layers and attention alike).
CACHE_KEYWORD: str = "cache" if TRANSFORMERS_VERSION >= (5, 24) else "past_key_values"


def layer_cache(kwargs: Mapping[str, Any]) -> Any | None:
    """The KV cache a layer / attention call received (``None`` when it runs without one)."""
    return kwargs.get(CACHE_KEYWORD)


def cached_length(cache: Any, layer: int) -> int:
    """How many positions ``cache`` holds for ``layer``'s attention.

    A layer attending with another layer's keys (Gemma3n's KV-shared layers) keeps no cache of its own:
    transformers 5.23 / 5.24 give it a ``DummyLayer``, whose ``get_seq_length`` raises ``ValueError``. It
    attends to every position seen so far (the shared keys are stored full length), which is what the
    cache's own length (its first layer's) counts.
    """
    try:
        return int(cache.get_seq_length(layer))
    except ValueError:
        return int(cache.get_seq_length())


def without_cache(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` for re-running a layer / attention call without reading or extending its KV cache."""
    return {**kwargs, CACHE_KEYWORD: None} if CACHE_KEYWORD in kwargs else dict(kwargs)


def _release(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True)
class BrokenForward:
    """A transformers defect that makes a model class's forward raise on every call in some releases.

    Attributes:
        releases: the ``(major, minor)`` releases with the defect.
        defect: what transformers does wrong there (one sentence, naming the failing line's effect).
        works_on: the releases that run the class, for the user to install.
    """

    releases: tuple[tuple[int, int], ...]
    defect: str
    works_on: str

    def affects(self, version: tuple[int, int]) -> bool:
        """Whether transformers ``version`` (``major, minor``) has the defect."""
        return version in self.releases

    def reason(self, version: tuple[int, int] | None = None) -> str:
        """``"not applicable on transformers 5.24: <defect>; it runs on transformers <works_on>"`` for
        ``version``; without one, for every affected release (a statement that reads the same whichever
        release renders it, for generated records kept equal across releases)."""
        releases = _release(version) if version is not None else ", ".join(map(_release, self.releases))
        where = f"not applicable on transformers {releases}"
        return f"{where}: {self.defect}; it runs on transformers {self.works_on}"


#: Model classes (transformers class names) whose forward is broken in a supported release, with why: the
#: one place a family's "cannot run on this release" comes from. The registry refuses to load such a family
#: there (a clear error, not the traceback from inside transformers), the harness and the registry-driven
#: tests report its cells "not applicable on transformers X", and the scaffolder refuses to research it.
BROKEN_FORWARDS: dict[str, BrokenForward] = {
    # 5.24's forward builds its output with `image_outputs=outputs.image_outputs`, but the language model
    # returns a MoeCausalLMOutputWithPast, which has no such field (5.23 has no such line; 5.25 drops it).
    "Llama4ForConditionalGeneration": BrokenForward(
        releases=((5, 24),),
        defect="Llama4ForConditionalGeneration.forward reads `outputs.image_outputs` from the language "
        "model's MoeCausalLMOutputWithPast, which has no such field, so every forward raises AttributeError",
        works_on="5.23 (before the defect) or 5.25 and newer (fixed)",
    ),
}


def broken_forward(model_class: str, version: tuple[int, int] = TRANSFORMERS_VERSION) -> BrokenForward | None:
    """The defect that breaks ``model_class``'s forward on transformers ``version`` (default: the installed
    one), or None when that release runs it."""
    fact = BROKEN_FORWARDS.get(model_class)
    return fact if fact is not None and fact.affects(version) else None
