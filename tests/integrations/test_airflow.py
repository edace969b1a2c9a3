"""The Airflow DAG, run with `dag.test()` on real Airflow 3 with a SQLite metadata DB in a temp dir, with
evaluation on and vLLM's environment ready: one task per stage, upstream tasks exactly the stage's
inputs, per-kind retries/timeout/queue/pool from the recipe, every task green, the run's manifest ok."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.graph.plan import build_plan
from pipeline.recipe_loader import load_recipe
from pipeline.run.single import safe_id
from tests.conftest import ROOT, tiny_recipe, tool_env_or_skip, write_recipe
from tests.run.test_runner import BAD_LLMCOMPRESSOR_RECIPE

pytest.importorskip("airflow.sdk")

DAG_FILE = textwrap.dedent("""
    import json, sys
    from pipeline.integrations.airflow import build_dag

    dag = build_dag({recipe!r}, workdir={workdir!r}, default_args={{"owner": "ml-platform"}})

    if __name__ == "__main__":
        tasks = {{
            t.task_id: {{
                "upstream": sorted(t.upstream_task_ids),
                "retries": t.retries,
                "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                "queue": t.queue,
                "pool": t.pool,
                "owner": t.owner,
            }}
            for t in dag.tasks
        }}
        run = dag.test()
        instances = [(ti.task_id, str(ti.state)) for ti in run.get_task_instances()]
        json.dump({{"tasks": tasks, "state": str(run.state), "instances": instances}}, open(sys.argv[1], "w"))
""")

ORCHESTRATION = {
    "default": {"retries": 0},
    "kinds": {"quantize": {"retries": 2, "timeout_minutes": 30, "queue": "cpu-big", "pool": "default_pool"}},
}


def _dag_test(tmp_path, recipe) -> dict:
    """`dag.test()` of the recipe's DAG in a fresh Airflow home: the tasks' settings, the run's state and each
    task instance's."""
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    dag_file = home / "dags" / "quantize_tiny.py"
    dag_file.write_text(DAG_FILE.format(recipe=str(recipe), workdir=str(tmp_path / "runs")))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, check=True, timeout=300)
    cmd = [sys.executable, str(dag_file), str(tmp_path / "out.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_airflow_dag_is_the_stage_graph_and_runs_with_evaluation_and_vllm(tmp_path, tiny_model):
    tool_env_or_skip("vllm")
    evaluation = {"enabled": True, "corpus": "embedded", "windows": 2, "context": 32, "speed": {"enabled": False}}
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(tiny_model, [{"format": "w8a16"}], evaluation=evaluation, orchestration=ORCHESTRATION),
    )
    plan = build_plan(load_recipe(recipe), recipe, tmp_path / "runs")
    assert {"serve-check[w8a16]", "evaluate[w8a16@vllm]", "floor[vllm]"} <= {s.id for s in plan.stages}
    out = _dag_test(tmp_path, recipe)
    tasks = out["tasks"]
    # One task per stage, its upstream exactly the stage's inputs; `results` after every stage.
    expected = {safe_id(s.id): sorted(safe_id(d) for d in s.deps) for s in plan.stages}
    assert {t: v["upstream"] for t, v in tasks.items() if t != "results"} == expected
    assert tasks["results"]["upstream"] == sorted(expected)
    # Per-kind settings from the recipe, default_args (owner) under them.
    quantize = tasks["quantize_w8a16"]
    assert (quantize["retries"], quantize["timeout_s"], quantize["queue"]) == (2, 1800.0, "cpu-big")
    assert tasks["source"]["retries"] == 0 and tasks["source"]["timeout_s"] is None
    assert {v["owner"] for v in tasks.values()} == {"ml-platform"}
    assert "success" in out["state"].lower(), out["instances"]
    assert all("success" in state.lower() for _, state in out["instances"]), out["instances"]
    run_dir = tmp_path / "runs" / "tiny"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "ok" and {s["id"] for s in manifest["stages"]} == {s.id for s in plan.stages}
    assert (run_dir / "packages" / "w8a16" / "README.md").exists()
    check = json.loads((run_dir / "packages" / "w8a16" / "manifest.json").read_text())["serve_check"]
    assert check["status"] in ("ok", "refused"), check  # vLLM's own verdict on the artifact, recorded


def test_a_failing_stage_fails_the_dag_run_and_the_other_format_still_ships(tmp_path, tiny_model):
    (tmp_path / "bad-recipe.yaml").write_text(BAD_LLMCOMPRESSOR_RECIPE)
    formats = [
        {"format": "llmcompressor-recipe", "recipe": str(tmp_path / "bad-recipe.yaml"), "calibration": False},
        {"format": "w8a16"},
    ]
    recipe = tiny_recipe(tiny_model, formats, orchestration={"default": {"retries": 0}})  # no retry delays here
    out = _dag_test(tmp_path, write_recipe(tmp_path / "r.yaml", recipe))
    states = {task: state.lower() for task, state in out["instances"]}
    assert "failed" in out["state"].lower(), states
    assert (
        "failed" in states["quantize_llmcompressor-recipe"]
        and "upstream_failed" in states["package_llmcompressor-recipe"]
    )
    assert "success" in states["package_w8a16"] and "failed" in states["results"]  # results ran, then failed the run
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "packages" / "w8a16" / "README.md").exists()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    failed = {s["id"]: s for s in manifest["stages"] if s["status"] == "failed"}
    assert (
        set(failed) == {"quantize[llmcompressor-recipe]"}
        and "NOT_A_SCHEME" in failed["quantize[llmcompressor-recipe]"]["error"]
    )
