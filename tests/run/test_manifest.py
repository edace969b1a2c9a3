"""The run's manifest: written after every stage from what the run began with."""

from __future__ import annotations

import json

from pipeline.graph.plan import build_plan
from pipeline.recipe_loader import load_recipe
from pipeline.run.manifest import Manifest, StageRecord
from tests.conftest import tiny_recipe, write_recipe


def test_a_recipe_renamed_mid_run_changes_nothing_in_the_manifest(tiny_model, tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}]))
    text = path.read_text()
    plan = build_plan(load_recipe(path), path, tmp_path / "runs")
    plan.run_dir.mkdir(parents=True)
    manifest = Manifest(plan)
    path.rename(tmp_path / "renamed.yaml")  # the user tidies up while the run works
    manifest.add(StageRecord("source", "source", None, plan.stage("source").key, "source-x", "done"))
    manifest.finish("ok")
    written = json.loads(manifest.path.read_text())
    assert written["recipe_text"] == text and written["status"] == "ok" and written["stages"][0]["id"] == "source"
