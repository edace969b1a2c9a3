"""`gc` removes only what no plan needs: not the outputs of a complete run after an interrupted or partial one."""

from __future__ import annotations

from pipeline import api
from pipeline.run.manifest import Manifest
from pipeline.run.superseded import collect, superseded
from tests.conftest import tiny_recipe, write_recipe


def test_gc_after_partial_and_interrupted_runs_removes_nothing_current(tiny_model, tmp_path):
    formats = [{"format": "fp8"}, {"format": "w8a16"}]
    # The eval corpus has no stable link: only a manifest keeps it.
    evaluation = {"enabled": True, "corpus": "embedded", "windows": 2, "context": 48, "speed": {"enabled": False}}
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, evaluation={**evaluation, "vllm": False})
    )
    full = api.run(recipe, workdir=tmp_path / "runs")
    assert full.ok
    run_dir = full.run_dir
    outputs = sorted(p.name for p in run_dir.iterdir() if (p / ".stage.json").is_file())
    report, manifest = (run_dir / "report.md").read_text(), (run_dir / "manifest.json").read_text()

    partial = api.run(recipe, workdir=tmp_path / "runs", only_formats=["w8a16"])
    assert partial.ok and partial.manifest == run_dir / "manifests" / "only-w8a16.json"
    assert (run_dir / "report.md").read_text() == report, "a partial run rewrote the run's report"
    assert (run_dir / "manifest.json").read_text() == manifest, "a partial run rewrote the run's manifest"
    assert superseded(run_dir) == []

    # What a run interrupted before its first stage finished leaves: a manifest with no stage records.
    plan = api.plan(recipe, workdir=tmp_path / "runs")
    Manifest(plan).finish("interrupted")
    (run_dir / "manifests" / "only-w8a16.json").unlink()
    assert '"planned"' in (run_dir / "manifest.json").read_text()
    found, _ = collect(run_dir, dry_run=False)
    assert found == [], [f.stage for f in found]
    assert sorted(p.name for p in run_dir.iterdir() if (p / ".stage.json").is_file()) == outputs
    assert any(name.startswith("eval-corpus-") for name in outputs)


def test_side_manifests_of_an_older_recipe_are_retired(tiny_model, tmp_path):
    """A partial run's manifest must not keep its outputs forever: once the run's own manifest is newer (a
    later full run, whose plan names all it needs), what only the old partial manifest named goes."""
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}, {"format": "w8a16"}]))
    partial = api.run(recipe, workdir=tmp_path / "runs", only_formats=["w8a16"])
    assert partial.ok
    old_artifact = partial.artifacts["w8a16"]
    write_recipe(recipe, tiny_recipe(tiny_model, [{"format": "fp8"}, {"format": "w8a16", "symmetric": False}]))
    full = api.run(recipe, workdir=tmp_path / "runs")
    assert full.ok and full.artifacts["w8a16"] != old_artifact
    found, _ = collect(full.run_dir, dry_run=False)
    assert old_artifact in {f.path for f in found}
    assert not old_artifact.exists() and not (full.run_dir / "manifests" / "only-w8a16.json").exists()
    assert full.artifacts["w8a16"].exists() and full.artifacts["fp8"].exists()
