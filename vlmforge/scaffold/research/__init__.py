"""Automated Phase-1 research: answer "how is this VLM built?" from its config alone, with evidence.

The seed guide (``adding-a-new-vlm.md``, Phase 1) asks a person to load the model in a REPL and read
off the model class, the path to the decoder, the attention's rotary function, the image token, the
processor conventions and three capability flags. :func:`research` (:mod:`.pipeline`) does the same
mechanically:

1. resolve the input (local checkpoint dir, hub id in the local HF cache, a stored reference config or
   a bare ``model_type``) to a config, never touching the network (:mod:`.sources`), and pick the
   generation class (:mod:`.model_class`);
2. instantiate it on the **meta device** (no weights, near-zero memory even for 72B) and read structure
   off the module tree, the attention class's source and the config: where the decoder lives
   (:mod:`.layout`), what its blocks hold (:mod:`.blocks`, :mod:`.projections`, :mod:`.attention`,
   :mod:`.mlp`), helped by :mod:`.module_tree`, :mod:`.forward_analysis` and :mod:`.config_values`;
3. read the image token (:mod:`.image_token`) and the processor (:mod:`.processor`), and test the chat
   template of the real processor (checkpoint dir) or the tiny one (:mod:`.chat_template`);
4. *measure* the capability flags on a tiny random model of the same architecture (:mod:`.tiny_model`,
   :mod:`.capabilities`).

Every answer carries its evidence and a status (:mod:`vlmforge.scaffold.report`); what cannot be answered
is reported as ``unknown`` / ``hand_edit`` (and becomes a ``# TODO(vlmforge)`` in the generated module),
never guessed. In each module a reasoning step returns findings (values and the facts behind them) and
a separate step words them as answers.
"""

from vlmforge.scaffold.report import (
    TEMPLATE_SLOTS,
    Answer,
    ResearchReport,
    ResolvedSource,
    Status,
    default_adapter_class,
    default_family_name,
)
from vlmforge.scaffold.research.isolation import offline
from vlmforge.scaffold.research.pipeline import research, research_prompting, research_structure
from vlmforge.scaffold.research.processor import has_stored_template, load_processor
from vlmforge.scaffold.research.sources import resolve_source

__all__ = [
    "TEMPLATE_SLOTS",
    "Answer",
    "ResearchReport",
    "ResolvedSource",
    "Status",
    "default_adapter_class",
    "default_family_name",
    "has_stored_template",
    "load_processor",
    "offline",
    "research",
    "research_prompting",
    "research_structure",
    "resolve_source",
]
