"""``scaffold-new-model``: research a VLM architecture and write its vlmforge family module.

Examples::

    scaffold-new-model llava_next --name llava_next          # a model_type (transformers' default config)
    scaffold-new-model /ckpts/my-llava --alias my-llava       # a local checkpoint directory
    scaffold-new-model Qwen/Qwen2.5-VL-7B-Instruct --dry-run  # a hub id from the local HF cache / store
    scaffold-new-model gemma3 --verify --report gemma3.md     # then run the conformance suite on it

``--dest`` is a project root: a vlmforge checkout (the module goes into ``vlmforge/adapters/``), your own
Python project (into its ``vlmforge_adapters/`` package, created on first use), or a folder that does not
exist yet (created, as a new project). Without ``--dest``: this vlmforge checkout when vlmforge is
installed from one (editable), else the current directory, never site-packages.

Exit codes: 0 success, 1 the conformance suite failed (``--verify``), 2 bad input (the message says
what to do; nothing was written), 130 interrupted (the message says whether anything was written).
"""

from __future__ import annotations

import argparse
import keyword
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import transformers
import yaml

from vlmforge.core.errors import VLMForgeError
from vlmforge.core.versions import broken_forward
from vlmforge.scaffold.conflicts import existing_family_conflicts
from vlmforge.scaffold.destinations import Destination, resolve_destination
from vlmforge.scaffold.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_VERIFY_FAILED,
    ScaffoldError,
)
from vlmforge.scaffold.generate import (
    TEMPLATE_DIR,
    RenderedFamily,
    default_template,
    render_family,
    validate_module,
)
from vlmforge.scaffold.install import install, sweep_stale, temp_prefix
from vlmforge.scaffold.research import ResearchReport, default_family_name, offline, research

__all__ = ["build_parser", "default_dest", "main", "run_verify"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


_CHECKOUT = Path(__file__).resolve().parents[2]


def installed_from_checkout() -> bool:
    """Whether this vlmforge runs from a source tree (editable install), not from an installed wheel."""
    return (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "vlmforge" / "adapters").is_dir()


def default_dest() -> Path:
    """This vlmforge checkout when running from one; else the current directory (the user's project).

    From an installed wheel the package's parent is site-packages, which is never a destination.
    """
    return _CHECKOUT if installed_from_checkout() else Path.cwd()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaffold-new-model",
        description="Research a vision-language model architecture offline (config only, meta device, tiny "
        "random model) and write its vlmforge family module from the copier template.",
    )
    parser.add_argument(
        "source", help="hub id (local HF cache / stored reference), local checkpoint dir or model_type"
    )
    parser.add_argument("--name", help="family id (default: derived from the model_type)")
    parser.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="ALIAS[=CHECKPOINT]",
        help="short name for a checkpoint (default: the first checkpoint); repeatable",
    )
    parser.add_argument(
        "--checkpoint", action="append", default=[], metavar="ID", help="extra checkpoint id; repeatable"
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="project root to write into: a vlmforge checkout (vlmforge/adapters/), your own Python "
        "project (its vlmforge_adapters/ package), or a new folder to create (default: this vlmforge "
        "checkout when installed editable, else the current directory)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the research and the files; write nothing into --dest (with --verify: run the "
        "conformance suite on the rendered module from a temporary folder)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing family module")
    parser.add_argument(
        "--verify", action="store_true", help="run the conformance suite on tiny/<name> afterwards"
    )
    parser.add_argument(
        "--interactive", action="store_true", help="copier questionnaire, research answers as defaults"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the checkpoint's own modelling code (off by default)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="PATH", help="write the research report (Markdown) to PATH"
    )
    parser.add_argument(
        "--answers",
        type=Path,
        metavar="PATH",
        help="also write the research answers as YAML (for `copier copy --data-file PATH`)",
    )
    parser.add_argument(
        "--template",
        default=None,
        help="copier template source (default: this vlmforge git checkout, versioned so that "
        f"`copier update` works; from an installed wheel: {TEMPLATE_DIR})",
    )
    parser.add_argument("--vcs-ref", default=None, help="git ref of a git --template (default: latest tag)")
    return parser


def _template_source(args: argparse.Namespace) -> dict[str, str | None]:
    if args.template is None:
        template, ref = default_template()
        return {"template": template, "vcs_ref": args.vcs_ref or ref}
    return {"template": args.template, "vcs_ref": args.vcs_ref}


def _check_name(name: str) -> str:
    # A leading underscore would allow __init__ / __main__ (the package's own files) and private modules.
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"--name {name!r} is not a valid family id: use a lowercase Python identifier that starts with "
            "a letter (letters a-z, digits, underscores; not a keyword), e.g. --name my_vlm. It becomes "
            "the module file name and the tiny model name tiny/<name>."
        )
    return name


def _aliases(specs: Sequence[str], checkpoints: Sequence[str]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for spec in specs:
        alias, _, checkpoint = spec.partition("=")
        if not _ALIAS.match(alias):
            raise ScaffoldError(
                f"--alias {spec!r}: an alias is letters, digits, '.', '_' or '-' (e.g. my-vlm-7b)"
            )
        if not checkpoint:
            if not checkpoints:
                raise ScaffoldError(
                    f"--alias {alias!r} needs a checkpoint to point at, and this family has none: pass "
                    f"--alias {alias}=<org/name> together with --checkpoint <org/name>"
                )
            checkpoint = checkpoints[0]
        if checkpoint not in checkpoints:
            raise ScaffoldError(
                f"--alias {spec!r} points at {checkpoint!r}, which is not one of the family's checkpoints "
                f"({', '.join(checkpoints) or 'none'}); add it with --checkpoint {checkpoint}"
            )
        aliases[alias] = checkpoint
    return aliases


def _checkpoints(report: ResearchReport, extra: Sequence[str]) -> list[str]:
    checkpoints = [c for c in (report.source.checkpoint, *extra) if c]
    for checkpoint in checkpoints:
        if checkpoint.count("/") != 1 or any(ch.isspace() for ch in checkpoint):
            raise ScaffoldError(f"--checkpoint {checkpoint!r} is not a hub id of the form org/name")
    return list(dict.fromkeys(checkpoints))


def _notes(report: ResearchReport) -> str:
    """Why a measured capability (or image-size batching) is False, or why images need more than one
    token, in one line (what the hand-written modules note)."""
    notes = []
    for key in (
        "contiguous_image_tokens",
        "supports_batching",
        "strict_residual_stream",
        "batches_mixed_image_sizes",
    ):
        answer = report.answers.get(key)
        if answer is not None and answer.value is False:
            evidence = answer.evidence.removeprefix("tiny model: ")
            notes.append(f"{key}=False measured: {_clip(evidence, 120)}")
    floor = report.answers.get("min_image_tokens")
    if floor is not None and isinstance(floor.value, int) and floor.value > 1:
        evidence = floor.evidence.removeprefix("tiny model: ")
        notes.append(f"min_image_tokens={floor.value} measured: {_clip(evidence, 120)}")
    return "; ".join(notes)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return f"{cut}…"


def _resolve_dest(dest: Path | None, *, dry_run: bool) -> Destination:
    """The destination, after the start-up sweep of what killed earlier runs left there."""
    root = dest if dest is not None else default_dest()
    if not dry_run:  # a dry run writes nothing into --dest, not even a recovery
        for note in sweep_stale(root):
            print(f"scaffold-new-model: {note}", file=sys.stderr)
    return resolve_destination(root)


def _print_summary(report: ResearchReport) -> None:
    open_items = report.needs_edit
    total = report.timings.get("total", 0.0)
    # The count a user acts on is the TODO comments written: answers sharing a place share one comment,
    # and answers with no place in the code (processor class, resize strategy) live in the report only.
    todos = len(report.todos())
    report_only = len(report.report_only_items())
    print(
        f"Researched {report.source.given} ({report.source.description}) in {total:.1f} s: "
        f"{len(report.answers)} questions, {len(open_items)} open: {todos} TODO(vlmforge) comment(s) in the "
        f"module, {report_only} in the report only."
    )
    for answer in open_items:
        print(f"  - {answer.question} [{answer.status}]: {answer.evidence.removeprefix('unknown: ')[:200]}")


def suite_command(name: str, module: Path | None) -> list[str]:
    """The pytest command that runs the conformance suite on ``tiny/<name>``.

    ``module`` is passed as ``--adapter-module`` (needed unless the installed vlmforge discovers it).
    """
    command = ["pytest", "--pyargs", "vlmforge.harness.suite", "--model", f"tiny/{name}"]
    return [*command, "--adapter-module", str(module)] if module is not None else command


def run_verify(name: str, module: Path, *, timeout: float = 1800.0) -> int:
    """Run the conformance suite on ``tiny/<name>`` with ``module`` registered; print the matrix."""
    with tempfile.TemporaryDirectory(prefix=temp_prefix("verify")) as tmp:
        report = Path(tmp) / "conformance"
        command = [
            sys.executable, "-m", *suite_command(name, module),
            "-q", "--conformance-report", str(report), "-p", "no:cacheprovider",
        ]  # fmt: skip
        print("$ " + shlex.join(command))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            print(f"conformance suite timed out after {timeout:.0f} s", file=sys.stderr)
            return EXIT_VERIFY_FAILED
        matrix = report.with_suffix(".md")
        if matrix.is_file():
            print(matrix.read_text())
        else:
            print((result.stdout + result.stderr)[-4000:])
        print(
            "conformance: "
            + ("passed" if result.returncode == 0 else f"FAILED (pytest exit {result.returncode})")
        )
        return 0 if result.returncode == 0 else EXIT_VERIFY_FAILED


def _check_output_path(path: Path | None, option: str) -> None:
    """Refuse an unwritable ``--report`` / ``--answers`` path before any work (it is written last)."""
    if path is None:
        return
    path = path.expanduser()
    if path.is_dir():
        raise ScaffoldError(f"{option} {path} is a folder: pass a file path, e.g. {path / 'research.md'}")
    if not path.parent.is_dir():
        raise ScaffoldError(f"{option} {path}: folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ScaffoldError(f"{option} {path} is not writable: pick a path you can write to")


def _write_output(path: Path, text: str, what: str) -> None:
    """Write a ``--report`` / ``--answers`` file; an unwritable path is bad input, not a traceback."""
    try:
        path.expanduser().write_text(text)
    except OSError as error:
        raise ScaffoldError(f"cannot write {what} to {path}: {error.strerror or error}") from error


def _scan_conflicts(
    destination: Destination, name: str, spec: dict[str, tuple[str, ...]], *, force: bool, dry_run: bool
) -> None:
    """The one conflict scan: file name, family name, model_type, checkpoints and aliases, against the
    destination's modules and every family this environment registers; refuse, or note it on a dry run."""
    if force:
        return
    try:
        conflicts = existing_family_conflicts(destination.package_dir, name, registry=True, **spec)
    except VLMForgeError as error:  # an installed adapter module that does not import
        raise ScaffoldError(f"cannot check for conflicting families: {error}") from error
    if conflicts and dry_run:
        print("note: a real run would refuse without --force: " + "; ".join(conflicts))
    elif conflicts:
        raise ScaffoldError(
            "family "
            + repr(name)
            + " would clash with what exists: "
            + "; ".join(conflicts)
            + ". A name, model_type, checkpoint or alias must belong to one family, or loading it picks "
            "one silently. Pick another --name / --alias / --checkpoint, or pass --force to write anyway."
        )


def _print_dry_run(markdown: str, rendered: RenderedFamily, destination: Destination) -> None:
    print(markdown)
    for rel in rendered.files:
        print(f"--- would write {destination.package_dir / rel.name}")
        print((rendered.root / rel).read_text())


def _print_next_steps(name: str, destination: Destination, written: list[Path]) -> None:
    """What was written and the exact commands that use it from here."""
    for path in written:
        print(f"wrote {path}")
    module = destination.module(name)
    todo_count = module.read_text().count("# TODO(vlmforge):")
    discovered = destination.is_checkout and destination.root == _CHECKOUT and installed_from_checkout()
    command = shlex.join(suite_command(name, None if discovered else module))
    print(f"Next: resolve the {todo_count} TODO(vlmforge) comment(s), then `{command}`.")
    if destination.is_checkout:
        answers = destination.answers(name).relative_to(destination.root)
        print(f"Update later with `copier update -a {answers}` (run in {destination.root}).")
    else:
        print(
            f"To load it without --adapter-module, add to {destination.root / 'pyproject.toml'} and "
            f'reinstall your project:\n  [project.entry-points."vlmforge.adapters"]\n'
            f'  {name} = "{destination.package}.{name}"'
        )


def _check_args(args: argparse.Namespace) -> str | None:
    """Checks that need no research: the given --name, option combinations, output paths."""
    if args.interactive and not sys.stdin.isatty():
        raise ScaffoldError(
            "--interactive needs a terminal for copier's questionnaire; run it without redirection"
        )
    _check_output_path(args.report, "--report")
    _check_output_path(args.answers, "--answers")
    return _check_name(args.name) if args.name is not None else None


def _check_release(report: ResearchReport) -> None:
    """Refuse, before anything is written, a model class the installed transformers cannot run: every
    measured answer of the research failed on the release's defect, and the module would carry them."""
    model_class = report.value("model_class")
    fact = broken_forward(model_class) if isinstance(model_class, str) else None
    if fact is not None:
        raise ScaffoldError(
            f"{model_class} cannot run on the installed transformers {transformers.__version__}: "
            f"{fact.defect} (a defect of that transformers release). The research measures the model on a "
            f"tiny forward, so it cannot be scaffolded here; nothing was written. Run scaffold-new-model "
            f"under transformers {fact.works_on}."
        )


def _run(args: argparse.Namespace, written: list[Path]) -> int:
    """Validate the input, research, render, validate, install, write the outputs, verify.

    ``written`` receives the installed paths as soon as the install commits (for the interrupt message).
    """
    given_name = _check_args(args)
    destination = _resolve_dest(args.dest, dry_run=args.dry_run)
    report = research(args.source, name=given_name, trust_remote_code=args.trust_remote_code)
    _check_release(report)
    name = given_name or _check_name(default_family_name(report.model_type))
    checkpoints = _checkpoints(report, args.checkpoint)
    aliases = _aliases(args.alias, checkpoints)
    spec = {
        "model_types": tuple(report.value("model_types", ())),
        "checkpoints": tuple(checkpoints),
        "aliases": tuple(aliases),
    }
    _scan_conflicts(destination, name, spec, force=args.force, dry_run=args.dry_run)
    answers = report.copier_answers(name, checkpoints=checkpoints, aliases=aliases, notes=_notes(report))
    rendered = render_family(answers, interactive=args.interactive, **_template_source(args))
    try:
        validate_module(rendered.module, rendered.name)
        if args.dry_run:
            _print_dry_run(report.to_markdown(), rendered, destination)
            _write_outputs(args, report, answers)
            return run_verify(rendered.name, rendered.module) if args.verify else 0
        _print_summary(report)
        # The scan above cleared `name`; install scans again only for a name the questionnaire changed.
        written += install(rendered, destination, force=args.force or rendered.name == name)
    finally:
        rendered.cleanup()
    _write_outputs(args, report, answers)
    _print_next_steps(rendered.name, destination, written)
    return run_verify(rendered.name, written[0]) if args.verify else 0


def _write_outputs(args: argparse.Namespace, report: ResearchReport, answers: dict) -> None:
    """``--report`` / ``--answers``, written only once the run has succeeded (never for a refused run)."""
    if args.report is not None:
        _write_output(args.report, report.to_markdown(), "the report")
    if args.answers is not None:
        text = yaml.safe_dump(answers, sort_keys=False, allow_unicode=True)
        _write_output(args.answers, text, "the answers")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scaffold-new-model``; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    written: list[Path] = []
    try:
        # Nothing the scaffolder does may reach the network: hub ids resolve from the local cache only.
        with offline():
            return _run(args, written)
    except ScaffoldError as error:
        print(f"scaffold-new-model: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupt:
        written = getattr(interrupt, "written", None) or written
        if written:
            print(
                "scaffold-new-model: interrupted after the family was installed: "
                + ", ".join(map(str, written))
                + ". Keep it, or delete these files to undo it.",
                file=sys.stderr,
            )
        else:
            print("scaffold-new-model: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
