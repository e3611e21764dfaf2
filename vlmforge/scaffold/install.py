"""Crash-safe install of a rendered family: a journal, staging files, one ``os.replace`` per file.

Every step passes :func:`checkpoint` (where a deferred Ctrl-C takes effect, and the tests' fault-injection
seam); the next run's :func:`sweep_stale` rolls back what a killed run left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmforge.scaffold.conflicts import existing_family_conflicts
from vlmforge.scaffold.destinations import ADAPTERS_RELDIR, PACKAGE_INIT, PROJECT_PACKAGE, Destination
from vlmforge.scaffold.errors import GenerationError, InstalledThenInterrupted, ScaffoldError

if TYPE_CHECKING:  # only annotations: generate imports this module (temp_prefix)
    from vlmforge.scaffold.generate import RenderedFamily


__all__ = [
    "KILL_AT_ENV",
    "TEMP_PREFIXES",
    "checkpoint",
    "install",
    "sweep_stale",
    "temp_prefix",
]

# ------------------------------------------------------------------------------- crash-safe install
#: Test seam: ``VLMFORGE_TEST_KILL_AT=<step>`` SIGKILLs this process at that install step, so tests can
#: check the next run's recovery deterministically (a real crash or kill -9 looks the same).
KILL_AT_ENV = "VLMFORGE_TEST_KILL_AT"
_STAGING, _BACKUP, _JOURNAL = ".vlmforge-staging", ".vlmforge-backup", ".vlmforge-install."
#: Prefixes of this package's temporary folders; each embeds its creator's pid for the start-up sweep.
TEMP_PREFIXES = ("vlmforge-scaffold-", "vlmforge-template-", "vlmforge-verify-")
_deferred_interrupt = threading.Event()


def checkpoint(step: str, *, interruptible: bool = True) -> None:
    """Called between the install's steps: where a deferred Ctrl-C takes effect, and the test seam."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if interruptible and _deferred_interrupt.is_set():
        _deferred_interrupt.clear()
        raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_at_checkpoints() -> Iterator[None]:
    """Turn Ctrl-C during the block into a KeyboardInterrupt at the next :func:`checkpoint`.

    Rollback then never runs half-interrupted itself; a Ctrl-C after the last checkpoint (the
    install is committed) is raised when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferred_interrupt.clear()
    previous = signal.signal(signal.SIGINT, lambda *_: _deferred_interrupt.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if _deferred_interrupt.is_set():
            _deferred_interrupt.clear()
            raise KeyboardInterrupt


def temp_prefix(kind: str) -> str:
    """``vlmforge-<kind>-<pid>-``: a temporary folder name the start-up sweep can attribute."""
    return f"vlmforge-{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _pid_of(name: str, marker: str) -> int | None:
    """The pid embedded in a staging/backup/journal/temp name (``...<marker><pid>-...``), if any."""
    _, found, rest = name.partition(marker)
    digits = rest.split("-", 1)[0].split(".", 1)[0]
    return int(digits) if found and digits.isdigit() else None


@dataclass
class _Plan:
    """The install journal: every file and folder the install may create, named before any is made."""

    pid: int
    family: str
    entries: list[dict[str, Any]]  # {"target", "staging", "backup" (or None: the target is new)}
    created_dirs: list[str]
    journal: Path

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "family": self.family,
                "entries": self.entries,
                "created_dirs": self.created_dirs,
            }
        )


def _rollback(plan: _Plan) -> None:
    """Undo ``plan`` from whatever state it reached; idempotent, so a crashed rollback can rerun.

    A target whose staging file is gone was replaced: restore its backup, or delete it if it is new.
    """
    for entry in reversed(plan.entries):
        target, staging = Path(entry["target"]), Path(entry["staging"])
        backup = Path(entry["backup"]) if entry["backup"] else None
        if backup is not None and backup.exists():
            if target.exists() and os.path.samefile(backup, target):
                backup.unlink()  # not replaced yet; rename() between two links of one file is a no-op
            else:
                os.replace(backup, target)
        elif backup is None and not staging.exists() and target.exists():
            target.unlink()
        staging.unlink(missing_ok=True)
    for directory in reversed(plan.created_dirs):
        with contextlib.suppress(OSError):  # only if empty: never remove what someone else put there
            Path(directory).rmdir()
    plan.journal.unlink(missing_ok=True)


def _write_error(directory: Path, error: OSError) -> ScaffoldError:
    reason = error.strerror or str(error)
    return ScaffoldError(
        f"cannot write into {directory} ({reason}). Nothing was written. Pass a writable --dest (your "
        "project's root), or fix the folder's permissions."
    )


def _plan(rendered: RenderedFamily, destination: Destination) -> tuple[_Plan, list[bytes]]:
    """Name every file and folder the install will create (the journal), with each file's content."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    contents: list[bytes] = []
    targets: list[Path] = []
    for rel in rendered.files:
        if ADAPTERS_RELDIR not in rel.parents:
            raise GenerationError(
                f"the template rendered {rel} outside {ADAPTERS_RELDIR}; nothing was written"
            )
        targets.append(destination.package_dir / rel.relative_to(ADAPTERS_RELDIR))
        contents.append((rendered.root / rel).read_bytes())
    init = destination.package_dir / "__init__.py"
    if not destination.is_checkout and not init.exists():  # the project's package needs one to import
        targets.append(init)
        contents.append(PACKAGE_INIT.encode())
    entries = [
        {
            "target": str(target),
            "staging": str(target.parent / f".{target.name}.{tag}{_STAGING}"),
            "backup": str(target.parent / f".{target.name}.{tag}{_BACKUP}") if target.exists() else None,
        }
        for target in targets
    ]
    created = [str(d) for d in (destination.root, destination.package_dir) if not d.exists()]
    anchor = next(
        d for d in (destination.package_dir, destination.root, destination.root.parent) if d.is_dir()
    )
    journal = anchor / f"{_JOURNAL}{tag}.json"
    return _Plan(os.getpid(), rendered.name, entries, list(dict.fromkeys(created)), journal), contents


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never overwrite) with ``data``, flushed to disk before any rename relies on it."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _apply(plan: _Plan, contents: list[bytes]) -> None:
    """Journal, folders, staging files, backups, renames: a :func:`checkpoint` between every two."""
    journal_tmp = plan.journal.with_name(plan.journal.name + ".tmp")
    _write_new(journal_tmp, plan.to_json().encode())
    os.replace(journal_tmp, plan.journal)
    checkpoint("journaled")
    for directory in plan.created_dirs:
        Path(directory).mkdir()
        checkpoint(f"mkdir:{Path(directory).name}")
    for index, (entry, data) in enumerate(zip(plan.entries, contents)):
        _write_new(Path(entry["staging"]), data)
        checkpoint(f"staged:{index}")
    for index, entry in enumerate(plan.entries):
        if entry["backup"]:
            try:
                os.link(entry["target"], entry["backup"])
            except OSError:  # a file system without hard links: a copy restores as well
                shutil.copy2(entry["target"], entry["backup"])
            checkpoint(f"backup:{index}")
    for index, entry in enumerate(plan.entries):
        checkpoint(f"replace:{index}")
        os.replace(entry["staging"], entry["target"])
        checkpoint(f"replaced:{index}")


def install(rendered: RenderedFamily, destination: Destination, *, force: bool = False) -> list[Path]:
    """Move the rendered files into ``destination`` crash-safely; return the written paths.

    A journal naming every file and folder the install may create is written first; then staging
    files, backups of overwritten targets, and one ``os.replace`` per file; deleting the journal is
    the commit. An exception or Ctrl-C at any point rolls back to the state before; after a crash or
    SIGKILL, :func:`sweep_stale` in the next run rolls back from the journal.

    Raises:
        ScaffoldError: the family exists (without ``force``) or the destination is not writable.
        InstalledThenInterrupted: Ctrl-C arrived after the commit (the family is installed).
    """
    if not force:
        conflicts = existing_family_conflicts(destination.package_dir, rendered.name)
        if conflicts:
            raise ScaffoldError("; ".join(conflicts) + ". Pass --force to overwrite it.")
    plan, contents = _plan(rendered, destination)
    committed = False
    try:
        with _interrupts_at_checkpoints():
            try:
                _apply(plan, contents)
                plan.journal.unlink()  # the commit
                committed = True
            except BaseException as error:
                _rollback_or_explain(plan)
                if isinstance(error, OSError):
                    raise _write_error(destination.package_dir, error) from error
                raise
            checkpoint("committed", interruptible=False)
            for entry in plan.entries:
                if entry["backup"]:
                    Path(entry["backup"]).unlink(missing_ok=True)
    except KeyboardInterrupt as interrupt:
        if not committed:
            raise
        raise InstalledThenInterrupted([Path(entry["target"]) for entry in plan.entries]) from interrupt
    return [Path(entry["target"]) for entry in plan.entries]


def _rollback_or_explain(plan: _Plan) -> None:
    """Roll back; if even that fails, say exactly what to clean up by hand."""
    try:
        _rollback(plan)
    except OSError as error:
        raise ScaffoldError(
            f"the install failed and so did its rollback ({error}). The journal {plan.journal} lists "
            "what it touched; the next scaffold-new-model run retries the rollback from it."
        ) from error


def _stale_tag_pid(name: str) -> int | None:
    """The pid in a staging / backup / journal file name this module made, else None."""
    for suffix in (_STAGING, _BACKUP):
        if name.endswith(suffix):
            tag = name[: -len(suffix)].rsplit(".", 1)[-1]
            break
    else:
        if not name.startswith(_JOURNAL):
            return None
        tag = name[len(_JOURNAL) :].split(".", 1)[0]
    pid = tag.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _recover_journal(journal: Path, pid: int) -> str:
    try:
        data = json.loads(journal.read_text())
        plan = _Plan(data["pid"], data["family"], data["entries"], data["created_dirs"], journal)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ScaffoldError(
            f"{journal} is the unreadable install journal of a scaffold-new-model run (pid {pid}) that "
            f"crashed ({error}). Check {journal.parent} by hand for a half-written family, then delete it."
        ) from error
    _rollback_or_explain(plan)
    return (
        f"recovered: an earlier run (pid {pid}) was killed while installing family {plan.family!r}; "
        "its partial files were removed and overwritten files restored"
    )


def sweep_stale(root: Path) -> list[str]:
    """Clean up after scaffold-new-model runs that died (SIGKILL, power loss); return what was done.

    Journals of dead processes are rolled back (a half-installed family is undone), then their
    staging and backup files and their temporary folders are removed. Live runs are left alone.
    """
    notes: list[str] = []
    root = Path(os.path.abspath(root.expanduser()))
    # Every folder a journal or staging file of an install into ``root`` can be in (see _plan).
    folders = [root / ADAPTERS_RELDIR, root / PROJECT_PACKAGE, root, root.parent]
    folders = [d for d in dict.fromkeys(folders) if d.is_dir()]
    for folder in folders:
        for journal in sorted(folder.glob(f"{_JOURNAL}*.json")):
            pid = _stale_tag_pid(journal.name)
            if pid is not None and not _pid_alive(pid):
                notes.append(_recover_journal(journal, pid))
    for folder in [d for d in folders if d.is_dir()]:  # a rollback may have removed some
        for path in sorted(folder.iterdir()):
            pid = _stale_tag_pid(path.name)
            if pid is not None and not _pid_alive(pid) and path.is_file():
                path.unlink(missing_ok=True)
                notes.append(f"removed {path}, left by a killed run (pid {pid})")
    temp = Path(tempfile.gettempdir())
    for path in sorted(temp.glob("vlmforge-*-*")):
        prefix = next((p for p in TEMP_PREFIXES if path.name.startswith(p)), None)
        pid = path.name[len(prefix) :].split("-", 1)[0] if prefix else ""
        if pid.isdigit() and not _pid_alive(int(pid)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed {path}, left by a killed run (pid {pid})")
    return notes
