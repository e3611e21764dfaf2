"""The spec dataclasses as the scaffolder's schema.

Everything the scaffolder knows about a spec field comes from the field itself
(:func:`vlmforge.core.spec.spec_field`): this module derives from it

* the copier questions of the ``family`` template (type, default, help, a validator chosen by kind),
  written into a generated block of ``vlmforge/templates/family/copier.yml`` by
  ``python -m vlmforge.scaffold.schema --write`` (copier reads questions only from that file, and
  ``copier update`` from a git checkout needs them committed);
* the *layout* the template walks to render ``SPEC = FamilySpec(...)`` (a hidden computed question of
  the same block): no Jinja is written per field;
* the TODO slots, and the mapping between research answers / copier answers and spec values.

Every function takes the spec class (default :class:`FamilySpec`), so a subclass with more fields
works without editing anything here.
"""

from __future__ import annotations

import argparse
import importlib
import keyword
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vlmforge.core.spec import FamilySpec, SpecNode, named_constants, spec_leaves, spec_nodes

__all__ = [
    "NON_SPEC_SLOTS",
    "TEMPLATE_DIR",
    "answers_from_spec",
    "answers_from_values",
    "copier_questions",
    "render_layout",
    "spec_from_answers",
    "spec_kwargs",
    "template_slots",
    "write_questions",
]

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates" / "family"
# Generated module classes are imported from the public package when it exports them.
PUBLIC_MODULE = "vlmforge.core"
# TODO slots the template renders outside SPEC (the processor class, or above SPEC without one).
NON_SPEC_SLOTS = frozenset({"processor"})
LAYOUT_QUESTION = "spec_layout"
REGENERATE = "python -m vlmforge.scaffold.schema --write"
BEGIN = "# ---- BEGIN GENERATED"
END = "# ---- END GENERATED"

# copier question type and how the template spells a value, per field kind.
# An optional bool is a YAML answer (true / false / null), since copier's bool type has no "unset".
_COPIER_TYPE = {
    "bool": "bool",
    "optional_bool": "yaml",
    "count": "int",
    "str_list": "yaml",
    "hub_ids": "yaml",
    "alias_map": "yaml",
}
_SHAPE = {
    "bool": "bool",
    "optional_bool": "bool",
    "count": "int",
    "str_list": "tuple",
    "hub_ids": "tuple",
    "alias_map": "mapping",
}
_EMPTY: dict[str, Any] = {"tuple": (), "mapping": {}, "bool": False, "int": 1, "scalar": ""}

# Validators per kind; VALUE stands for the question name. An empty answer passes where a field may be
# empty (it means None, or leaves a TODO); `required_unless` adds the "one of the two" check.
_PATH_RE = r"^[A-Za-z_]\\w*(\\.[A-Za-z_]\\w*)*$"
_KEYWORDS = ", ".join(f"'{word}'" for word in keyword.kwlist if word.islower())
_VALIDATORS = {
    "family_name": "{% if not (VALUE | regex_search('^[a-z_][a-z0-9_]*$')) %}must be a lowercase Python "
    "identifier (a-z, 0-9, _; not starting with a digit), e.g. my_vlm{% elif VALUE in ["
    + _KEYWORDS
    + "] %}must not be a Python keyword{% endif %}",
    "class_name": "{% if VALUE and not (VALUE | regex_search('^[A-Za-z_][A-Za-z0-9_]*$')) %}must be a class "
    "name{% endif %}",
    "attribute_path": f"{{% if VALUE and not (VALUE | regex_search('{_PATH_RE}')) %}}must be an attribute "
    "name or dotted path (a.b.c){% endif %}",
    "import_path": f"{{% if VALUE and not (VALUE | regex_search('{_PATH_RE[:-2]}+$')) %}}must be an "
    "importable dotted path like package.module.function{% endif %}",
    "optional_bool": "{% if VALUE is not none and VALUE is not boolean %}must be true, false or null (null: "
    "measured on the loaded processor's chat template){% endif %}",
    "count": "{% if VALUE is not integer or VALUE is boolean or VALUE < 1 %}must be a whole number >= 1"
    "{% endif %}",
    "str_list": "{% if VALUE is string or VALUE is mapping or not VALUE %}must be a non-empty YAML list of "
    "strings{% endif %}",
    "hub_ids": "{% if VALUE is string or VALUE is mapping or VALUE is not iterable %}must be a YAML list of "
    '"org/name" ids{% else %}{% for c in VALUE %}{% if not (c is string and '
    "(c | regex_search('^[^/\\\\s]+/[^/\\\\s]+$'))) %}{{ c }} is not an \"org/name\" hub id; {% endif %}"
    "{% endfor %}{% endif %}",
    "alias_map": "{% if VALUE is not mapping %}must be a YAML mapping alias -> checkpoint id{% else %}"
    "{% for a, c in VALUE.items() %}{% if c not in TARGETS %}alias {{ a }} points at {{ c }}, which is "
    "not among the TARGETS; {% endif %}{% endfor %}{% endif %}",
}


# ---------------------------------------------------------------------------------------------- fields
def _checked_leaves(spec_class: type) -> list[SpecNode]:
    """The leaves of ``spec_class``, refusing duplicate answer keys (each key is one copier question)."""
    leaves = list(spec_leaves(spec_class))
    seen: dict[str, tuple[str, ...]] = {}
    for leaf in leaves:
        if leaf.key in seen:
            raise TypeError(
                f"{spec_class.__name__}: answer key {leaf.key!r} is used by both "
                f"{'.'.join(seen[leaf.key])} and {'.'.join(leaf.path)}; give one of them key=..."
            )
        seen[leaf.key] = leaf.path
    return leaves


def _groups(nodes: Sequence[SpecNode]) -> Iterator[SpecNode]:
    for node in nodes:
        if node.group is not None:
            yield node
            yield from _groups(node.children)


def template_slots(spec_class: type = FamilySpec) -> frozenset[str]:
    """Places in the generated module a TODO can sit at: every leaf key, group slots, non-spec slots."""
    group_slots = {group.info.slot for group in _groups(spec_nodes(spec_class)) if group.info.slot}
    leaf_keys = {leaf.key for leaf in _checked_leaves(spec_class)}
    clash = group_slots & leaf_keys
    if clash:
        raise TypeError(f"{spec_class.__name__}: group slots {sorted(clash)} are also answer keys")
    return frozenset(leaf_keys | group_slots | NON_SPEC_SLOTS)


def _shape(leaf: SpecNode) -> str:
    return _SHAPE.get(str(leaf.info.kind), "scalar")


def _spec_value(leaf: SpecNode, value: Any) -> Any:
    """A research / copier answer as the field's value: an empty answer is None where the field admits
    None, else the field's default (or the empty value of a required field)."""
    shape = _shape(leaf)
    if leaf.nullable and (value is None or value == ""):
        return None
    if value is None:
        return _EMPTY[shape] if leaf.required else leaf.default
    if shape == "tuple":
        return tuple(value)
    if shape == "mapping":
        return dict(value)
    if shape == "int":
        return int(value)
    return bool(value) if shape == "bool" else value


def _answer_value(leaf: SpecNode, value: Any) -> Any:
    """A field value in copier's terms: None is the empty string, tuples are lists, mappings dicts."""
    shape = _shape(leaf)
    if shape == "tuple":
        return list(value)
    if shape == "mapping":
        return dict(value)
    if value is None:
        return None if shape == "bool" else ""  # an optional bool's null stays a YAML null
    return value


# ------------------------------------------------------------------------------- answers <-> spec values
def _values(leaves: Sequence[SpecNode], answers: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: field value}``: answered keys converted, unanswered ones at their default (or empty)."""
    values = {}
    for leaf in leaves:
        if leaf.key in answers:
            values[leaf.key] = _spec_value(leaf, answers[leaf.key])
        elif not leaf.required:
            values[leaf.key] = leaf.default
        elif not leaf.info.identity:  # the caller supplies identity fields (name, checkpoints)
            values[leaf.key] = _EMPTY[_shape(leaf)]
    return values


def _kwargs(nodes: Sequence[SpecNode], values: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for node in nodes:
        if node.group is not None:
            kwargs[node.name] = node.group(**_kwargs(node.children, values))
        elif node.key in values:
            kwargs[node.name] = values[node.key]
    return kwargs


def spec_kwargs(
    answers: Mapping[str, Any], spec_class: type = FamilySpec, *, identity: bool = True
) -> dict[str, Any]:
    """Keyword arguments of ``spec_class`` from answers keyed like its questions (research or copier).

    Args:
        answers: ``{answer key: value}``; a missing answer leaves the field at its default, an empty
            (``None`` / ``""``) one means ``None`` where the field admits it, else the default too.
        spec_class: the spec dataclass.
        identity: include the identity fields (name, checkpoints...); research answers leave them out.
    """
    values = _values(_checked_leaves(spec_class), answers)
    nodes = [node for node in spec_nodes(spec_class) if identity or not node.info.identity]
    return _kwargs(nodes, values)


def spec_from_answers(answers: Mapping[str, Any], spec_class: type[FamilySpec] = FamilySpec) -> FamilySpec:
    """The spec the template renders for these answers (the research -> spec mapping)."""
    return spec_class(**spec_kwargs(answers, spec_class))


def answers_from_values(answers: Mapping[str, Any], spec_class: type = FamilySpec) -> dict[str, Any]:
    """Copier answers for every spec question: research answers converted to spec values and back, so an
    empty answer becomes its default exactly as :func:`spec_from_answers` would read it."""
    leaves = _checked_leaves(spec_class)
    values = _values(leaves, answers)
    return {leaf.key: _answer_value(leaf, values[leaf.key]) for leaf in leaves if leaf.key in values}


def answers_from_spec(spec: Any) -> dict[str, Any]:
    """The copier answers that render ``spec`` (all spec questions; the non-spec ones are not included)."""
    answers = {}
    for leaf in _checked_leaves(type(spec)):
        value = spec
        for name in leaf.path:
            value = getattr(value, name)
        answers[leaf.key] = _answer_value(leaf, value)
    return answers


# ------------------------------------------------------------------------------------ questions, layout
def _validator(leaf: SpecNode, leaves: Sequence[SpecNode]) -> str:
    validator = _VALIDATORS.get(str(leaf.info.kind), "")
    if leaf.info.kind == "alias_map":  # aliases point at the hub ids declared next to them
        validator = validator.replace("TARGETS", next(x.key for x in leaves if x.info.kind == "hub_ids"))
    others = leaf.info.required_unless
    if others:
        others = (others,) if isinstance(others, str) else others
        condition = " and ".join(f"not {other}" for other in ("VALUE", *others))
        validator += (
            f"{{% if {condition} %}}give {', '.join(others)} or VALUE: one of them is needed{{% endif %}}"
        )
    return validator.replace("VALUE", leaf.key)


def _question(leaf: SpecNode, leaves: Sequence[SpecNode]) -> dict[str, Any]:
    question: dict[str, Any] = {"type": _COPIER_TYPE.get(str(leaf.info.kind), "str"), "help": leaf.info.help}
    if not leaf.required:
        question["default"] = _answer_value(leaf, leaf.default)
    elif _shape(leaf) in ("tuple", "mapping"):  # an empty collection is a valid start for a list question
        question["default"] = _answer_value(leaf, _EMPTY[_shape(leaf)])
    validator = _validator(leaf, leaves)
    if validator:
        question["validator"] = validator
    return question


def _import_module(name: str, obj: Any, home: str) -> str:
    """Where a generated module imports ``name`` from: the public package if it exports it, else its home."""
    return PUBLIC_MODULE if getattr(importlib.import_module(PUBLIC_MODULE), name, None) is obj else home


def _layout_node(node: SpecNode) -> dict[str, Any]:
    """One field as the template walks it (see the module docstring of the template)."""
    entry: dict[str, Any] = {"name": node.name, "always": node.info.always_render}
    if node.group is not None:
        entry |= {"class": node.group.__name__, "slot": node.info.slot}
        return entry | {"fields": [_layout_node(child) for child in node.children]}
    entry |= {"key": node.key, "shape": _shape(node), "nullable": node.nullable, "required": node.required}
    if not node.required:
        entry["default"] = _answer_value(node, node.default)
    return entry


def render_layout(spec_class: type = FamilySpec) -> dict[str, Any]:
    """What the template needs to render ``SPEC = <spec_class>(...)``: the field tree (answer keys,
    defaults, group classes), where to import each class from, and the constants spelled by name."""
    nodes = spec_nodes(spec_class)
    classes = [spec_class, *(group.group for group in _groups(nodes) if group.group is not None)]
    constants = named_constants()
    imports = {cls.__name__: _import_module(cls.__name__, cls, cls.__module__) for cls in classes}
    imports |= {name: _import_module(name, value, FamilySpec.__module__) for value, name in constants.items()}
    return {
        "class": spec_class.__name__,
        "fields": [_layout_node(node) for node in nodes],
        "imports": imports,
        "constants": constants,
    }


def copier_questions(spec_class: type = FamilySpec) -> dict[str, Any]:
    """The copier questions of every spec field, plus the hidden layout question the template walks."""
    leaves = _checked_leaves(spec_class)
    questions = {leaf.key: _question(leaf, leaves) for leaf in leaves}
    # A computed value (`when: false`): never asked nor recorded, so `copier update` takes the new one.
    questions[LAYOUT_QUESTION] = {"type": "yaml", "when": False, "default": render_layout(spec_class)}
    return questions


class _Dumper(yaml.SafeDumper):
    """Long strings (validators, help) as folded block scalars: readable, and no quote doubling."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        style = ">" if len(data) > 80 and "\n" not in data and data == data.strip() else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _Dumper.represent_str)


def questions_block(spec_class: type = FamilySpec) -> str:
    """The generated block of the template's copier.yml, markers included."""
    questions = copier_questions(spec_class)
    layout = {LAYOUT_QUESTION: questions.pop(LAYOUT_QUESTION)}
    options: dict[str, Any] = {"Dumper": _Dumper, "sort_keys": False, "allow_unicode": True, "width": 110}
    header = (
        f"{BEGIN}: the questions and layout of the {spec_class.__name__} fields (vlmforge/core/spec.py).\n"
        f"# Do not edit: change the fields and run `{REGENERATE}`.\n"
    )
    # The questions in block style; the layout's leaf entries one per line (flow style).
    body = yaml.dump(questions, default_flow_style=False, **options)
    body += yaml.dump(layout, default_flow_style=None, **options)
    return f"{header}{body}{END}\n"


def write_questions(copier_yml: Path, spec_class: type = FamilySpec) -> bool:
    """Replace the generated block of ``copier_yml`` with the current schema; True when it changed."""
    text = copier_yml.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{copier_yml} has no generated block ({BEGIN!r} ... {END!r})")
    end = text.index("\n", end) + 1
    updated = text[:start] + questions_block(spec_class) + text[end:]
    if updated != text:
        copier_yml.write_text(updated)
    return updated != text


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vlmforge.scaffold.schema [--write]``: check (or rewrite) the template's questions."""
    parser = argparse.ArgumentParser(prog="python -m vlmforge.scaffold.schema", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the generated block in place")
    args = parser.parse_args(argv)
    copier_yml = TEMPLATE_DIR / "copier.yml"
    if args.write:
        print(f"{copier_yml}: {'updated' if write_questions(copier_yml) else 'up to date'}")
        return 0
    current = copier_yml.read_text()
    if questions_block() not in current:
        print(f"{copier_yml} is out of date with vlmforge/core/spec.py: run `{REGENERATE}`", file=sys.stderr)
        return 1
    print(f"{copier_yml}: up to date")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
