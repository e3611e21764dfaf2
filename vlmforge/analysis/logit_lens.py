"""Logit lens: decode every layer's residual stream through the final norm and the unembedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

#: ``[layer][position] -> [(token, "0.1234"), ...]`` (top-k, most probable first).
LogitLensResult = list[list[list[tuple[str, str]]]]


def stack_hidden_states(hidden_states: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """``[layers, seq, d]`` from a tuple of ``[1, seq, d]`` or a tensor ``[layers, (1,) seq, d]``.

    Raises:
        ValueError: a batch of more than one, or a shape that is neither form.
    """
    if isinstance(hidden_states, torch.Tensor):
        stacked = hidden_states
        if stacked.dim() == 4:
            if stacked.shape[1] != 1:
                raise ValueError(
                    f"logit lens takes one input at a time: hidden states have batch {stacked.shape[1]}"
                )
            stacked = stacked[:, 0]
        if stacked.dim() != 3:
            raise ValueError(f"hidden states must be [layers, (1,) seq, d], got {tuple(hidden_states.shape)}")
        return stacked
    layers = list(hidden_states)
    if not layers:
        raise ValueError("no hidden states given")
    for index, layer in enumerate(layers):
        if layer.dim() != 3:
            raise ValueError(f"hidden state {index} must be [1, seq, d], got {tuple(layer.shape)}")
        if layer.shape[0] != 1:
            raise ValueError(
                f"logit lens takes one input at a time: hidden state {index} has batch {layer.shape[0]}"
            )
    return torch.stack([layer[0] for layer in layers])


def _lens_device(lm_head: nn.Module, fallback: torch.device) -> torch.device:
    weight = next(lm_head.parameters(), None)
    return weight.device if weight is not None else fallback


def _unembed(
    hidden: torch.Tensor, norm: nn.Module, lm_head: nn.Module, logit_mask: torch.Tensor | None
) -> torch.Tensor:
    """``lm_head(norm(hidden))`` with the ``logit_mask`` ids at ``-inf``: the tokens the model itself
    never predicts (its forward pins their logits to the dtype minimum) get probability 0, as there."""
    logits = lm_head(norm(hidden))
    if logit_mask is not None:
        logits = logits.clone()
        logits[..., logit_mask.to(logits.device)] = float("-inf")
    return logits


@torch.no_grad()
def logit_lens_probabilities(
    hidden_states: Sequence[torch.Tensor] | torch.Tensor,
    norm: nn.Module,
    lm_head: nn.Module,
    *,
    logit_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(lm_head(norm(h)))`` for every layer and position: ``[layers, seq, vocab]`` in float32.

    ``logit_mask``: token ids the model masks out of its logits (``adapter.get_logit_mask()``); they
    get probability 0. The whole ``[layers, seq, vocab]`` tensor is materialised: for long inputs of
    large models use :func:`compute_logit_lens`, which keeps one layer at a time.
    """
    stacked = stack_hidden_states(hidden_states)
    logits = _unembed(stacked.to(_lens_device(lm_head, stacked.device)), norm, lm_head, logit_mask)
    return torch.softmax(logits.float(), dim=-1)


@torch.no_grad()
def _top_k_per_layer(
    stacked: torch.Tensor, norm: nn.Module, lm_head: nn.Module, top_k: int, logit_mask: torch.Tensor | None
) -> tuple[list[list[list[float]]], list[list[list[int]]]]:
    # One layer at a time: [seq, vocab] per step instead of [layers, seq, vocab] (tens of GB for an
    # 8B model on a long prompt).
    device = _lens_device(lm_head, stacked.device)
    values, indices = [], []
    for layer in stacked:
        probabilities = torch.softmax(_unembed(layer.to(device), norm, lm_head, logit_mask).float(), dim=-1)
        top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        values.append(top.values.cpu().tolist())
        indices.append(top.indices.cpu().tolist())
    return values, indices


def compute_logit_lens(
    hidden_states: Sequence[torch.Tensor] | torch.Tensor,
    norm: nn.Module,
    lm_head: nn.Module,
    tokenizer: Any,
    top_k: int = 5,
    *,
    logit_mask: torch.Tensor | None = None,
) -> LogitLensResult:
    """The top-``k`` next-token predictions of every layer at every position.

    Each layer's hidden states go through ``norm`` then ``lm_head`` then a softmax; the result is
    ``[layer][position] -> [(decoded token, probability formatted "0.1234"), ...]``, most probable first.

    Args:
        hidden_states: ``output.hidden_states`` of one input (a tuple of ``[1, seq, d]``), or a tensor
            ``[layers, seq, d]`` / ``[layers, 1, seq, d]`` (e.g. stacked ``hook_resid_post``).
        norm: the language model's final norm (``adapter.get_lm_norm()``).
        lm_head: the unembedding (``adapter.get_lm_head()``).
        tokenizer: decodes token ids.
        top_k: predictions kept per position.
        logit_mask: token ids the model masks out of its logits (``adapter.get_logit_mask()``, e.g.
            Chameleon's image codes): never predicted, as in the model's own output.

    Raises:
        ValueError: a batch of more than one input, or ``top_k < 1``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    values, indices = _top_k_per_layer(stack_hidden_states(hidden_states), norm, lm_head, top_k, logit_mask)
    decoded: dict[int, str] = {}  # the same few ids recur across layers and positions

    def decode(token_id: int) -> str:
        if token_id not in decoded:
            decoded[token_id] = tokenizer.decode([token_id])
        return decoded[token_id]

    return [
        [
            [(decode(token), f"{prob:.4f}") for token, prob in zip(position_ids, position_probs)]
            for position_ids, position_probs in zip(layer_ids, layer_probs)
        ]
        for layer_ids, layer_probs in zip(indices, values)
    ]


def logit_lens(vlm: Any, inputs: Any, top_k: int = 5) -> LogitLensResult:
    """:func:`compute_logit_lens` of one prepared input on ``vlm`` (a :class:`vlmforge.HookedVLM`).

    Reads ``output_hidden_states`` (the embeddings, then each decoder layer's output) and decodes
    them through the adapter's final norm and unembedding, under the family's logit mask. Where the layers
    pass parallel residual streams (``spec.active_stream``) each entry is the stream the residual hooks show.
    """
    output = vlm.forward(inputs, output_hidden_states=True)
    return compute_logit_lens(
        [vlm.adapter.residual_view(states) for states in output.hidden_states],
        vlm.adapter.get_lm_norm(),
        vlm.adapter.get_lm_head(),
        vlm.prompt_processor.tokenizer,
        top_k=top_k,
        logit_mask=vlm.adapter.get_logit_mask(),
    )
