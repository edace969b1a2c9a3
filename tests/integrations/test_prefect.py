"""The Prefect flow as its users run it: a real `prefect server start` on loopback, the module-level
`quantize_flow` served as a deployment (`to_deployment` + `serve`), and runs of that one deployment
triggered with recipes of their own: Completed with every artifact; later runs whose tasks are cached
under the stages' keys; a recipe with a failing format ends Failed, its failing task retried as asked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from pipeline.graph.plan import build_plan
from pipeline.recipe_loader import load_recipe
from tests.conftest import ROOT, tiny_recipe, write_recipe
from tests.run.test_runner import BAD_LLMCOMPRESSOR_RECIPE

pytest.importorskip("prefect")

SERVE = textwrap.dedent("""
    from prefect import serve
    from prefect.deployments.runner import EntrypointType
    from pipeline.integrations.prefect import quantize_flow

    if __name__ == "__main__":
        serve(quantize_flow.to_deployment("tiny", entrypoint_type=EntrypointType.MODULE_PATH))
""")

TRIGGER = textwrap.dedent("""
    import asyncio, json, sys, time
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    async def task_runs(flow_run_id):
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return {r.name: {"state": r.state.type.value, "name": r.state.name, "run_count": r.run_count} for r in runs}

    async def deployed(deadline):  # `serve` registers the deployment once its flow module is imported
        async with get_client() as client:
            while time.time() < deadline:
                try:
                    return await client.read_deployment_by_name("llm-quant/tiny")
                except ObjectNotFound:
                    await asyncio.sleep(1)
        raise SystemExit("the deployment never appeared")

    if __name__ == "__main__":
        asyncio.run(deployed(time.time() + 180))
        out = []
        for params in json.loads(sys.argv[1]):
            run = run_deployment("llm-quant/tiny", parameters=params, timeout=900, poll_interval=2)
            tasks = asyncio.run(task_runs(run.id))
            out.append({"state": run.state.type.value, "message": run.state.message, "tasks": tasks})
        json.dump(out, open(sys.argv[2], "w"))
""")


@pytest.fixture
def prefect_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
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


def test_one_deployment_runs_any_recipe_and_fails_with_a_stage(tmp_path, tiny_model, prefect_server):
    good = write_recipe(tmp_path / "good.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}, {"format": "fp8"}]))
    (tmp_path / "bad-recipe.yaml").write_text(BAD_LLMCOMPRESSOR_RECIPE)
    failing = [{"format": "llmcompressor-recipe", "recipe": str(tmp_path / "bad-recipe.yaml"), "calibration": False}]
    bad = write_recipe(tmp_path / "bad.yaml", tiny_recipe(tiny_model, failing + [{"format": "w8a16"}], name="bad"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect" / "storage"),  # task results: here, not in ~
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    (tmp_path / "serve.py").write_text(SERVE)
    (tmp_path / "trigger.py").write_text(TRIGGER)
    served = subprocess.Popen(
        [sys.executable, str(tmp_path / "serve.py")],
        env=env,
        cwd=tmp_path,
        stdout=open(tmp_path / "serve.log", "w"),
        stderr=subprocess.STDOUT,
    )
    workdir = str(tmp_path / "runs")
    runs = [{"recipe": str(good), "workdir": workdir}] * 3 + [{"recipe": str(bad), "workdir": workdir, "retries": 1}]
    try:
        proc = subprocess.run(
            [sys.executable, str(tmp_path / "trigger.py"), json.dumps(runs), str(tmp_path / "out.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
    finally:
        served.terminate()
        served.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:] + (tmp_path / "serve.log").read_text()[-3000:]
    first, second, third, failed = json.loads((tmp_path / "out.json").read_text())
    log = (tmp_path / "serve.log").read_text()[-3000:]
    assert first["state"] == "COMPLETED", (first, log)
    stages = {s.id: s.key for s in build_plan(load_recipe(good), good, tmp_path / "runs").stages}
    assert {n for n in first["tasks"] if n != "results"} == set(stages)  # one task per stage, named by it
    for art in ("w8a16", "fp8"):
        assert (tmp_path / "runs" / "tiny" / "packages" / art / "README.md").exists()
    assert json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())["status"] == "ok"
    # Once a stage's output is finished its task's cache key is the stage's key: the second run stores each
    # task's result under it, the third finds every one in Prefect's cache.
    stored = {p.name for p in (tmp_path / "prefect" / "storage").iterdir()}
    assert {f"llm-quant-{k}" for k in stages.values()} <= stored
    assert second["state"] == third["state"] == "COMPLETED"
    assert {t["name"] for n, t in third["tasks"].items() if n != "results"} == {"Cached"}, third
    # Another recipe through the same deployment: a failing stage fails the flow run, after its retry.
    assert failed["state"] == "FAILED" and "quantize[llmcompressor-recipe]" in (failed["message"] or ""), failed
    broken = failed["tasks"]["quantize[llmcompressor-recipe]"]
    assert broken["state"] == "FAILED" and broken["run_count"] == 2, broken
    assert failed["tasks"]["quantize[w8a16]"]["state"] == "COMPLETED"
    assert (tmp_path / "runs" / "bad" / "packages" / "w8a16" / "README.md").exists()
    assert json.loads((tmp_path / "runs" / "bad" / "manifest.json").read_text())["status"] == "failed"
