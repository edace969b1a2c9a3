"""The Prefect flow on a real, local, ephemeral Prefect server: artifacts built, a second flow run
reuses every stage from the cache, task names say stage and format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, tiny_recipe, write_recipe

pytest.importorskip("prefect")

SCRIPT = textwrap.dedent("""
    import json, sys
    from pipeline.integrations.prefect import build_flow

    if __name__ == "__main__":  # the process-pool task runner spawns workers that re-import this file
        recipe, workdir, out = sys.argv[1:]
        first = build_flow(recipe, workdir)()
        second = build_flow(recipe, workdir)()
        json.dump({"first": first, "second": second}, open(out, "w"))
""")


def test_prefect_flow_builds_and_reuses(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}, {"format": "fp8"}]))
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_API_URL": "",
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
    assert first["status"] == "ok" and not first["failed"]
    assert set(first["tasks"]) == {
        "source",
        "quantize[w8a16]",
        "quantize[fp8]",
        "package[w8a16]",
        "package[fp8]",
    }  # task per stage, named by stage and format
    assert {t["status"] for t in first["tasks"].values()} == {"done"}
    assert {t["status"] for t in second["tasks"].values()} == {"cached"}  # the second run reuses the cache
    assert first["tasks"]["quantize[fp8]"]["key"] == second["tasks"]["quantize[fp8]"]["key"]
    for art in ("w8a16", "fp8"):
        assert (tmp_path / "runs" / "tiny" / "artifacts" / art / "config.json").exists()
    manifest = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())
    assert [s["id"] for s in manifest["stages"]] == [
        "source",
        "quantize[w8a16]",
        "quantize[fp8]",
        "package[w8a16]",
        "package[fp8]",
    ]
