"""VLM Spectra's ``HookedVLM`` as a thin subclass of vlmforge's: only signatures and defaults differ.

What changes against :class:`vlmforge.core.runtime.HookedVLM` (see README, "Coming from VLM Spectra"):
hook functions are ``fn(module, args, kwargs, value)`` with flat values; ``run_with_cache`` keeps the
last module run and fills virtual entries / split heads on exit, ``self.cache`` becoming a plain dict;
one cache and one patch set are active at a time; ``from_pretrained`` maps ``device`` to a
``device_map`` and defaults to bfloat16; prompts go through an optional template; ``forward_batch`` /
``generate_batch`` build their batch from ``tasks`` / ``images``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from vlmforge.analysis.geometry import ImageInfo, image_info
from vlmforge.analysis.vision import resolve_patch_params, smart_resize
from vlmforge.core.adapter import ModelAdapter
from vlmforge.core.processing import ImageInput, load_image
from vlmforge.core.registry import ModelRegistry as NativeModelRegistry
from vlmforge.core.runtime import HookedVLM as NativeHookedVLM
from vlmforge.spectra.core.activation_cache import ActivationCache
from vlmforge.spectra.core.hook_manager import HookManager

PromptTemplate = str | Callable[[str], str] | None

UI_TARS = "ByteDance-Seed/UI-TARS-1.5-7B"

#: VLM Spectra's built-in GUI-agent prompt, the default for exactly UI-TARS-1.5-7B.
UI_TARS_PROMPT = (
    "You are a GUI agent. You are given a task and your action history, with screenshots. You need to "
    "perform the next action to complete the task.\n\n"
    "## Output Format\n```\nThought: ...\nAction: ...\n```\n\n"
    "## Action Space\n"
    "click(start_box='<|box_start|>(x1,y1)<|box_end|>')\n"
    "left_double(start_box='<|box_start|>(x1,y1)<|box_end|>')\n"
    "right_single(start_box='<|box_start|>(x1,y1)<|box_end|>')\n"
    "drag(start_box='<|box_start|>(x1,y1)<|box_end|>', end_box='<|box_start|>(x3,y3)<|box_end|>')\n"
    "hotkey(key='')\n"
    "type(content='')\n"
    "scroll(start_box='<|box_start|>(x1,y1)<|box_end|>', direction='down or up or right or left')\n"
    "wait()\n"
    "finished(content='xxx')\n\n"
    "## Note\n- Use {language} in `Thought` part.\n"
    "- Write a small plan and finally summarize your next action (with its target element) in one "
    "sentence in `Thought` part.\n\n"
    "## User Instruction\n{instruction}\n"
)


def default_prompt_for(model_name: str) -> str | None:
    """The built-in prompt template for ``model_name``: UI-TARS-1.5-7B's GUI-agent template, else none."""
    return UI_TARS_PROMPT if model_name == UI_TARS else None


class HookedVLM(NativeHookedVLM):
    """VLM Spectra's ``HookedVLM`` on vlmforge's runtime, for every registered family.

    Args:
        model: the Hugging Face model.
        processor: the prompt processor (vlmforge's :class:`~vlmforge.core.processing.VLMProcessor`)
            or a Hugging Face processor.
        adapter: the family adapter (resolved from the model's config when omitted).
        device: ``"auto"`` resolves to the first parameter's device; anything else is kept as given.
        default_prompt: the prompt template (``str`` with ``{instruction}`` / ``{text}`` /
            ``{language}`` fields, or a ``str -> str`` callable), or ``None``.
        model_name: the name the model was loaded by.
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        adapter: ModelAdapter | None = None,
        device: str | torch.device = "auto",
        *,
        default_prompt: PromptTemplate = None,
        model_name: str | None = None,
    ) -> None:
        super().__init__(model, processor, adapter=adapter, model_name=model_name)
        self.device = next(model.parameters()).device if str(device) == "auto" else device
        self.prompt: PromptTemplate = default_prompt
        self.cache: dict[str, torch.Tensor] | None = None  # type: ignore[assignment]
        self.adapter.set_processor(self.processor)
        self._hook_manager = HookManager(self.adapter, runtime=self)

    # ------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        model_name: str,
        device: str | torch.device = "auto",
        default_prompt: PromptTemplate = None,
        **kwargs: Any,
    ) -> HookedVLM:
        """Load ``model_name`` (a checkpoint id, an alias, a local directory or ``tiny/<family>``).

        ``device`` becomes the Hugging Face ``device_map`` of a checkpoint (a tiny model is built on
        it, ``"auto"`` picking CUDA > MPS > CPU); ``torch_dtype`` defaults to bfloat16 for checkpoints;
        other keyword arguments go to the model's ``from_pretrained``. The attention implementation
        is the checkpoint's. ``default_prompt=None`` picks the built-in template (UI-TARS-1.5-7B only).

        Raises:
            ValueError: an unknown model name.
        """
        resolution = NativeModelRegistry.resolve(model_name)
        dtype = kwargs.pop("torch_dtype", None) or kwargs.pop("dtype", None)
        if resolution.source == "tiny":
            native = NativeHookedVLM.from_pretrained(model_name, device=device, dtype=dtype, **kwargs)
        else:
            native = NativeHookedVLM.from_pretrained(
                model_name, dtype=dtype or torch.bfloat16, device_map=device, **kwargs
            )
        if default_prompt is None:
            default_prompt = default_prompt_for(model_name)
        return cls(
            native.model,
            native.prompt_processor,
            adapter=native.adapter,
            device=device,
            default_prompt=default_prompt,
            model_name=model_name,
        )

    # ------------------------------------------------------------ properties
    @property
    def device(self) -> Any:  # type: ignore[override]
        """Where inputs go: the device given at construction (``"auto"``: the first parameter's)."""
        return self._device

    @device.setter
    def device(self, value: Any) -> None:
        self._device = value

    @property
    def image_factor(self) -> int:
        """The vision encoder's patch size x merge size (28 when the config has no patch size)."""
        patch, merge = resolve_patch_params(
            getattr(self.model.config, "vision_config", None), self.model_name
        )
        return patch * merge

    # ---------------------------------------------------------------- inputs
    def _templated(self, task: str, template: PromptTemplate) -> str:
        template = template or self.prompt
        if not template:
            return task
        if callable(template):
            return template(task)
        try:
            return template.format(instruction=task, text=task, language="English")
        except KeyError:
            return task

    def _vision_image(self, image: ImageInput) -> Image.Image:
        """The image as the family's processor gets it: resized to ``image_factor`` multiples on
        dynamic-resolution processors (Qwen-VL style), as VLM Spectra's ``process_vision_info`` does."""
        image = load_image(image)
        if getattr(getattr(self.processor, "image_processor", None), "merge_size", None) is None:
            return image
        height, width = smart_resize(image.height, image.width, factor=self.image_factor)
        return image if (width, height) == image.size else image.resize((width, height))

    def prepare_messages(  # type: ignore[override]
        self,
        task: str,
        image: ImageInput,
        append_text: str = "",
        assistant_prefill: str | None = "",
        return_text: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Inputs (``BatchFeature``, batch 1) for one image + task; with ``return_text`` also the prompt.

        The only extra keyword is ``prompt_template`` (else ``TypeError``).
        """
        unknown = set(kwargs) - {"prompt_template"}
        if unknown:
            raise TypeError(f"prepare_messages() got unexpected keyword arguments {sorted(unknown)}")
        inputs, texts = self._prepare(
            [task], [image], append_text, assistant_prefill, kwargs.get("prompt_template")
        )
        return (inputs, texts[0]) if return_text else inputs

    def prepare_inputs(self, text: str, image: ImageInput, **kwargs: Any) -> Any:
        """The same as :meth:`prepare_messages`."""
        return self.prepare_messages(text, image, **kwargs)

    def prepare_messages_batch(  # type: ignore[override]
        self,
        tasks: Sequence[str],
        images: Sequence[ImageInput],
        append_text: str = "",
        assistant_prefill: str | None = "",
        return_text: bool = False,
    ) -> Any:
        """One left-padded batch; with ``return_text`` also the rendered prompts.

        Raises:
            ValueError: ``tasks`` and ``images`` differ in length.
        """
        if len(tasks) != len(images):
            raise ValueError(f"got {len(tasks)} tasks but {len(images)} images")
        inputs, texts = self._prepare(list(tasks), list(images), append_text, assistant_prefill, None)
        return (inputs, texts) if return_text else inputs

    def _prepare(
        self,
        tasks: list[str],
        images: list[ImageInput],
        append_text: str,
        assistant_prefill: str | None,
        template: PromptTemplate,
    ) -> tuple[Any, list[str]]:
        prefill = assistant_prefill or None
        texts = [self._templated(task, template) for task in tasks]
        pil_images = [self._vision_image(image) for image in images]
        inputs = self.prompt_processor.prepare_inputs_batch(
            texts,
            pil_images,
            assistant_prefill=prefill,
            append_text=append_text or "",
            device=self.device,
            dtype=self.dtype,
        )
        rendered = [
            self.prompt_processor.render(
                text, image, assistant_prefill=prefill, append_text=append_text or ""
            )
            for text, image in zip(texts, pil_images)
        ]
        return inputs, rendered

    def process_image(self, image: ImageInput) -> ImageInfo:
        """The image's geometry as the model sees it (``NotImplementedError`` for tiled families)."""
        return image_info(self, image)

    def generate_patch_overview(self, image: ImageInput, **kwargs: Any) -> Image.Image:
        """``process_image(image).patch_overview(**kwargs)``."""
        return self.process_image(image).patch_overview(**kwargs)

    # ------------------------------------------------------------- execution
    def _placed(self, inputs: Any) -> Any:
        """``inputs.to(self.device)`` (a plain dict fails, as in VLM Spectra), then ``model.eval()``."""
        inputs = inputs.to(self.device)
        self.model.eval()
        return inputs

    def forward(  # type: ignore[override]
        self, inputs: Any, require_grads: bool = False, return_dict: bool = True, **kwargs: Any
    ) -> Any:
        """One forward pass; ``no_grad`` unless ``require_grads`` (then every parameter requires grad)."""
        inputs = self._placed(inputs)
        return super().forward(inputs, require_grads=require_grads, return_dict=return_dict, **kwargs)

    def generate(  # type: ignore[override]
        self,
        inputs: Any,
        max_new_tokens: int = 512,
        require_grads: bool = False,
        do_sample: bool = False,
        return_dict_in_generate: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Generate (greedy by default); the result has ``.sequences``."""
        inputs = self._placed(inputs)
        return super().generate(
            inputs,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            require_grads=require_grads,
            return_dict_in_generate=return_dict_in_generate,
            **kwargs,
        )

    def _batch(self, inputs_list: list[Any] | None, tasks: Any, images: Any) -> Any:
        if inputs_list is None:
            if tasks is None or images is None:
                raise ValueError("forward_batch / generate_batch need inputs_list, or both tasks and images")
            return self.prepare_messages_batch(tasks, images)
        if len(inputs_list) != 1:
            raise NotImplementedError(
                "inputs_list must hold exactly one (already batched) input; pass tasks= and images= to batch"
            )
        return inputs_list[0]

    def forward_batch(  # type: ignore[override]
        self,
        inputs_list: list[Any] | None = None,
        tasks: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        require_grads: bool = False,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """:meth:`forward` on ``inputs_list[0]`` or on the batch of ``tasks`` x ``images``."""
        inputs = self._batch(inputs_list, tasks, images)
        return self.forward(inputs, require_grads=require_grads, return_dict=return_dict, **kwargs)

    def generate_batch(  # type: ignore[override]
        self,
        inputs_list: list[Any] | None = None,
        tasks: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        max_new_tokens: int = 512,
        require_grads: bool = False,
        do_sample: bool = False,
        return_dict_in_generate: bool = True,
        **kwargs: Any,
    ) -> Any:
        """:meth:`generate` on ``inputs_list[0]`` or on the batch of ``tasks`` x ``images``."""
        inputs = self._batch(inputs_list, tasks, images)
        return self.generate(
            inputs,
            max_new_tokens=max_new_tokens,
            require_grads=require_grads,
            do_sample=do_sample,
            return_dict_in_generate=return_dict_in_generate,
            **kwargs,
        )

    # ----------------------------------------------------------------- hooks
    @contextlib.contextmanager
    def run_with_cache(self, cache_names: str | Sequence[str]) -> Iterator[ActivationCache]:  # type: ignore[override]
        """Cache ``cache_names`` during the block (the last module run wins).

        On exit (also on an exception) the virtual entries are added, the hooks removed,
        ``format_cache_item`` applied and ``self.cache`` set to a plain dict of the entries.
        A nested ``run_with_cache`` unhooks this one. Names must start with ``lm.`` (``ValueError``).
        ``*`` covers the layers that have the hook type (see :meth:`hook_layers`: a mixture-of-experts
        layer has no dense ``mlp.hook_pre``); naming a layer without it is ``NotImplementedError`` with
        the adapter's reason.
        """
        cache = ActivationCache()
        self._hook_manager.register_cache_hooks(cache, cache_names)
        try:
            yield cache
        finally:
            self._hook_manager.finalize_cache(cache)
            self.cache = dict(cache)

    @contextlib.contextmanager
    def run_with_hooks(self, hooks: Sequence[tuple[str, Callable[..., Any]]]) -> Iterator[None]:  # type: ignore[override]
        """Patch with ``(name, fn)`` pairs, ``fn(module, args, kwargs, value) -> Tensor | None``.

        Values are flat (q/z ``[b, s, H*dh]``, k/v ``[b, s, Hkv*dh]``); a returned tensor replaces
        the value. All names are validated first; the active patches are dropped (an inner block
        replaces an outer one); patches run in list order, before cache hooks. ``*`` and layers without
        the hook type behave as in :meth:`run_with_cache`.
        """
        self._hook_manager.register_patch_hooks(hooks)
        try:
            yield None
        finally:
            self._hook_manager.remove_patch_hooks()


__all__ = ["UI_TARS_PROMPT", "HookedVLM", "default_prompt_for"]
