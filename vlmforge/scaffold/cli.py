"""``scaffold-new-model``: research a VLM architecture and write its vlmforge family module.

Examples::

    scaffold-new-model llava_next --name llava_next          # a model_type (transformers' default config)
    scaffold-new-model /ckpts/my-llava --alias my-llava       # a local checkpoint directory
    scaffold-new-model Qwen/Qwen2.5-VL-7B-Instruct --dry-run  # a hub id from the local HF cache / store
    scaffold-new-model gemma3 --verify --report gemma3.md     # then run the conformance suite on it

Exit codes: 0 success, 1 the conformance suite failed (``--verify``), 2 bad input (the message says
what to do; nothing was written), 130 interrupted (nothing was written).
"""

from __future__ import annotations

import argparse
import keyword
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from vlmforge.scaffold.errors import EXIT_BAD_INPUT, EXIT_VERIFY_FAILED, ScaffoldError
from vlmforge.scaffold.generate import (
    TEMPLATE_DIR,
    RenderedFamily,
    answers_relpath,
    default_template,
    existing_family_conflicts,
    install,
    render_family,
    validate_module,
)
from vlmforge.scaffold.research import ResearchReport, default_family_name, offline, research

__all__ = ["build_parser", "default_dest", "main", "run_verify"]

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_dest() -> Path:
    """The project that contains this ``vlmforge`` package (``<root>/vlmforge/adapters``)."""
    return Path(__file__).resolve().parents[2]


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
        "--dest", type=Path, default=None, help="project to write into (default: this vlmforge checkout)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the research and the files; write nothing into --dest"
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
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"--name {name!r} is not a valid family id: use a lowercase Python identifier (letters a-z, "
            "digits, underscores, not starting with a digit, not a keyword), e.g. --name my_vlm. It becomes "
            "the module "
            "file name and the tiny model name tiny/<name>."
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
    """Why a measured capability is False, in one line (what the hand-written modules note)."""
    notes = []
    for key in ("contiguous_image_tokens", "supports_batching", "strict_residual_stream"):
        answer = report.answers.get(key)
        if answer is not None and answer.value is False:
            evidence = answer.evidence.removeprefix("tiny model: ")
            notes.append(f"{key}=False measured: {evidence[:120]}")
    return "; ".join(notes)


def _resolve_dest(dest: Path | None) -> Path:
    dest = (dest or default_dest()).expanduser()
    if not dest.is_dir():
        raise ScaffoldError(
            f"--dest {dest} is not an existing directory: point at the root of a project that has (or should "
            "get) a vlmforge/adapters folder"
        )
    return dest.resolve()


def _print_summary(report: ResearchReport) -> None:
    open_items = report.needs_edit
    total = report.timings.get("total", 0.0)
    print(
        f"Researched {report.source.given} ({report.source.description}) in {total:.1f} s: "
        f"{len(report.answers)} questions, {len(open_items)} need a hand edit."
    )
    for answer in open_items:
        print(f"  - {answer.question} [{answer.status}]: {answer.evidence.removeprefix('unknown: ')[:200]}")


def run_verify(name: str, module: Path, *, timeout: float = 1800.0) -> int:
    """Run the conformance suite on ``tiny/<name>`` with ``module`` registered; print the matrix."""
    with tempfile.TemporaryDirectory(prefix="vlmforge-verify-") as tmp:
        report = Path(tmp) / "conformance"
        command = [
            sys.executable, "-m", "pytest", "--pyargs", "vlmforge.harness.suite",
            "--model", f"tiny/{name}", "--adapter-module", str(module),
            "-q", "--conformance-report", str(report), "-p", "no:cacheprovider",
        ]  # fmt: skip
        print("$ " + " ".join(command))
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


def _write_output(path: Path, text: str, what: str) -> None:
    """Write a ``--report`` / ``--answers`` file; an unwritable path is bad input, not a traceback."""
    try:
        path.write_text(text)
    except OSError as error:
        raise ScaffoldError(f"cannot write {what} to {path}: {error.strerror or error}") from error


def _scan_conflicts(dest: Path, name: str, report: ResearchReport, *, force: bool, dry_run: bool) -> None:
    """The one conflict scan: by file name, family name and model_type; refuse, or note it on a dry run."""
    if force:
        return
    conflicts = existing_family_conflicts(dest, name, tuple(report.value("model_types", ())))
    if conflicts and dry_run:
        print("note: a real run would refuse without --force: " + "; ".join(conflicts))
    elif conflicts:
        raise ScaffoldError(
            "; ".join(conflicts)
            + f". Refusing to write family {name!r} without --force (or pick another --name)."
        )


def _print_dry_run(markdown: str, rendered: RenderedFamily, dest: Path) -> None:
    print(markdown)
    for rel in rendered.files:
        print(f"--- would write {dest / rel}")
        print((rendered.root / rel).read_text())


def _print_next_steps(name: str, written: list[Path]) -> None:
    for path in written:
        print(f"wrote {path}")
    todo_count = sum(path.read_text().count("# TODO(vlmforge):") for path in written if path.suffix == ".py")
    print(
        f"Next: resolve the {todo_count} TODO(vlmforge) comment(s), then "
        f"`pytest --pyargs vlmforge.harness.suite --model tiny/{name}`. "
        f"Update later with `copier update -a {answers_relpath(name)}`."
    )


def _run(args: argparse.Namespace) -> int:
    """Validate the input, research, write the optional outputs, render, validate, install, verify."""
    dest = _resolve_dest(args.dest)
    given_name = _check_name(args.name) if args.name is not None else None
    if args.interactive and not sys.stdin.isatty():
        raise ScaffoldError(
            "--interactive needs a terminal for copier's questionnaire; run it without redirection"
        )
    report = research(args.source, name=given_name, trust_remote_code=args.trust_remote_code)
    name = given_name or _check_name(default_family_name(report.model_type))
    checkpoints = _checkpoints(report, args.checkpoint)
    aliases = _aliases(args.alias, checkpoints)
    markdown = report.to_markdown()
    if args.report is not None:
        _write_output(args.report, markdown, "the report")
    _scan_conflicts(dest, name, report, force=args.force, dry_run=args.dry_run)
    answers = report.copier_answers(name, checkpoints=checkpoints, aliases=aliases, notes=_notes(report))
    if args.answers is not None:
        _write_output(
            args.answers, yaml.safe_dump(answers, sort_keys=False, allow_unicode=True), "the answers"
        )
    rendered = render_family(answers, interactive=args.interactive, **_template_source(args))
    try:
        validate_module(rendered.module, rendered.name)
        if args.dry_run:
            _print_dry_run(markdown, rendered, dest)
            return 0
        _print_summary(report)
        # The scan above cleared `name`; install scans again only for a name the questionnaire changed.
        written = install(rendered, dest, force=args.force or rendered.name == name)
    finally:
        rendered.cleanup()
    _print_next_steps(rendered.name, written)
    return run_verify(rendered.name, written[0]) if args.verify else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scaffold-new-model``; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        # Nothing the scaffolder does may reach the network: hub ids resolve from the local cache only.
        with offline():
            return _run(args)
    except ScaffoldError as error:
        print(f"scaffold-new-model: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("scaffold-new-model: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
