"""Scale-out on a real distributed engine: the recipe as a Prefect flow with prefect-dask's
DaskTaskRunner over a local Dask cluster of two worker processes that share the workdir, reporting to
one Prefect server (as a deployment would: every Dask worker talks to the same API). The two format
branches run in different workers; a second run finds every stage cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, tiny_recipe, write_recipe

pytest.importorskip("prefect_dask")

SCRIPT = textwrap.dedent("""
    import json, sys
    from dask.distributed import LocalCluster
    from prefect_dask import DaskTaskRunner
    from pipeline.integrations.prefect import build_flow

    if __name__ == "__main__":  # Dask's worker processes re-import this file
        recipe, workdir, out = sys.argv[1:]
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            flow = build_flow(recipe, workdir, task_runner=DaskTaskRunner(address=cluster.scheduler_address))
            runs = [flow() for _ in range(2)]
            workers = sorted(w["id"] for w in cluster.scheduler_info["workers"].values())
        json.dump({"first": runs[0], "second": runs[1], "workers": workers}, open(out, "w"))
""")


@pytest.fixture
def prefect_server(tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_API_URL": "",
    }
    log = open(tmp_path / "prefect-server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("the Prefect server did not start: " + (tmp_path / "prefect-server.log").read_text()[-2000:])
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


def test_prefect_flow_on_a_dask_cluster(tmp_path, tiny_model, prefect_server):
    formats = [
        {"format": "gptq", "group_size": 32},
        {"format": "w8a8-int8"},
    ]  # both calibrated: seconds each, side by side
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32})
    )
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": prefect_server,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(recipe), str(tmp_path / "runs"), str(tmp_path / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    first, second = out["first"], out["second"]
    assert first["status"] == "ok" and not first["failed"], first
    assert {t["status"] for t in first["tasks"].values()} == {"done"}
    ran_on = {s: first["tasks"][f"quantize[{s}]"]["ran_on"]["pid"] for s in ("gptq", "w8a8-int8")}
    assert len(set(ran_on.values())) == 2, f"both branches ran in one Dask worker: {ran_on}"
    assert os.getpid() not in ran_on.values()
    assert {t["status"] for t in second["tasks"].values()} == {"cached"}
    for art in ("gptq", "w8a8-int8"):
        assert (tmp_path / "runs" / "tiny" / "packages" / art / "README.md").exists()
