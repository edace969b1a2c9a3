"""Faults mid-run: SIGTERM to the runner alone, SIGINT to its whole process group, SIGKILL to the runner, each
while a particular process of the run is working (a llama.cpp tool, a stage worker). After each, no process of
the run is left and nothing half-done counts as finished; the run resumed after all three gives artifacts
byte-identical to an uninterrupted run in another workdir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import build_smol_model, llama_cpp_or_skip, tiny_recipe, write_recipe

pytestmark = pytest.mark.e2e
ARTIFACTS = ("gguf-q4_k_m", "w8a16")
BOOKKEEPING = {"stage_info.json", ".stage.json"}


@pytest.fixture(scope="module")
def fault_recipe(tmp_path_factory):
    llama_cpp_or_skip()
    tmp = tmp_path_factory.mktemp("faults")
    # Wide enough that the converter and llama-imatrix work for seconds: time to be caught mid-work.
    model = build_smol_model(tmp / "model", hidden=512, layers=4)
    recipe = tiny_recipe(
        model,
        [{"format": "gguf", "type": "Q4_K_M"}, {"format": "w8a16"}],
        name="faults",
        calibration={"source": "default", "samples": 10, "seq_len": 256},
    )
    return write_recipe(tmp / "faults.yaml", recipe), tmp


def start(recipe: Path, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "-q", "run", str(recipe), "-w", str(workdir)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: SIGINT to the group is Ctrl-C in its terminal
    )


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(d.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, out, todo = children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def describe(pid: int) -> str:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return "" if state == "Z" else f"{comm}: {cmd}"
    except OSError:
        return ""


def of_the_run(workdir: Path) -> list[str]:
    """Every live process whose command line, working directory or open files are under `workdir`."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        what = describe(int(d.name))
        if not what:
            continue
        places = [what]
        try:
            places.append(os.readlink(d / "cwd"))
            places += [os.readlink(f) for f in (d / "fd").iterdir()]
        except OSError:
            pass
        if any(str(workdir) in p for p in places):
            found.append(what)
    return found


def wait_for(proc: subprocess.Popen, matches: Callable[[str], bool], what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what} started: {proc.stderr.read()[-2000:]}")
        if any(matches(describe(p)) for p in descendants(proc.pid)):
            return
        time.sleep(0.02)
    pytest.fail(f"{what} never started")


def interrupt(recipe: Path, workdir: Path, matches: Callable[[str], bool], what: str, sig: int, group: bool) -> int:
    proc = start(recipe, workdir)
    wait_for(proc, matches, what)
    tree = descendants(proc.pid)
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    proc.communicate(timeout=120)
    deadline = time.monotonic() + 30  # children get a grace period to stop their own
    while time.monotonic() < deadline and (any(describe(p) for p in tree) or of_the_run(workdir)):
        time.sleep(0.2)
    left = [describe(p) for p in tree if describe(p)] + of_the_run(workdir)
    assert not left, f"after {signal.Signals(sig).name} during {what}: still running: {left}"
    return proc.returncode


def artifact_bytes(run_dir: Path) -> dict[str, bytes]:
    out = {}
    for name in ARTIFACTS:
        art = (run_dir / "artifacts" / name).resolve()
        out |= {f"{name}/{p.relative_to(art)}": p.read_bytes() for p in sorted(art.rglob("*")) if p.is_file()
                and p.name not in BOOKKEEPING}  # fmt: skip
    return out


def test_signals_mid_run_leave_nothing_running_and_resume_byte_identical(fault_recipe):
    recipe, tmp = fault_recipe
    reference = subprocess.run(
        [sys.executable, "-m", "pipeline", "-q", "run", str(recipe), "-w", str(tmp / "clean")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    workdir = tmp / "faulty"
    run_dir = workdir / "faults"

    code = interrupt(recipe, workdir, lambda d: "convert_hf_to_gguf" in d, "the GGUF converter", signal.SIGINT, True)
    assert code == 130
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["interrupted_by"] == "SIGINT"
    assert not list(run_dir.glob("gguf-convert-*")), "a stopped stage left an output"

    code = interrupt(recipe, workdir, lambda d: d.startswith("llama-imatrix"), "llama-imatrix", signal.SIGTERM, False)
    assert code == 143
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["interrupted_by"] == "SIGTERM"
    assert not list(run_dir.glob("imatrix-*")) and not any((run_dir / ".tmp").iterdir())
    assert {s["id"] for s in manifest["stages"]} >= {"source", "calibration", "gguf-convert[f16]"}

    code = interrupt(
        recipe, workdir, lambda d: d.startswith("quantize[w8a16]"), "the w8a16 stage worker", signal.SIGKILL, False
    )
    assert code == -signal.SIGKILL
    assert not list(run_dir.glob("quantize-w8a16-*")), "a killed stage left an output marked finished"

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "-q", "run", str(recipe), "-w", str(workdir)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = {s["id"]: s["status"] for s in json.loads((run_dir / "manifest.json").read_text())["stages"]}
    assert statuses["source"] == "cached" and statuses["quantize[w8a16]"] == "done"
    clean, resumed = artifact_bytes(tmp / "clean" / "faults"), artifact_bytes(run_dir)
    assert sorted(clean) == sorted(resumed)
    differ = [name for name in clean if clean[name] != resumed[name]]
    assert not differ, f"not byte-identical to the uninterrupted run: {differ}"
