"""``HookedVLM``: load a VLM, prepare prompts, run it, cache and patch activations.

API-compatible with VLM Spectra's ``HookedVLM``. Hooks are plain PyTorch module hooks that are
registered for the duration of a ``with`` block and always removed, also when the block raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import transformers
from torch import nn

from vlmforge.core.adapter import ModelAdapter, causal_mask, in_token_layout
from vlmforge.core.cache import ActivationCache
from vlmforge.core.errors import CheckpointLoadError, ContractError, DeviceError, InputError, InvalidHookError
from vlmforge.core.hooks import RECOMPUTED_ATTENTION, HookPoint, RawHook, expand_hook_names
from vlmforge.core.processing import ImageInput, VLMProcessor
from vlmforge.core.registry import ModelRegistry, Resolution
from vlmforge.core.roles import EXPERTS, MLP
from vlmforge.core.versions import cached_length, layer_cache

HookFunction = Callable[[torch.Tensor, HookPoint], torch.Tensor | None]
#: A hook function, native (``fn(activation, hook_point)``) or raw (:class:`RawHook`).
AnyHookFunction = HookFunction | RawHook
#: Builds ``(model, hf_processor)`` from a resolution's location, a seed and a dtype.
ModelBuilder = Callable[..., tuple[nn.Module, Any]]

#: Builders for model sources that core cannot load itself, keyed by ``Resolution.source``.
#: ``vlmforge.tiny`` registers ``"tiny"`` when imported (``import vlmforge`` imports it), so core
#: never imports the layers above it.
MODEL_BUILDERS: dict[str, ModelBuilder] = {}


def register_model_builder(source: str, builder: ModelBuilder) -> None:
    """Let ``HookedVLM.from_pretrained`` build resolutions of ``source`` with ``builder``.

    ``builder(location, *, seed, dtype)`` returns ``(model, hf_processor)``.
    """
    MODEL_BUILDERS[source] = builder


try:  # transformers reads .safetensors through this package; its error is no OSError
    from safetensors import SafetensorError
except ImportError:  # pragma: no cover - a transformers dependency
    SafetensorError = OSError  # type: ignore[assignment,misc]

#: Errors a checkpoint's files raise when they are missing, truncated or not what their name says.
_CHECKPOINT_ERRORS = (OSError, ValueError, SafetensorError, EOFError)
DEVICE_HELP = "'auto' (CUDA > MPS > CPU), 'cpu', 'cuda', 'cuda:<index>' or 'mps'"


def _attention_configs(model: nn.Module) -> list[Any]:
    """Every config whose ``_attn_implementation`` a forward of ``model`` reads.

    The model's own, each sub-model's (vision tower, decoder) and their registered sub-configs, each
    once: a composite VLM can run SDPA in the decoder and eager in an encoder that lacks SDPA.
    """
    found: dict[int, Any] = {}
    pending = [module.config for module in model.modules() if hasattr(module, "config")]
    while pending:
        config = pending.pop()
        if id(config) in found or not hasattr(config, "_attn_implementation_internal"):
            continue
        found[id(config)] = config
        pending += [getattr(config, key, None) for key in getattr(config, "sub_configs", {})]
    return list(found.values())


def _placement_device(place: Any) -> torch.device | None:
    """A device_map value as a torch device; ``None`` for offloaded places ("disk", "meta")."""
    if isinstance(place, int):
        return torch.device("cuda", place)
    if str(place) in ("disk", "meta"):
        return None
    return torch.device(place)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; an explicit device must exist on this machine.

    Raises:
        DeviceError: not a device name, or a CUDA / MPS device this machine does not have.
    """
    if str(device) != "auto":
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as error:
            message = f"device {device!r} is not a device name ({error}); use {DEVICE_HELP}"
            raise DeviceError(message) from error
        _check_available(resolved)
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(device: torch.device) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise DeviceError(
                f"device {str(device)!r} is not available: this machine has {count} CUDA device(s) "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use 'cpu' or 'auto'"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("device 'mps' is not available on this machine; use 'cpu' or 'auto'")


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def _replace_first(value: Any, tensor: torch.Tensor) -> Any:
    if isinstance(value, tuple):
        return (tensor, *value[1:])
    if isinstance(value, list):
        return [tensor, *value[1:]]
    return tensor


class _Handles:
    """Several torch hook handles removed as one (a hook point needing more than one torch hook)."""

    def __init__(self, *handles: torch.utils.hooks.RemovableHandle) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class _Registration:
    """One hook function registered on its module; readers can be moved behind later patches."""

    def __init__(self, vlm: HookedVLM, point: HookPoint, function: AnyHookFunction, reader: bool) -> None:
        self.vlm, self.point, self.function, self.reader = vlm, point, function, reader
        self.handle: torch.utils.hooks.RemovableHandle | None = vlm._register(point, function, reader=reader)
        if reader:
            vlm._readers.append(self)

    def reregister(self) -> None:
        """Remove and register again: the function then runs after every hook registered so far."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = self.vlm._register(self.point, self.function, reader=self.reader)

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        if self in self.vlm._readers:
            self.vlm._readers.remove(self)


def _require_accelerate() -> None:
    """device_map loading goes through accelerate: say which extra provides it when it is missing."""
    try:
        import accelerate  # noqa: F401
    except ImportError as error:
        raise InputError(
            'device_map needs accelerate: pip install "vlmforge[sharding]" (or pass device=... to load '
            "the whole model on one device)"
        ) from error


class HookedVLM:
    """A VLM with interpretability hooks on its language model.

    Args:
        model: the Hugging Face ``*ForConditionalGeneration`` model.
        processor: its Hugging Face processor (or an already wrapped :class:`VLMProcessor`).
        adapter: the family adapter instance; resolved from ``model.config`` when omitted.
        model_name: a display name (defaults to the config's ``_name_or_path``).
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        adapter: ModelAdapter | None = None,
        model_name: str | None = None,
    ) -> None:
        if adapter is None:
            config = model.config.to_dict()
            adapter_class = ModelRegistry.family_for_config(config, model_name or type(model).__name__)
            # A family the installed release cannot run is refused here too, not at the first forward.
            ModelRegistry.check_runnable(adapter_class)
            adapter = adapter_class(model)
        self.model = model.eval()
        self.adapter = adapter
        if adapter.tokenizer is None:  # lets get_image_token_id fall back to the token string
            adapter.tokenizer = getattr(processor, "tokenizer", None)
        self.prompt_processor = (
            processor
            if isinstance(processor, VLMProcessor)
            else adapter.processor_class(processor, adapter.spec)
        )
        self.model_name = model_name or getattr(model.config, "_name_or_path", "") or adapter.spec.name
        self.cache: ActivationCache = ActivationCache()
        # Active cache (reader) registrations, kept behind every patch so a cache sees patched values.
        self._readers: list[_Registration] = []
        if getattr(adapter, "processor", None) is None and not isinstance(processor, VLMProcessor):
            adapter.processor = processor
        # True while a recomputed hook (scores, pattern) re-runs q/k projections: hook functions are not
        # called again then; each hook replays the replacement it made in the real pass instead.
        self._recomputing = False

    # ------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        device: str | torch.device = "auto",
        dtype: torch.dtype | None = None,
        *,
        seed: int = 0,
        trust_remote_code: bool = False,
        device_map: str | dict[str, Any] | None = None,
        **model_kwargs: Any,
    ) -> HookedVLM:
        """Load a supported model by alias, checkpoint id, local directory or ``tiny/<family>``.

        The model keeps its checkpoint's attention implementation (SDPA where transformers has it);
        calls that ask for ``output_attentions`` switch to eager for their duration only.

        Args:
            name_or_path: what to load; ``tiny/<family>`` builds a tiny random model offline.
            device: ``"auto"`` (CUDA > MPS > CPU) or an explicit device; ignored with ``device_map``.
            dtype: defaults to bfloat16 on CUDA and float32 elsewhere (tiny models: float32).
            seed: seed of the tiny model's random weights.
            trust_remote_code: passed to transformers; off by default.
            device_map: shard the checkpoint across devices through accelerate (``"auto"``, or a
                ``{module path: device | "disk"}`` dict, as transformers takes it); needs the
                ``sharding`` extra (``pip install "vlmforge[sharding]"``). Checkpoints only.
            model_kwargs: forwarded to the model class's ``from_pretrained`` (``local_files_only``,
                ``revision`` and ``cache_dir`` also to the processor's; ``offload_folder`` with a
                device_map that offloads to disk).
        """
        resolution = ModelRegistry.resolve(name_or_path)
        target = resolve_device(device) if device_map is None else None
        builder = MODEL_BUILDERS.get(resolution.source)
        if builder is not None and device_map is not None:
            raise InputError(
                f"device_map shards a checkpoint while it loads; {name_or_path!r} is built in memory. "
                "Pass device=... instead, or save the model (save_pretrained) and load that directory."
            )
        if builder is not None:
            model, hf_processor = builder(resolution.location, seed=seed, dtype=dtype or torch.float32)
            model = model.to(target)
        elif resolution.source == "tiny":
            raise CheckpointLoadError(f"{name_or_path}: tiny models need `import vlmforge.tiny` first")
        else:
            if device_map is not None:
                _require_accelerate()
                model_kwargs["device_map"] = device_map
            model, hf_processor = cls._load_checkpoint(
                resolution, target, dtype, trust_remote_code=trust_remote_code, **model_kwargs
            )
        adapter = resolution.adapter_class(model)
        return cls(model, hf_processor, adapter=adapter, model_name=resolution.display_name)

    @staticmethod
    def _load_checkpoint(
        resolution: Resolution,
        device: torch.device | None,
        dtype: torch.dtype | None,
        *,
        trust_remote_code: bool,
        **model_kwargs: Any,
    ) -> tuple[nn.Module, Any]:
        """The checkpoint's model (on ``device``, or placed by ``model_kwargs["device_map"]``) + processor."""
        spec = resolution.adapter_class.spec
        model_class = getattr(transformers, spec.model_class)
        if dtype is None:
            on_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
            dtype = torch.bfloat16 if on_cuda else torch.float32
        # Hub-access options apply to the processor files as much as to the weights.
        shared = {
            k: model_kwargs[k] for k in ("local_files_only", "revision", "cache_dir") if k in model_kwargs
        }
        try:
            model = model_class.from_pretrained(
                resolution.location, dtype=dtype, trust_remote_code=trust_remote_code, **model_kwargs
            )
            processor = transformers.AutoProcessor.from_pretrained(
                resolution.location, trust_remote_code=trust_remote_code, **shared
            )
        except _CHECKPOINT_ERRORS as error:
            if not isinstance(error, OSError):  # a file is there but unreadable: say which checkpoint
                raise CheckpointLoadError(
                    f"could not read checkpoint {resolution.location!r}: {type(error).__name__}: {error}. "
                    "A file of it (weights, config, tokenizer) is truncated or corrupt: re-download it."
                ) from error
            raise CheckpointLoadError(
                f"could not load {resolution.location!r} ({error}). Without network access, point at a "
                "local checkpoint directory or pre-populate the Hugging Face cache; for an offline "
                f"demo use 'tiny/{spec.name}'."
            ) from error
        return (model if device is None else model.to(device)), processor

    # ------------------------------------------------------------ properties
    @property
    def processor(self) -> Any:
        """The Hugging Face processor."""
        return self.prompt_processor.hf_processor

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embeddings' device (under a ``device_map``, the first device)."""
        device_map = getattr(self.model, "hf_device_map", None)
        if device_map:
            placed = [device for device in map(_placement_device, device_map.values()) if device is not None]
            if placed:
                return placed[0]
        embeddings = self.model.get_input_embeddings()
        if embeddings is not None:
            return embeddings.weight.device
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def lm_num_layers(self) -> int:
        return self.adapter.lm_num_layers

    # ---------------------------------------------------------------- inputs
    def prepare_messages(self, task: str, image: ImageInput, **kwargs: Any) -> Any:
        """Inputs for one image + task, on the model's device and dtype.

        Keyword arguments: ``system_prompt``, ``assistant_prefill``, ``append_text``.
        """
        return self.prompt_processor.prepare_inputs(
            task, image, device=self.device, dtype=self.dtype, **kwargs
        )

    def prepare_messages_batch(
        self, tasks: Sequence[str], images: Sequence[ImageInput], **kwargs: Any
    ) -> Any:
        """Left-padded inputs for N image + task pairs (N >= 1)."""
        return self.prompt_processor.prepare_inputs_batch(
            tasks, images, device=self.device, dtype=self.dtype, **kwargs
        )

    # ------------------------------------------------------------- execution
    def _check_inputs(self, inputs: Any, new_tokens: int = 0) -> None:
        """Refuse inputs the model would run silently wrong (or fail deep inside on) with what to do."""
        if not isinstance(inputs, Mapping) or not isinstance(inputs.get("input_ids"), torch.Tensor):
            raise InputError(
                f"inputs must be what prepare_messages(...) returns (a mapping with an input_ids tensor, "
                f"attention_mask and pixel_values), got {type(inputs).__name__}"
            )
        input_ids = inputs["input_ids"]
        # Only without image tensors: the token scan is a device sync, kept off the every-forward path.
        if not _has_image_tensor(inputs) and self._has_image_tokens(inputs):
            raise InputError(
                "the prompt has image tokens but the inputs have no pixel_values: pass the whole "
                "prepare_messages(...) result, not only its input_ids"
            )
        maximum = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        length = input_ids.shape[-1] + new_tokens
        if isinstance(maximum, int) and length > maximum:
            extra = f" + {new_tokens} new tokens" if new_tokens else ""
            raise InputError(
                f"the prompt is {input_ids.shape[-1]} tokens{extra}, more than the model's maximum of "
                f"{maximum} positions: shorten the task / system prompt, use a smaller image, or generate "
                "fewer tokens"
            )

    def _has_image_tokens(self, inputs: Mapping[str, Any]) -> bool:
        key = self.adapter.spec.image_token.position_mask
        if key is not None and inputs.get(key) is None:
            return False  # no processor mask: the processor saw no image (its placeholder ids are ordinary)
        return bool(self.adapter.image_token_mask(inputs).any())

    @contextlib.contextmanager
    def attention_implementation(self, implementation: str) -> Iterator[None]:
        """Run the block with ``implementation`` (``"eager"``, ``"sdpa"``, ...) in every sub-model.

        Each sub-model's own implementation is restored afterwards, also when the block raises.
        ``forward``/``generate`` use this for ``output_attentions=True``: only eager returns weights.
        """
        configs = _attention_configs(self.model)
        saved = [(config, config._attn_implementation_internal) for config in configs]
        if all(value == implementation for _, value in saved):
            yield
            return
        try:
            try:
                self.model.set_attn_implementation(implementation)
            except (ValueError, ImportError) as error:
                raise InputError(
                    f"{type(self.model).__name__} cannot run attention implementation {implementation!r}: "
                    f"{error}"
                ) from error
            yield
        finally:
            # Written back directly: re-validating the original choices could only fail or warn again.
            for config, value in saved:
                config._attn_implementation_internal = value

    def _attention_for(self, kwargs: Mapping[str, Any]) -> contextlib.AbstractContextManager[None]:
        """Eager for a call that asks for ``output_attentions`` (SDPA returns no weights), else as loaded."""
        if kwargs.get("output_attentions"):
            return self.attention_implementation("eager")
        return contextlib.nullcontext()

    def _gradients(self, require_grads: bool) -> contextlib.AbstractContextManager[Any]:
        """``no_grad``, or with ``require_grads`` gradients on (every parameter set to require them)."""
        if not require_grads:
            return torch.no_grad()
        self.model.requires_grad_(True)  # not reverted, as in VLM Spectra: attribution runs backward after
        return torch.enable_grad()

    def forward(self, inputs: Any, *, require_grads: bool = False, **kwargs: Any) -> Any:
        """One forward pass; returns the Hugging Face model output.

        Runs under ``no_grad`` unless ``require_grads=True``, which turns gradients on for the call and
        sets every parameter to require them (not reverted), so ``out.logits[...].backward()`` reaches
        the parameters and any activation a hook kept with its graph (attribution). Recomputed hooks
        (scores, patterns, head outputs) are computed without gradients either way.
        """
        self._check_inputs(inputs)
        with self._attention_for(kwargs), self._gradients(require_grads):
            return self.model(**inputs, **kwargs)

    forward_batch = forward

    def generate(
        self,
        inputs: Any,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        *,
        require_grads: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Generate; the result has ``.sequences`` (prompt + new tokens, [B, L + new]).

        ``require_grads`` as in :meth:`forward`.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
        self._check_inputs(inputs, new_tokens=max_new_tokens)
        kwargs.setdefault("return_dict_in_generate", True)
        tokenizer = self.prompt_processor.tokenizer
        if getattr(tokenizer, "pad_token_id", None) is not None:
            kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        with self._attention_for(kwargs), self._gradients(require_grads):
            return self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, **kwargs)

    generate_batch = generate

    # ------------------------------------------------------------ components
    def get_model_components(self) -> dict[str, Any]:
        """The pieces a logit lens needs: ``norm`` (final norm), ``lm_head`` and ``tokenizer``.

        VLM Spectra's keys only; a family whose logits mask some ids has them in
        ``adapter.get_logit_mask()`` (pass it to ``compute_logit_lens(..., logit_mask=...)``).
        """
        return {
            "norm": self.adapter.get_lm_norm(),
            "lm_head": self.adapter.get_lm_head(),
            "tokenizer": self.prompt_processor.tokenizer,
        }

    def get_image_token_range(self, inputs: Any) -> tuple[int, int]:
        """``(first, last)``: the inclusive positions of the image-token id in a one-row input.

        On a family whose image tokens are not contiguous (tile markers in between), the range spans
        the markers too.

        Raises:
            ValueError: more than one row, or no image token in the row.
        """
        input_ids = inputs["input_ids"] if isinstance(inputs, Mapping) else inputs
        if input_ids.dim() == 2 and input_ids.shape[0] != 1:
            raise InputError(f"get_image_token_range takes one row, got a batch of {input_ids.shape[0]}")
        positions = self.adapter.image_token_mask(inputs).reshape(-1).nonzero().flatten()
        if positions.numel() == 0:
            raise InputError("the input has no image tokens")
        return int(positions[0]), int(positions[-1])

    # ----------------------------------------------------------------- hooks
    @contextlib.contextmanager
    def run_with_cache(self, hook_names: str | Sequence[str]) -> Iterator[ActivationCache]:
        """Cache activations of ``hook_names`` during the block; afterwards in ``self.cache``.

        Yields the :class:`ActivationCache` (a dict with ``stack``) that is also ``self.cache``.
        If several forward passes run inside the block (e.g. ``generate``), each name keeps the
        activation of the *first* pass, the full prompt. Cached tensors are detached copies, so the
        model's computation is untouched (logits are bit-identical with and without caching).

        A cache records the value the model actually used: patch functions (``run_with_hooks``) run
        before cache functions on the same hook, whichever block was opened first.
        """
        points = self.hook_points(hook_names)
        store = ActivationCache()

        def remember(activation: torch.Tensor, point: HookPoint) -> None:
            if point.name not in store:
                # A recomputed value is a fresh tensor each hook gets its own of: no copy needed (saves
                # one [B, H, L, L] per layer for patterns); anything the model itself uses is copied.
                fresh = point.spec.direction == "computed"
                store[point.name] = activation.detach() if fresh else activation.detach().clone()

        self.cache = store
        with self._hooks([(point, remember) for point in points], reader=True):
            yield store
        self.cache = store  # an inner block may have replaced it; the exiting block's cache wins

    def hook_points(self, hook_names: str | Sequence[str]) -> list[HookPoint]:
        """Expand hook names to the points that exist on this model (``*``: the layers that have the hook).

        Raises:
            InvalidHookError: a malformed name, or a layer without that hook (the message says why, e.g.
                a mixture-of-experts layer has no ``mlp.hook_pre``).
        """
        points = expand_hook_names(hook_names, self.lm_num_layers, self.hook_absence)
        for name in [hook_names] if isinstance(hook_names, str) else hook_names:
            # `*` on a hook no layer has is a mistake (a dense-only hook on an all-MoE model), not a no-op.
            hook_type = name.split(".*.", 1)[1] if isinstance(name, str) and ".*." in name else None
            if hook_type is not None and not any(point.hook_type == hook_type for point in points):
                reason = self.hook_absence(HookPoint(0, hook_type))
                raise InvalidHookError(f"invalid hook name {name!r}: no layer has it ({reason})")
        return points

    def hook_layers(self, hook_type: str) -> list[int]:
        """The decoder layers that have ``hook_type`` (all of them for most hook types)."""
        return [
            layer
            for layer in range(self.lm_num_layers)
            if self.hook_absence(HookPoint(layer, hook_type)) is None
        ]

    def hook_absence(self, point: HookPoint) -> str | None:
        """Why this model has no ``point`` (``None``: it has it)."""
        absent = self.adapter.absence(point.spec.site, point.layer)
        if absent is None and point.hook_type in RECOMPUTED_ATTENTION:
            # Scores and patterns are recomputed from the layer's own input: a layer attending with another
            # layer's keys has none to recompute them from.
            absent = self.adapter.recompute_absence(point.layer)
        return absent

    @contextlib.contextmanager
    def run_with_hooks(self, hooks: Sequence[tuple[str, HookFunction]]) -> Iterator[None]:
        """Run the block with ``fn(activation, hook_point)`` called at each named hook.

        A function returning a tensor replaces the activation (same shape as it received: q/k/v/z
        in [B, L, heads, d_h]); returning ``None`` leaves it unchanged. Recomputed hooks
        (``attn.hook_scores``, ``attn.hook_pattern``, ``attn.hook_head_out``) can only be read;
        scores and patterns are recomputed on full passes only (not on KV-cached decoding steps).

        Order: patch functions run in list order (after ``*`` expansion), a nested block's after the
        outer block's, and all of them before any cache function on the same hook.
        ``attn.hook_mask`` functions get the attention mask (see :mod:`vlmforge.core.hooks`); any
        function may be a patch helper from :mod:`vlmforge.core.patching`, or a :class:`RawHook`.
        """
        bound: list[tuple[HookPoint, HookFunction]] = []
        for entry in hooks:
            if not (isinstance(entry, tuple | list) and len(entry) == 2 and callable(entry[1])):
                raise InvalidHookError(f"hooks must be (hook_name, function) pairs, got {entry!r}")
            name, function = entry
            bound += [(point, function) for point in self.hook_points(name)]
        with self._hooks(bound, reader=False):
            yield

    @contextlib.contextmanager
    def _hooks(
        self, bound: Sequence[tuple[HookPoint, AnyHookFunction]], *, reader: bool
    ) -> Iterator[list[_Registration]]:
        """Register ``bound`` for the block (always removed); yields the registrations.

        Patches (``reader=False``) are registered after the active readers are moved behind: a reader
        registered earlier is registered again, so it runs after the patch and records its result.
        """
        registrations: list[_Registration] = []
        try:
            registrations += self._add_hooks(bound, reader=reader)
            yield registrations
        finally:
            for registration in registrations:
                registration.remove()

    def _add_hooks(
        self, bound: Sequence[tuple[HookPoint, AnyHookFunction]], *, reader: bool
    ) -> list[_Registration]:
        """Register ``bound`` until the returned registrations are removed (``_hooks`` is the block form).

        If one fails to register, those registered before it are removed and the error propagates.
        """
        registrations: list[_Registration] = []
        try:
            for point, function in bound:
                registrations.append(_Registration(self, point, function, reader))
        except BaseException:
            for registration in registrations:
                registration.remove()
            raise
        if not reader:
            for registration in list(self._readers):
                registration.reregister()
        return registrations

    def _register(
        self, point: HookPoint, function: AnyHookFunction, *, reader: bool
    ) -> torch.utils.hooks.RemovableHandle:
        module = self.adapter.module(point.spec.site, point.layer)
        direction = point.spec.direction
        replayed: list[torch.Tensor | None] = [None]  # this hook's replacement in the current pass

        def call(raw: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor | None:
            """Hand the activation to ``function``; map a replacement back to raw shape."""
            if self._recomputing:
                # The adapter re-runs q/k_proj to recompute scores: reproduce what the model computed in
                # this pass (a patched q stays patched) without calling the user's function twice.
                return replayed[0]
            if isinstance(function, RawHook):
                result = function(module, args, kwargs, raw)
                replacement = None if reader else self._checked(result, point)
            else:
                replacement = self._apply(function, point, raw, reader=reader)
            replayed[0] = replacement
            return replacement

        if direction == "output" and point.spec.site is EXPERTS:
            return self._register_experts(point, module, call)

        if direction == "output":
            part = self.adapter.output_part(point.spec.site)
            # An MLP returning its tokens flat ([B * L, D]) is shown (and patched) in its input's [B, L, D].
            flat_tokens = point.spec.site is MLP

            def output_hook(_module: nn.Module, args: Any, kwargs: dict, output: Any) -> Any:
                raw = _first_tensor(output)
                if part is None:
                    module_input = args[0] if args else kwargs.get("hidden_states")
                    shown = in_token_layout(raw, module_input) if flat_tokens else raw
                    replacement = call(shown, args, {})
                    return (
                        None
                        if replacement is None
                        else _replace_first(output, replacement.reshape(raw.shape))
                    )
                # Part of the module's output (a fused projection's half, a gated query's query half): the
                # hook sees that part, a replacement is written into it.
                read, write = part
                replacement = call(read(raw), args, {})
                if replacement is None:
                    return None
                merged = raw.clone()
                write(merged, replacement)
                return _replace_first(output, merged)

            return module.register_forward_hook(output_hook, with_kwargs=True)

        if direction == "input":
            part = self.adapter.output_part(point.spec.site)

            def input_hook(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
                from_args = bool(args)
                raw = _first_tensor(args[0]) if from_args else kwargs.get("hidden_states")
                if raw is None:
                    return None
                if part is None:
                    replacement = call(raw, args, kwargs)
                else:
                    # Part of the module's input (one stream of a stacked residual): the hook sees that part,
                    # a replacement is written into a copy of the whole input.
                    read, write = part
                    replacement = call(read(raw), args, kwargs)
                    if replacement is not None:
                        merged = raw.clone()
                        write(merged, replacement)
                        replacement = merged
                if replacement is None:
                    return None
                if from_args:
                    return (_replace_first(args[0], replacement), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": replacement}

            return module.register_forward_pre_hook(input_hook, with_kwargs=True)

        if direction == "mask":
            return self._register_mask(point, module, function, reader=reader)

        return self._register_computed(point, module, function)

    def _register_experts(
        self, point: HookPoint, experts: nn.Module, call: Callable[[torch.Tensor, tuple, dict], Any]
    ) -> _Handles:
        """``mlp.hook_experts_out``: the experts' summed output, shown as [B, L, D].

        MoE blocks flatten tokens before routing ([B * L, D]); the MLP's own input gives B and L back.
        Experts that return one row per (expert slot, token) (``spec.moe.experts_slot_rows``) are shown
        summed over the slots, as the MLP sums them; a replacement goes into the first slot, the others
        zeroed, so that sum is the replacement.
        """
        mlp = self.adapter.get_lm_mlp(point.layer)
        slot_rows = self.adapter.spec.moe.experts_slot_rows
        shape: list[torch.Size] = []

        def remember_shape(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden_states = args[0] if args else kwargs["hidden_states"]
            shape[:] = [hidden_states.shape]

        def experts_hook(_module: nn.Module, args: Any, output: Any) -> Any:
            raw = _first_tensor(output)
            tokens = shape[0].numel() if shape else 0
            if not tokens or raw.numel() % tokens or (not slot_rows and raw.numel() != tokens):
                expected = "one [D] row per (expert slot, token)" if slot_rows else "one [D] row per token"
                raise ContractError(
                    f"{point.name}: {type(experts).__name__} returned {tuple(raw.shape)}, not {expected} "
                    f"of the MLP input {tuple(shape[0]) if shape else '?'}: spec.moe.experts must name the "
                    "module whose output is the routing-weighted sum over the experts (or "
                    "spec.moe.experts_slot_rows declare one row per expert slot)"
                )
            if not slot_rows:
                replacement = call(raw.view(shape[0]), args, {})
                return None if replacement is None else _replace_first(output, replacement.reshape(raw.shape))
            slots = raw.view(raw.numel() // tokens, *shape[0])
            replacement = call(slots.sum(dim=0), args, {})
            if replacement is None:
                return None
            written = torch.zeros_like(slots)
            written[0] = replacement
            return _replace_first(output, written.reshape(raw.shape))

        return _Handles(
            mlp.register_forward_pre_hook(remember_shape, with_kwargs=True),
            experts.register_forward_hook(experts_hook),
        )

    def _register_mask(
        self, point: HookPoint, module: nn.Module, function: AnyHookFunction, *, reader: bool
    ) -> torch.utils.hooks.RemovableHandle:
        """``attn.hook_mask``: a pre-hook on the attention's ``attention_mask`` keyword."""

        def mask_hook(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
            mask = kwargs.get("attention_mask")
            synthesized = mask is None
            if synthesized:
                hidden_states = args[0] if args else kwargs.get("hidden_states")
                if hidden_states is None:
                    return None
                mask = self._mask_for(point, hidden_states, kwargs)
                # Only a patch can hand a built mask over (below): a reader need not keep a copy.
                pristine = None if reader else mask.clone()
            if isinstance(function, RawHook):
                result = function(module, args, kwargs, mask)
            else:
                result = function(mask, point)
            if reader:
                return None
            if result is None:
                # In-place edits of a mask the model passed apply by themselves; a built one is
                # handed over only if the function changed it (else SDPA keeps its causal fast path).
                if not synthesized or torch.equal(mask, pristine):
                    return None
                result = mask
            result = self._checked(result, point)
            if result.is_floating_point():
                hidden_states = args[0] if args else kwargs.get("hidden_states")
                if hidden_states is not None:
                    result = result.to(hidden_states.dtype)
            return args, {**kwargs, "attention_mask": result}

        return module.register_forward_pre_hook(mask_hook, with_kwargs=True)

    def _mask_for(self, point: HookPoint, hidden_states: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """The causal mask for an attention call that got none (SDPA without padding)."""
        past = layer_cache(kwargs)
        past_length = 0 if past is None else cached_length(past, point.layer)
        batch, length = hidden_states.shape[:2]
        mask = causal_mask(
            batch,
            length,
            hidden_states.dtype,
            hidden_states.device,
            self.adapter.sliding_window(point.layer),
            past_length=past_length,
            masked_value=float("-inf"),  # VLM Spectra's convention for the mask it builds
        )
        return mask.clone()  # a real tensor, not an expanded view: functions may edit it in place

    @staticmethod
    def _checked(result: Any, point: HookPoint) -> torch.Tensor | None:
        """A raw function's result: ``None`` or a tensor, written back as returned."""
        if result is None or isinstance(result, torch.Tensor):
            return result
        kind = f"{type(result).__module__}.{type(result).__qualname__}".removeprefix("builtins.")
        raise InvalidHookError(f"hook {point.name} returned a {kind}, not a torch.Tensor: return None or one")

    def _apply(
        self, function: HookFunction, point: HookPoint, raw: torch.Tensor, *, reader: bool
    ) -> torch.Tensor | None:
        """Call ``function`` on the formatted activation; its replacement mapped back to raw shape."""
        formatted = self.adapter.format_cache_item(point.hook_type, raw)
        result = function(formatted, point)
        if result is None or reader:
            return None
        if not isinstance(result, torch.Tensor):
            kind = f"{type(result).__module__}.{type(result).__qualname__}".removeprefix("builtins.")
            raise InvalidHookError(
                f"hook {point.name} returned a {kind}, not a torch.Tensor; return None or a tensor "
                f"of shape {tuple(formatted.shape)} (e.g. torch.as_tensor(value))"
            )
        if result.shape != formatted.shape:
            raise InvalidHookError(
                f"hook {point.name} returned shape {tuple(result.shape)}; "
                f"return None or a tensor of shape {tuple(formatted.shape)}"
            )
        return result.reshape(raw.shape).to(raw.dtype)

    def _register_computed(
        self, point: HookPoint, module: nn.Module, function: HookFunction
    ) -> torch.utils.hooks.RemovableHandle:
        adapter = self.adapter

        def observe(value: torch.Tensor) -> None:
            if isinstance(function, RawHook):
                raise InvalidHookError(f"{point.name} is recomputed (virtual): it takes no raw hook function")
            if function(value, point) is not None:
                raise InvalidHookError(
                    f"{point.name} is recomputed from the attention inputs and cannot be patched; "
                    "patch attn.hook_q / attn.hook_k / attn.hook_z instead"
                )

        if point.hook_type == "attn.hook_head_out":

            def head_out_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
                raw = args[0] if args else kwargs["input"]
                z = adapter.format_cache_item("attn.hook_z", raw)
                observe(adapter.compute_per_head_contributions(z, point.layer))

            return module.register_forward_pre_hook(head_out_hook, with_kwargs=True)

        if point.hook_type == "mlp.hook_router_logits":
            # On the MLP (not the router): its input is [B, L, D] whatever the router is handed.
            mlp = adapter.get_lm_mlp(point.layer)

            def router_hook(_module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
                hidden_states = args[0] if args else kwargs["hidden_states"]
                observe(adapter.compute_router_logits(hidden_states, point.layer))

            return mlp.register_forward_hook(router_hook, with_kwargs=True)

        compute = (
            adapter.compute_attention_patterns
            if point.hook_type == "attn.hook_pattern"
            else adapter.compute_attention_scores
        )

        def attention_hook(_module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
            # A forward (post) hook: args/kwargs are what the attention really received, after every
            # pre-hook (a patch on attn.hook_in included), whatever order the hooks were registered in.
            hidden_states = args[0] if args else kwargs["hidden_states"]
            past = layer_cache(kwargs)
            if past is not None and cached_length(past, point.layer) > hidden_states.shape[1]:
                return  # a cached decoding step sees one query row only: nothing full to recompute
            self._recomputing = True
            try:
                value = compute(
                    hidden_states,
                    point.layer,
                    attention_mask=kwargs.get("attention_mask"),
                    position_embeddings=adapter.call_position_embeddings(point.layer, hidden_states, kwargs),
                )
            finally:
                self._recomputing = False
            observe(value)

        return module.register_forward_hook(attention_hook, with_kwargs=True)

    def __repr__(self) -> str:
        return (
            f"HookedVLM({self.model_name!r}, family={self.adapter.spec.name!r}, layers={self.lm_num_layers})"
        )


def _has_image_tensor(inputs: Mapping[str, Any]) -> bool:
    """Whether ``inputs`` carry pixels: ``pixel_values`` or another floating tensor the processor wrote
    (Fuyu's processor still names its patches ``image_patches`` by default, which the model accepts);
    token ids, masks and grids are integer tensors."""
    if inputs.get("pixel_values") is not None:
        return True
    return any(isinstance(value, torch.Tensor) and value.is_floating_point() for value in inputs.values())
