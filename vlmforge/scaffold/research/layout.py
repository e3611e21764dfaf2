"""Where the text decoder lives: ``language_model``, ``layers``, ``final_norm``, ``lm_head``, architecture."""

from __future__ import annotations

import ast
import contextlib
import inspect
import textwrap
from collections import Counter
from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig

from vlmforge.scaffold.report import Answer, ResearchReport
from vlmforge.scaffold.research.config_values import config_value
from vlmforge.scaffold.research.module_tree import (
    FINAL_NORM_NAMES,
    Decoder,
    block_lists,
    call_quietly,
    describe,
    is_norm,
    module_paths,
    second_sequence,
)

__all__ = ["research_layout"]

_LANGUAGE_MODEL_QUESTION = "Dotted path to the decoder that owns .layers"


@dataclass(frozen=True)
class _DecoderSearch:
    """The block lists of a model and which one is the text decoder's.

    Attributes:
        candidates: the block lists still qualifying after the last narrowing step (one: found).
        how: the narrowing step that decided, in words.
        listing: every block list of the model, for the evidence.
        cross: the block lists set aside as cross-attention blocks (each block's forward takes a second
            sequence's states: the image features), which the decoder applies between its layers.
    """

    candidates: tuple[Decoder, ...]
    how: str
    listing: str
    cross: tuple[Decoder, ...] = ()

    @property
    def decoder(self) -> Decoder | None:
        return self.candidates[0] if len(self.candidates) == 1 else None


@dataclass(frozen=True)
class _FinalNorm:
    """The norm children of the decoder and which of them its ``forward`` applies after the layer loop.

    Attributes:
        norms: the decoder's norm children by name.
        after_loop: sorted names of the norms called after the loop; None when ``forward`` could not be
            read or has no loop over the layers (then the norm is picked by name).
    """

    norms: dict[str, nn.Module]
    after_loop: tuple[str, ...] | None

    @property
    def attribute(self) -> str | None:
        if self.after_loop is not None:
            return self.after_loop[0] if len(self.after_loop) == 1 else None
        return next((n for n in FINAL_NORM_NAMES if n in self.norms), None)


def research_layout(model: nn.Module, config: PretrainedConfig, report: ResearchReport) -> Decoder | None:
    """language_model, layers, final norm, lm_head, decoder architecture; the decoder for block research."""
    text_config = config.get_text_config(decoder=True)
    paths = module_paths(model)
    search = _find_decoder(model, paths, text_config)
    decoder = search.decoder
    if decoder is None:
        report.add(
            Answer(
                "language_model",
                _LANGUAGE_MODEL_QUESTION,
                None,
                f"unknown: {len(search.candidates)} block lists qualify as the text decoder's among "
                f"[{search.listing or 'none'}]",
                "unknown",
            )
        )
        return None
    layer_classes = Counter(type(layer).__name__ for layer in decoder.layers)
    report.add(_language_model_answer(decoder, search, layer_classes))
    report.add(_layers_answer(decoder, layer_classes))
    report.add(_final_norm_answer(decoder, _final_norm(decoder)))
    report.add(_cross_attention_blocks_answer(decoder, search))
    report.add(_lm_head_answer(model, paths))
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


# ------------------------------------------------------------------------------------------- reasoning
def _find_decoder(model: nn.Module, paths: dict[int, str], text_config: PretrainedConfig) -> _DecoderSearch:
    """Narrow the model's block lists down to the text decoder's.

    First the lists inside what ``get_decoder()`` returns (it may be a *ForCausalLM wrapping the decoder),
    then those owned by the module whose ``.config`` is the text config, then those as long as the text
    config's layer count whose owner has a norm.
    """
    everything = block_lists(model)
    listing = ", ".join(f"{c.path or '<root>'}.{c.layers_attr} ({len(c.layers)})" for c in everything)
    # A list of blocks that each attend to a second sequence (Flamingo / IDEFICS gated cross-attention
    # blocks, interleaved with the decoder's layers) beside a list of blocks over the tokens only, owned by
    # the same module, is not the decoder's layer list even where it is as long: set aside. A lone list
    # whose blocks all take one (Mllama's layers, which all accept cross_attention_states) stays.
    cross = tuple(
        c
        for c in everything
        if all(second_sequence(block) for block in c.layers)
        and any(
            o.module is c.module and not any(second_sequence(block) for block in o.layers) for o in everything
        )
    )
    everything = [c for c in everything if c not in cross]
    by_api = call_quietly(model, "get_decoder")
    chosen: list[Decoder] = []
    how = ""
    if isinstance(by_api, nn.Module) and id(by_api) in paths:
        chosen = [c for c in block_lists(by_api, paths[id(by_api)]) if c in everything]
        how = f"it is the block list inside model.get_decoder() (model.{paths[id(by_api)]})"
    if len(chosen) != 1:
        chosen = [c for c in everything if getattr(c.module, "config", None) is text_config]
        how = "its owner's .config is the text config"
    if len(chosen) != 1:
        expected = config_value(text_config, "num_hidden_layers")
        chosen = [
            c for c in everything if len(c.layers) == expected and any(map(is_norm, c.module.children()))
        ]
        how = f"its length matches text_config.num_hidden_layers = {expected} and its owner has a norm"
    return _DecoderSearch(tuple(chosen), how, listing, cross)


def _final_norm(decoder: Decoder) -> _FinalNorm:
    """The decoder's norm children and those its ``forward`` calls after looping over the layers."""
    norms = {n: c for n, c in decoder.module.named_children() if is_norm(c)}
    with contextlib.suppress(OSError, TypeError, SyntaxError):
        tree = ast.parse(textwrap.dedent(inspect.getsource(type(decoder.module).forward)))
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
            after = {
                node.func.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
                and node.func.attr in norms
                and node.lineno > end
            }
            return _FinalNorm(norms, tuple(sorted(after)))
    return _FinalNorm(norms, None)


# -------------------------------------------------------------------------------------------- answers
def _language_model_answer(decoder: Decoder, search: _DecoderSearch, layer_classes: Counter[str]) -> Answer:
    return Answer(
        "language_model",
        _LANGUAGE_MODEL_QUESTION,
        decoder.path,
        f"model.{decoder.path}.{decoder.layers_attr} is a ModuleList of {_layer_description(layer_classes)}; "
        f"chosen because {search.how} "
        f"(block lists found: {search.listing})",
    )


def _layer_description(layer_classes: Counter[str]) -> str:
    return ", ".join(f"{n} {cls}" for cls, n in layer_classes.items())


def _layers_answer(decoder: Decoder, layer_classes: Counter[str]) -> Answer:
    evidence = f"{type(decoder.module).__name__}.{decoder.layers_attr}"
    if len(layer_classes) > 1:
        # Mixed layer classes (cross-attention or linear-attention layers between self-attention ones):
        # every role is researched on every layer (attention, MLP, norms), so a difference that matters
        # surfaces there; the layer list itself is one list.
        evidence += (
            f"; layers of {len(layer_classes)} classes ({_layer_description(layer_classes)}): the attention, "
            "MLP and norm answers are researched on every layer"
        )
    return Answer("layers", "Decoder layer list attribute", decoder.layers_attr, evidence)


def _cross_attention_blocks_answer(decoder: Decoder, search: _DecoderSearch) -> Answer:
    """The decoder's own list of cross-attention blocks (applied between its layers), if it has one."""
    owned = [c for c in search.cross if c.module is decoder.module]
    if len(owned) != 1:
        evidence = (
            f"{type(decoder.module).__name__} owns no list of blocks attending to a second sequence"
            if not owned
            else f"unknown: {type(decoder.module).__name__} owns {len(owned)} lists of cross-attention "
            f"blocks ({', '.join(c.layers_attr for c in owned)})"
        )
        return Answer(
            "cross_attention_blocks",
            "Decoder attribute of the cross-attention blocks between layers",
            None,
            evidence,
            "found" if not owned else "unknown",
        )
    blocks = owned[0]
    block = blocks.layers[0]
    return Answer(
        "cross_attention_blocks",
        "Decoder attribute of the cross-attention blocks between layers",
        blocks.layers_attr,
        f"{type(decoder.module).__name__}.{blocks.layers_attr} is a ModuleList of {len(blocks.layers)} "
        f"{describe(block)}, whose forward takes {second_sequence(block)} to attend to: the decoder applies "
        f"them between its {decoder.layers_attr} (the image reaches the decoder through them, not through "
        "the input embeddings)",
    )


def _final_norm_answer(decoder: Decoder, final: _FinalNorm) -> Answer:
    cls = type(decoder.module).__name__
    norms = sorted(final.norms) or "none"
    attribute = final.attribute
    if final.after_loop is not None and attribute is not None:
        evidence = f"{cls}.forward applies self.{attribute} ({describe(final.norms[attribute])}) "
    elif final.after_loop is not None:
        evidence = (
            f"unknown: {cls}.forward applies {list(final.after_loop) or 'no norm'} after its loop over "
            f"self.{decoder.layers_attr} (norm children: {norms})"
        )
    elif attribute is not None:
        evidence = (
            f"{cls}.{attribute} is a {describe(final.norms[attribute])} (by name; forward source unavailable)"
        )
    else:
        evidence = f"unknown: no source for {cls}.forward and norm children {norms}"
    return Answer(
        "final_norm", "Final norm attribute", attribute, evidence, "found" if attribute else "unknown"
    )


def _lm_head_answer(model: nn.Module, paths: dict[int, str]) -> Answer:
    """The output embeddings, located by identity in the module tree."""
    head = call_quietly(model, "get_output_embeddings")
    head_path = paths.get(id(head)) if head is not None else None
    return Answer(
        "lm_head",
        "Unembedding (lm_head) path",
        head_path,
        f"model.get_output_embeddings() is model.{head_path} ({describe(head)})"
        if head_path
        else "unknown: model.get_output_embeddings() returned nothing in the module tree",
        "found" if head_path else "unknown",
    )
