"""The Airflow DAG, run with `dag.test()` on real Airflow 3 with a SQLite metadata DB in a temp dir:
artifacts built, one mapped branch per format, shared stages upstream of the branches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, tiny_recipe, write_recipe

pytest.importorskip("airflow.sdk")

DAG_FILE = textwrap.dedent("""
    import json, sys
    from pipeline.integrations.airflow import build_dag

    dag = build_dag({recipe!r}, workdir={workdir!r})

    if __name__ == "__main__":
        graph = {{t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}}
        run = dag.test()
        instances = [(ti.task_id, ti.map_index, str(ti.state)) for ti in run.get_task_instances()]
        json.dump({{"graph": graph, "state": str(run.state), "instances": instances}}, open(sys.argv[1], "w"))
""")


def test_airflow_dag_test(tmp_path, tiny_model):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(tiny_model, [{"format": "w8a16"}, {"format": "fp8"}], calibration={"samples": 2, "seq_len": 32}),
    )
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
    proc = subprocess.run(
        [sys.executable, str(dag_file), str(tmp_path / "out.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["graph"] == {"source": [], "branch": ["source"], "results": ["branch"]}
    assert "success" in out["state"].lower()
    branches = sorted(i[1] for i in out["instances"] if i[0] == "branch")
    assert branches == [0, 1]  # one mapped branch per format
    assert all("success" in i[2].lower() for i in out["instances"])
    for art in ("w8a16", "fp8"):
        assert (tmp_path / "runs" / "tiny" / "artifacts" / art / "config.json").exists()
        assert (
            tmp_path / "runs" / "tiny" / "packages" / art / "README.md"
        ).exists()  # the branch packages its artifact too
    assert json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())["status"] == "ok"
