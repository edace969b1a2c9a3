"""Without the Prefect/Airflow extras the core and the CLI work, and asking for a flow gives a one-line hint."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, tiny_recipe, write_recipe

BLOCK = "import sys; sys.modules['prefect'] = None; sys.modules['airflow'] = None; sys.modules['airflow.sdk'] = None; "


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_core_never_imports_integrations():
    proc = _python(
        "import sys, pipeline.cli, pipeline.api, pipeline.graph.plan, pipeline.run.runner; "
        "print([m for m in sys.modules if m.split('.')[0] in ('prefect', 'airflow')])"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_cli_works_and_flow_hint_without_extras(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}]))
    proc = _python(BLOCK + f"from pipeline.cli import main; sys.argv = ['pipeline', 'plan', {str(recipe)!r}]; main()")
    assert proc.returncode == 0 and "quantize[w8a16]" in proc.stdout, proc.stderr
    proc = _python(
        BLOCK + f"from pipeline.cli import main; sys.argv = ['pipeline', 'prefect', {str(recipe)!r}]; main()"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        "needs Prefect 3: pip install 'llm-quant-pipeline[prefect]'" in proc.stderr
        and len(proc.stderr.strip().splitlines()) == 1
    )
    proc = _python(BLOCK + f"from pipeline.integrations.airflow import build_dag; build_dag({str(recipe)!r})")
    assert "needs Apache Airflow 3: pip install 'llm-quant-pipeline[airflow]'" in proc.stderr
