"""Scale-out on a real distributed engine: the recipe's stages on a local Dask cluster of two worker
processes that share the workdir. Two formats run at once on the two workers; a second run rebuilds
nothing; a worker SIGKILLed mid-stage takes its stage's processes with it, and Dask runs that stage
again on a live worker, which finishes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, tiny_recipe, write_recipe

pytest.importorskip("dask.distributed")

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import psutil
    from dask.distributed import Client, LocalCluster
    from pipeline.integrations.dask import run_on_cluster

    def zygotes():  # this test's own (other tests may run beside it): they inherit its TEST_TAG
        tag, found = os.environ["TEST_TAG"], []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if "pipeline.run.zygote" in " ".join(p.info["cmdline"] or []) and p.environ().get("TEST_TAG") == tag:
                    found.append(p.pid)
            except psutil.Error:
                pass
        return found

    if __name__ == "__main__":  # Dask's worker processes re-import this file
        recipe, recipe_more, workdir, out = sys.argv[1:]
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                first = run_on_cluster(recipe, workdir, client)
                second = run_on_cluster(recipe, workdir, client)
                # One more format: kill the worker process that runs its quantize stage, mid-stage.
                result = {}
                runner = threading.Thread(target=lambda: result.update(run_on_cluster(recipe_more, workdir, client)))
                runner.start()
                killed, deadline = None, time.time() + 600
                while killed is None and time.time() < deadline and runner.is_alive():
                    for addr, keys in client.processing().items():
                        if any(k.startswith("quantize_fp8") for k in keys):
                            time.sleep(3)  # well inside the stage: its own worker process has started
                            pid = client.run(os.getpid, workers=[addr])[addr]
                            os.kill(pid, signal.SIGKILL)
                            killed = pid
                            break
                    time.sleep(0.2)
                runner.join()
        left = zygotes()
        json.dump({"first": first, "second": second, "third": result, "killed": killed, "left": left}, open(out, "w"))
""")


def test_stages_on_a_dask_cluster(tmp_path, tiny_model):
    formats = [{"format": "gptq", "group_size": 32}, {"format": "w8a8-int8"}]  # both calibrated: seconds each
    calibration = {"samples": 2, "seq_len": 32}
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration=calibration))
    more = [*formats, {"format": "fp8", "scheme": "static"}]
    recipe_more = write_recipe(tmp_path / "more.yaml", tiny_recipe(tiny_model, more, calibration=calibration))
    (tmp_path / "cluster.py").write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TEST_TAG": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "cluster.py"), str(recipe), str(recipe_more), str(tmp_path / "runs")]
        + [str(tmp_path / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    first, second, third = out["first"], out["second"], out["third"]
    assert first["status"] == "ok" and not first["failed"], first
    assert {t["status"] for t in first["tasks"].values()} == {"done"}
    ran = {a: first["tasks"][f"quantize[{a}]"]["ran_on"] for a in ("gptq", "w8a8-int8")}
    assert ran["gptq"]["pid"] != ran["w8a8-int8"]["pid"], f"both formats ran in one Dask worker: {ran}"
    assert os.getpid() not in {r["pid"] for r in ran.values()}
    a, b = ran.values()
    assert a["started"] < b["ended"] and b["started"] < a["ended"], f"the formats did not run at once: {ran}"
    assert {t["status"] for t in second["tasks"].values()} == {"cached"}  # nothing rebuilt
    # The killed worker's stage ran again elsewhere and finished; the rest was cached.
    assert out["killed"] is not None, "the fp8 stage was never seen running"
    assert third["status"] == "ok", third
    fp8 = third["tasks"]["quantize[fp8]"]
    assert fp8["status"] == "done" and fp8["ran_on"]["pid"] != out["killed"], fp8
    assert third["tasks"]["quantize[gptq]"]["status"] == "cached"
    assert (tmp_path / "runs" / "tiny" / "packages" / "fp8" / "README.md").exists()
    assert out["left"] == [], "a stage's processes outlived the cluster"
