"""Stage workers: each heavy stage in its own process, its own peak memory, and a killed worker is
one failed stage that a rerun redoes alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from tests.conftest import cli, tiny_recipe, write_recipe


def _stages(run_dir):
    return {s["id"]: s for s in json.loads((run_dir / "manifest.json").read_text())["stages"]}


def _worker_of(runner: subprocess.Popen, stage_id: str, timeout: float = 180) -> psutil.Process:
    """The worker of `stage_id` under this test's own runner: another run on the machine may have a worker
    of the same name (and SIGKILLing it would fail that run, not this one)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            for p in psutil.Process(runner.pid).children(recursive=True):
                if p.name() == stage_id[:15]:  # a worker names itself after its stage (pipeline.run.zygote)
                    return p
        except psutil.Error:  # a process of the tree ended while it was read
            pass
        time.sleep(0.05)
    raise AssertionError(f"no worker process for {stage_id} appeared")


def test_sigkilled_worker_fails_its_stage_only_and_a_rerun_redoes_just_that(tiny_model, tmp_path):
    formats = [{"format": "gptq", "group_size": 32}, {"format": "fp8"}]
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32})
    )
    workdir, run_dir = tmp_path / "runs", tmp_path / "runs" / "tiny"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "-q", "run", str(recipe), "-w", str(workdir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = _worker_of(proc, "quantize[gptq]")
    time.sleep(0.2)  # inside the stage: it has named itself
    victim.send_signal(signal.SIGKILL)  # what the kernel's OOM killer does
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    line = next(ln for ln in err.splitlines() if "quantize[gptq]" in ln)
    assert "killed by SIGKILL" in line and "logs/quantize-gptq.log" in line and "Traceback" not in err
    stages = _stages(run_dir)
    assert stages["quantize[gptq]"]["status"] == "failed" and stages["package[gptq]"]["status"] == "skipped"
    assert stages["quantize[fp8]"]["status"] == "done" and stages["package[fp8]"]["status"] == "done"
    assert not any((run_dir / ".tmp").iterdir()), "the killed stage's temp dir is cleaned by the runner"

    proc = cli("-q", "run", str(recipe), "-w", str(workdir))
    assert proc.returncode == 0, proc.stderr
    statuses = {k: v["status"] for k, v in _stages(run_dir).items()}
    assert statuses == {
        "source": "cached",
        "calibration": "cached",
        "quantize[gptq]": "done",
        "quantize[fp8]": "cached",
        "package[gptq]": "done",
        "package[fp8]": "cached",
    }


def test_each_stage_reports_its_own_peak_and_the_runner_stays_small(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}]))
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())
    peaks = {s["id"]: s["peak_rss_mb"] for s in manifest["stages"]}
    # The quantize worker imported torch and llm-compressor; the package stage after it, in the runner,
    # reports only its own (small) peak, not the lifetime maximum of some earlier child process.
    assert peaks["quantize[w8a16]"] > 400, peaks
    assert peaks["package[w8a16]"] < peaks["quantize[w8a16]"] / 2, peaks
    assert manifest["runner_peak_rss_mb"] < 1024, manifest["runner_peak_rss_mb"]

    # A cached rerun keeps the figures of the run that built each stage.
    assert cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs")).returncode == 0
    again = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())
    assert {s["id"]: (s["status"], s["seconds"], s["peak_rss_mb"]) for s in again["stages"]} == {
        s["id"]: ("cached", s["seconds"], s["peak_rss_mb"]) for s in manifest["stages"]
    }


def test_a_killed_runner_takes_its_worker_with_it(tiny_model, tmp_path):
    """SIGKILL of the runner (or a timeout's kill) must not leave its worker computing as an orphan."""
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(tiny_model, [{"format": "gptq", "group_size": 32}], calibration={"samples": 2, "seq_len": 32}),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "-q", "run", str(recipe), "-w", str(tmp_path / "runs")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = _worker_of(proc, "quantize[gptq]")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    gone, alive = psutil.wait_procs([worker], timeout=30)
    assert not alive, "the worker outlived its runner"


def test_a_forked_worker_runs_torch_in_parallel_after_the_zygote_preloads_every_stage_import():
    """libgomp's thread pool does not survive fork: had any preloaded import run a parallel torch op
    in the zygote, every worker's first matmul would hang. Guard the whole import set here."""
    from pipeline.backends import FORMATS

    modules = sorted({m for f in FORMATS.values() for m in f.backend.modules} | {"lm_eval"})
    script = f"""
import os, sys
from pipeline.run.zygote import PRELOAD, preload
preload(PRELOAD + {tuple(modules)!r})
import torch
pid = os.fork()
if pid == 0:
    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    torch.mm(a, a)
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_launcher_never_imports_what_would_make_cuda_before_a_fork():
    """Importing bitsandbytes probes CUDA; a CUDA context made in the launcher breaks every forked worker
    ("Cannot re-initialize CUDA in forked subprocess"). Its workers import it themselves, after the fork."""
    from pipeline.backends import FORMATS

    assert "bitsandbytes" in FORMATS["bnb-nf4"].backend.modules  # what a bnb stage asks the launcher to preload
    probe = (
        "import sys; from pipeline.run import zygote; zygote.preload(['bitsandbytes', 'json']); "
        "assert 'bitsandbytes' not in sys.modules and 'json' in sys.modules, sorted(sys.modules)[:5]"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
