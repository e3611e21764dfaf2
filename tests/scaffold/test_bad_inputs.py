"""Every bad input across the three surfaces ends in a clear message, the right exit code, and no trace.

One table per surface (runtime, harness plugin, scaffolder), each row: the input, the error type or exit
code, and the words the message must contain (what was wrong and what to do). Then the install's
fault injection: Ctrl-C and SIGKILL at every step of the install, deterministically through
:func:`vlmforge.scaffold.install.checkpoint`, and the next run's start-up sweep.
"""

from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmforge.core.errors import (
    CheckpointLoadError,
    DeviceError,
    InputError,
    InvalidHookError,
    UnknownModelError,
    VLMForgeError,
)
from vlmforge.core.registry import ModelRegistry
from vlmforge.core.runtime import HookedVLM
from vlmforge.scaffold import cli, install
from vlmforge.scaffold.cli import main
from vlmforge.scaffold.destinations import Destination, resolve_destination
from vlmforge.scaffold.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from vlmforge.scaffold.generate import RenderedFamily, render_family
from vlmforge.scaffold.install import KILL_AT_ENV

SUITE = ("--pyargs", "vlmforge.harness.suite", "-p", "no:cacheprovider", "-p", "no:xdist")
IMAGE = Image.new("RGB", (32, 32), "red")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (folders show through their files)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def our_temp_folders() -> set[str]:
    """This process's scaffolder temporary folders (each test must leave none behind)."""
    prefixes = tuple(f"{prefix}{os.getpid()}-" for prefix in install.TEMP_PREFIXES)
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith(prefixes)}


# =================================================================================================
# Runtime: HookedVLM
# =================================================================================================
def _llava(tiny: Callable[..., HookedVLM]) -> tuple[HookedVLM, Any]:
    vlm = tiny("llava")
    return vlm, vlm.prepare_messages("What color?", IMAGE)


def _hook(vlm: HookedVLM, inputs: Any, value: Callable[[Any], Any]) -> None:
    with vlm.run_with_hooks([("lm.blocks.0.attn.hook_z", lambda z, hook: value(z))]):
        vlm.forward(inputs)


def _corrupt_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.json").write_text(text)
    HookedVLM.from_pretrained(str(tmp_path))


RUNTIME_CASES: dict[str, tuple[Callable[[HookedVLM, Any, Path], Any], type[Exception], list[str]]] = {
    # --- from the issue
    "max_new_tokens=0": (lambda v, i, t: v.generate(i, max_new_tokens=0), InputError, ["whole number >= 1"]),
    "max_new_tokens=-1": (lambda v, i, t: v.generate(i, max_new_tokens=-1), InputError, [">= 1", "-1"]),
    "max_new_tokens='5'": (lambda v, i, t: v.generate(i, max_new_tokens="5"), InputError, ["'5'"]),
    "max_new_tokens=1.5": (lambda v, i, t: v.generate(i, max_new_tokens=1.5), InputError, ["1.5"]),
    "prompt over max positions": (
        lambda v, i, t: v.forward(v.prepare_messages("word " * 4000, IMAGE)),
        InputError,
        ["maximum of 4096 positions", "shorten"],
    ),
    "forward without pixel_values": (
        lambda v, i, t: v.forward({k: x for k, x in i.items() if k != "pixel_values"}),
        InputError,
        ["no pixel_values", "prepare_messages"],
    ),
    "forward('hello')": (lambda v, i, t: v.forward("hello"), InputError, ["got str", "prepare_messages"]),
    "hook returns numpy": (
        lambda v, i, t: _hook(v, i, lambda z: z.numpy()),
        InvalidHookError,
        ["numpy.ndarray", "not a torch.Tensor"],
    ),
    "device cuda without GPU": (
        lambda v, i, t: HookedVLM.from_pretrained("tiny/llava", device="cuda:99"),
        DeviceError,
        ["not available", "'cpu' or 'auto'"],
    ),
    "corrupt config.json": (
        lambda v, i, t: _corrupt_config(t, '{"model_type": "llava",'),
        CheckpointLoadError,
        ["config.json", "not a readable JSON", "re-download"],
    ),
    "config.json is a list": (
        lambda v, i, t: _corrupt_config(t, "[1, 2]"),
        CheckpointLoadError,
        ["JSON list", "re-download"],
    ),
    # --- more of our own
    "max_new_tokens=True": (lambda v, i, t: v.generate(i, max_new_tokens=True), InputError, ["True"]),
    "max_new_tokens=None": (lambda v, i, t: v.generate(i, max_new_tokens=None), InputError, ["None"]),
    "generation past max positions": (
        lambda v, i, t: v.generate(i, max_new_tokens=5000),
        InputError,
        ["5000 new tokens", "generate fewer"],
    ),
    "forward(None)": (lambda v, i, t: v.forward(None), InputError, ["got NoneType"]),
    "forward(list of ids)": (lambda v, i, t: v.forward([[1, 2, 3]]), InputError, ["got list"]),
    "hook returns a list": (lambda v, i, t: _hook(v, i, lambda z: z.tolist()), InvalidHookError, ["list"]),
    "hook returns wrong shape": (
        lambda v, i, t: _hook(v, i, lambda z: z[:, :1]),
        InvalidHookError,
        ["returned shape", "return None or a tensor of shape"],
    ),
    "hooks not pairs": (
        lambda v, i, t: v.run_with_hooks(["lm.blocks.0.hook_resid_post"]).__enter__(),
        InvalidHookError,
        ["(hook_name, function) pairs"],
    ),
    "unknown hook name": (
        lambda v, i, t: v.run_with_cache(["lm.blocks.0.hook_nope"]).__enter__(),
        InvalidHookError,
        ["hook_nope"],
    ),
    "device name garbage": (
        lambda v, i, t: HookedVLM.from_pretrained("tiny/llava", device="gpu0"),
        DeviceError,
        ["not a device name", "'cuda:<index>'"],
    ),
    "empty model name": (lambda v, i, t: HookedVLM.from_pretrained(""), UnknownModelError, ["non-empty"]),
    "dir without config.json": (
        lambda v, i, t: HookedVLM.from_pretrained(str(t)),
        UnknownModelError,
        ["no config.json", "checkpoint directory"],
    ),
    "empty config.json": (
        lambda v, i, t: _corrupt_config(t, "") or None,
        CheckpointLoadError,
        ["not a readable JSON"],
    ),
    "empty task": (lambda v, i, t: v.prepare_messages("  ", IMAGE), InputError, ["empty"]),
    "missing image file": (
        lambda v, i, t: v.prepare_messages("Hi?", t / "nope.png"),
        InputError,
        ["cannot read image", "nope.png"],
    ),
    "image is a number": (lambda v, i, t: v.prepare_messages("Hi?", 3), InputError, ["PIL.Image", "int"]),
    "zero-size image": (
        lambda v, i, t: v.prepare_messages("Hi?", Image.new("RGB", (0, 4))),
        InputError,
        ["0x4"],
    ),
    "batch lengths differ": (
        lambda v, i, t: v.prepare_messages_batch(["a", "b"], [IMAGE]),
        InputError,
        ["2 tasks but 1 images"],
    ),
    "empty batch": (lambda v, i, t: v.prepare_messages_batch([], []), InputError, ["at least one"]),
}


@pytest.mark.parametrize("case", list(RUNTIME_CASES))
def test_runtime_bad_input(case: str, tiny: Callable[..., HookedVLM], tmp_path: Path) -> None:
    action, error_type, expected = RUNTIME_CASES[case]
    vlm, inputs = _llava(tiny)
    with pytest.raises(error_type) as raised:
        action(vlm, inputs, tmp_path)
    assert isinstance(raised.value, VLMForgeError)  # one of ours, never a raw torch / JSON error
    message = str(raised.value)
    for text in expected:
        assert text in message, message
    assert "HookedVLM(" not in message and "Sequential(" not in message  # no model repr dumped into it


def test_truncated_weights_name_the_checkpoint(tiny: Callable[..., HookedVLM], tmp_path: Path) -> None:
    checkpoint = tmp_path / "my-llava"
    tiny("llava").model.save_pretrained(checkpoint)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated mid-header
    with pytest.raises(CheckpointLoadError) as raised:
        HookedVLM.from_pretrained(str(checkpoint), device="cpu")
    assert str(checkpoint) in str(raised.value) and "re-download" in str(raised.value)
    weights.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointLoadError, match="truncated or corrupt"):
        HookedVLM.from_pretrained(str(checkpoint), device="cpu")


# =================================================================================================
# Harness: the pytest plugin
# =================================================================================================
def _harness_setup(case: str, tmp: Path) -> list[str]:
    """Files a harness case needs; returns its extra command-line arguments."""
    if case in ("corrupt config", "config is a string", "text-only checkpoint"):
        text = {
            "corrupt config": "{not json",
            "config is a string": '"llava"',
            "text-only checkpoint": json.dumps(
                {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
            ),
        }[case]
        (tmp / "ckpt").mkdir()
        (tmp / "ckpt/config.json").write_text(text)
        return ["--model", str(tmp / "ckpt")]
    if case in ("adapter module registers nothing", "adapter module raises"):
        body = {"adapter module registers nothing": "X = 1\n", "adapter module raises": "1 / 0\n"}[case]
        (tmp / "my_family.py").write_text(body)
        return ["--adapter-module", str(tmp / "my_family.py")]
    if case == "report path is a folder":
        (tmp / "report.json").mkdir()
        return ["--conformance-report", str(tmp / "report")]
    return []


HARNESS_CASES: dict[str, tuple[list[str], int, list[str]]] = {
    # --- from the issue
    "unwritable report path": (["--conformance-report", "/proc/version/x/report"], 4, ["cannot create"]),
    "corrupt config": ([], 4, ["not a readable JSON", "re-download"]),
    "config is a string": ([], 4, ["JSON str"]),
    "text-only checkpoint": ([], 1, ["no conformance check ran", "not a supported image+text VLM"]),
    "adapter module registers nothing": ([], 4, ["registered no family", "@ModelRegistry.register"]),
    "bad dtype": (["--model-dtype", "float8"], 4, ["float8", "float32, bfloat16, float16"]),
    "bad device": (["--model-device", "gpu"], 4, ["not a device name", "'cpu'"]),
    "cuda without GPU": (["--model-device", "cuda:99"], 4, ["not available", "'cpu' or 'auto'"]),
    # --- more of our own
    "report path is a folder": ([], 4, ["report.json", "a folder or not writable"]),
    "adapter module raises": ([], 4, ["failed to import", "ZeroDivisionError"]),
    "adapter module missing": (["--adapter-module", "/nonexistent/fam.py"], 4, ["no such .py file"]),
    "adapter module bad dotted name": (["--adapter-module", "no_such_pkg.fam"], 4, ["failed to import"]),
    "unknown model": (["--model", "no-such-model"], 4, ["unknown model", "llava-7b"]),
    "tiny and real": (["--tiny", "--real"], 4, ["mutually exclusive"]),
    "unknown tiny model": (["--model", "tiny/nope"], 4, ["unknown tiny model"]),
    "dir without config": (["--model", "/"], 4, ["no config.json"]),
}


@pytest.mark.parametrize("case", list(HARNESS_CASES))
def test_harness_bad_input(case: str, pytester: pytest.Pytester, tmp_path: Path) -> None:
    argv, code, expected = HARNESS_CASES[case]
    before = set(ModelRegistry.adapters())
    result = pytester.runpytest_inprocess(*SUITE, *_harness_setup(case, tmp_path), *argv, "-rs")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == code, output
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert not list(pytester.path.glob("*.json")) and not (tmp_path / "report.md").exists()
    for name in set(ModelRegistry.adapters()) - before:  # an in-process run registers into this process
        ModelRegistry.unregister(name)


# =================================================================================================
# Scaffolder: scaffold-new-model
# =================================================================================================
@pytest.fixture
def fast_research(monkeypatch: pytest.MonkeyPatch, researched) -> None:
    """Serve the CLI memoized research (the CLI logic, not research, is under test here)."""
    monkeypatch.setattr(cli, "research", lambda source, **_: researched(source))


def _scaffold_setup(case: str, tmp: Path) -> Path:
    """The ``--dest`` (and other files) a scaffolder case needs."""
    if case == "empty existing dest":
        (tmp / "empty").mkdir()
        return tmp / "empty"
    if case == "dest is a file":
        (tmp / "file").write_text("x")
        return tmp / "file"
    if case == "dest is the adapters package":
        (tmp / "vlmforge/adapters").mkdir(parents=True)
        return tmp / "vlmforge/adapters"
    if case == "report is a folder":
        (tmp / "report.md").mkdir()
    return tmp / "project"


SCAFFOLD_CASES: dict[str, tuple[list[str], list[str]]] = {
    # --- from the issue
    "another family's alias and checkpoint": (
        ["llava", "--name", "newfam", "--checkpoint", "llava-hf/llava-1.5-7b-hf", "--alias", "llava-7b"],
        ["alias llava-7b", "checkpoint llava-hf/llava-1.5-7b-hf", "model_type llava", "--force"],
    ),
    "--name __init__ --force": (["llava", "--name", "__init__", "--force"], ["not a valid family id"]),
    "empty existing dest": (["llava", "--name", "x1"], ["not a Python project", "does not exist yet"]),
    "report then refused": (["llava", "--report", "{tmp}/r.md"], ["installed family 'llava'", "--force"]),
    # --- more of our own
    "installed family's name": (["llava_next", "--name", "llava"], ["family named 'llava'"]),
    "installed family's model_type": (["idefics3"], ["model_type idefics3", "smolvlm"]),
    "--name _private": (["llava", "--name", "_private"], ["starts with a letter"]),
    "--name __main__": (["llava", "--name", "__main__"], ["not a valid family id"]),
    "--name with a dash": (["llava", "--name", "my-vlm"], ["not a valid family id"]),
    "--name uppercase": (["llava", "--name", "MyVlm"], ["lowercase"]),
    "--name keyword": (["llava", "--name", "import"], ["keyword"]),
    "--name digit first": (["llava", "--name", "7b"], ["not a valid family id"]),
    "empty source": ([""], ["give a hub id"]),
    "dest is a file": (["llava", "--name", "x2"], ["is a file"]),
    "dest parent missing": (["llava", "--dest", "{tmp}/a/b/c"], ["does not exist"]),
    "dest inside site-packages": (["llava", "--dest", site.getsitepackages()[0]], ["site-packages"]),
    "dest is the adapters package": (["llava", "--name", "x3"], ["not a Python project"]),
    "report is a folder": (["llava", "--report", "{tmp}/report.md"], ["is a folder"]),
    "report folder missing": (["llava", "--report", "{tmp}/no/r.md"], ["does not exist"]),
    "answers is a folder": (["llava", "--answers", "{tmp}"], ["is a folder"]),
    "checkpoint not org/name": (["llava", "--checkpoint", "justaname"], ["not a hub id"]),
    "checkpoint with 3 parts": (["llava", "--checkpoint", "a/b/c"], ["not a hub id"]),
    "checkpoint with a space": (["llava", "--checkpoint", "a b/c"], ["not a hub id"]),
    "alias with a space": (["llava", "--checkpoint", "a/b", "--alias", "my alias"], ["an alias is letters"]),
    "alias without checkpoint": (["llava", "--alias", "lv"], ["needs a checkpoint to point at"]),
    "alias to a foreign checkpoint": (
        ["llava", "--checkpoint", "a/b", "--alias", "x=c/d"],
        ["not one of the family's checkpoints"],
    ),
    "template missing": (["llava", "--force", "--template", "{tmp}/no-template"], ["rendering the family"]),
    "not a VLM": (["llama"], ["not an image+text decoder VLM"]),
    "encoder-decoder": (["t5"], ["encoder-decoder"]),
    "unknown model_type": (["brand_new_vlm_type"], ["installed transformers 5."]),
    "missing checkpoint dir": (["./no/such/checkpoint"], ["no such directory"]),
    "uncached hub id": (["someorg/not-cached-anywhere"], ["not in the local Hugging Face cache"]),
    "interactive without a terminal": (["llava", "--interactive"], ["needs a terminal"]),
}


@pytest.mark.parametrize("case", list(SCAFFOLD_CASES))
def test_scaffold_bad_input(case: str, tmp_path: Path, capsys, fast_research: None) -> None:
    argv, expected = SCAFFOLD_CASES[case]
    dest = _scaffold_setup(case, tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    before, temps = snapshot(tmp_path), our_temp_folders()
    if "--dest" not in argv:
        argv += ["--dest", str(dest)]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("scaffold-new-model: error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert snapshot(tmp_path) == before and not (tmp_path / "project").exists()
    assert our_temp_folders() == temps


def test_dry_run_verify_runs_the_suite_on_the_rendered_module(
    tmp_path: Path, capsys, fast_research: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules: list[str] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        if command[0] == "git":
            return subprocess.CompletedProcess(command, 1, "", "")
        modules.append(Path(command[command.index("--adapter-module") + 1]).read_text())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert main(["llava", "--name", "dry_fam", "--dry-run", "--verify", "--dest", str(tmp_path / "p")]) == 0
    assert (
        '@ModelRegistry.register("dry_fam")' in modules[0]
        and "conformance: passed" in capsys.readouterr().out
    )
    assert list(tmp_path.iterdir()) == []


def test_next_command_names_the_module_outside_the_installed_project(
    tmp_path: Path, capsys, fast_research: None
) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    assert main(["llava", "--name", "mine_fam", "--dest", str(tmp_path), "--force"]) == 0
    out = capsys.readouterr().out
    module = tmp_path / "vlmforge_adapters/mine_fam.py"
    assert f"--model tiny/mine_fam --adapter-module {module}" in out
    assert '[project.entry-points."vlmforge.adapters"]' in out


# =================================================================================================
# The install under Ctrl-C and SIGKILL at every step
# =================================================================================================
@pytest.fixture(scope="module")
def rendered(researched) -> Iterator[RenderedFamily]:
    report = researched("llava")
    family = render_family(report.copier_answers("faulty", checkpoints=[], aliases={}, notes=""))
    yield family
    family.cleanup()


def _scenario(kind: str, tmp_path: Path) -> Destination:
    """``new``: a project folder created by the install; ``overwrite``: --force over a checkout's files."""
    if kind == "new":
        return resolve_destination(tmp_path / "project")
    adapters = tmp_path / "project/vlmforge/adapters"
    adapters.mkdir(parents=True)
    (adapters / "faulty.py").write_text("# hand-written, must survive\n")
    (adapters / ".copier-answers.faulty.yml").write_text("name: faulty\n")
    return resolve_destination(tmp_path / "project")


def _steps(rendered: RenderedFamily, kind: str, tmp_path: Path, monkeypatch) -> list[str]:
    """The install's checkpoint names, recorded from a clean run (then undone)."""
    steps: list[str] = []
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(install, "checkpoint", lambda step, **_: steps.append(step))
    install.install(rendered, _scenario(kind, scratch), force=True)
    monkeypatch.undo()
    return steps


def _assert_untouched(tmp_path: Path, before: dict[str, bytes]) -> None:
    assert snapshot(tmp_path / "project") == before
    leftovers = [p.name for p in tmp_path.rglob(".*") if "vlmforge-" in p.name]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("kind", ["new", "overwrite"])
def test_ctrl_c_at_every_step_rolls_back(
    kind: str, rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _steps(rendered, kind, tmp_path, monkeypatch)
    assert len(steps) >= 8 and "committed" in steps
    for step in steps[: steps.index("committed")]:
        root = tmp_path / step.replace(":", "_")
        root.mkdir()
        destination = _scenario(kind, root)
        before = snapshot(root / "project")

        def interrupt(name: str, *, _at: str = step, **_: Any) -> None:
            if name == _at:
                raise KeyboardInterrupt

        monkeypatch.setattr(install, "checkpoint", interrupt)
        with pytest.raises(KeyboardInterrupt):
            install.install(rendered, destination, force=True)
        _assert_untouched(root, before)
        assert (root / "project").exists() == (kind == "overwrite"), step  # a created folder goes too


def test_a_real_sigint_is_deferred_to_the_next_step(
    rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_checkpoint = install.checkpoint

    def send_sigint(step: str, **kwargs: Any) -> None:
        if step == "replaced:0":  # between the two renames: the handler must only note it
            os.kill(os.getpid(), signal.SIGINT)
        real_checkpoint(step, **kwargs)

    monkeypatch.setattr(install, "checkpoint", send_sigint)
    with pytest.raises(KeyboardInterrupt):
        install.install(rendered, _scenario("new", tmp_path), force=True)
    _assert_untouched(tmp_path, {})


def _killed_install(rendered, destination: Destination, step: str) -> bool:
    """Run the install in a forked child that SIGKILLs itself at ``step``; whether it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.environ[KILL_AT_ENV] = step
            install.install(rendered, destination, force=True)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("kind", ["new", "overwrite"])
def test_sigkill_at_every_step_is_recovered_by_the_next_run(
    kind: str, rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _steps(rendered, kind, tmp_path, monkeypatch)
    for step in steps:
        root = tmp_path / step.replace(":", "_")
        root.mkdir()
        destination = _scenario(kind, root)
        before = snapshot(root / "project")
        assert _killed_install(rendered, destination, step), step
        notes = install.sweep_stale(root / "project")
        if step == "committed":  # killed after the commit: the family is installed, the backups go
            assert snapshot(destination.package_dir)["faulty.py"].startswith(b'"""') or kind == "new"
            assert not [p for p in root.rglob(".*") if "vlmforge-" in p.name]
            continue
        assert notes, step
        _assert_untouched(root, before)
        # ... and the next install is not refused by what the killed one left.
        install.install(rendered, resolve_destination(root / "project"), force=True)


def test_cli_after_a_sigkill_between_the_renames_recovers(
    tmp_path: Path, capsys, fast_research: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Module written, answers file not: the next run reports the recovery and installs cleanly."""
    argv = ["llava", "--name", "halfway", "--dest", str(tmp_path / "project"), "--force"]
    pid = os.fork()
    if pid == 0:
        try:
            os.environ[KILL_AT_ENV] = "replaced:0"
            main(argv)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert (tmp_path / "project/vlmforge_adapters/halfway.py").is_file()  # the half-written state
    stale = Path(tempfile.gettempdir()) / f"vlmforge-scaffold-{pid}-leftover"
    stale.mkdir()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"recovered: an earlier run (pid {pid}) was killed" in err and not stale.exists()
    files = sorted(p.name for p in (tmp_path / "project/vlmforge_adapters").iterdir())
    assert files == [".copier-answers.halfway.yml", "__init__.py", "halfway.py"]


def test_ctrl_c_in_the_cli_during_install_says_nothing_was_written(
    tmp_path: Path, capsys, fast_research: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(step: str, **_: Any) -> None:
        if step == "replaced:1":
            raise KeyboardInterrupt

    monkeypatch.setattr(install, "checkpoint", interrupt)
    assert main(["llava", "--name", "cc", "--dest", str(tmp_path / "p"), "--force"]) == EXIT_INTERRUPTED
    assert "interrupted; nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_before_the_cli_is_imported_is_no_traceback() -> None:
    """SIGINT while vlmforge (torch, transformers) is still importing: a message and exit 130."""
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'vlmforge.scaffold.cli': raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from vlmforge_launcher import scaffold_main\n"
        "sys.exit(scaffold_main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_INTERRUPTED, result.stderr
    assert "Traceback" not in result.stderr and "interrupted while starting" in result.stderr
