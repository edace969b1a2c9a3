"""The runner: cache reuse, minimal reruns, one calibration set, independent format branches."""

from __future__ import annotations

import json

from pipeline.plan import build_plan
from pipeline.recipe_loader import load_recipe
from pipeline.runner import execute
from tests.conftest import cli, tiny_recipe, write_recipe


def _statuses(manifest_path):
    return {s["id"]: s["status"] for s in json.loads(manifest_path.read_text())["stages"]}


def test_rerun_is_cached_and_option_change_reruns_only_that_branch(tiny_model, tmp_path):
    # Three formats that all need calibration data: one calibration set serves them all.
    formats = [{"format": "gptq", "group_size": 32}, {"format": "w8a8-int8"}, {"format": "fp8", "scheme": "static"}]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32}))
    workdir = tmp_path / "runs"
    manifest = workdir / "tiny" / "manifest.json"

    assert cli("-q", "run", str(recipe), "-w", str(workdir)).returncode == 0
    first = _statuses(manifest)
    assert first == {"source": "done", "calibration": "done", "quantize[gptq]": "done", "quantize[w8a8-int8]": "done", "quantize[fp8]": "done",
                     "package[gptq]": "done", "package[w8a8-int8]": "done", "package[fp8]": "done"}

    report = (workdir / "tiny" / "report.md").read_text()  # written without evaluation too: packages and stage timings
    assert "Not evaluated" in report and "| gptq | done | packages/gptq |" in report and "| quantize[fp8] | done |" in report

    assert cli("-q", "run", str(recipe), "-w", str(workdir)).returncode == 0
    assert set(_statuses(manifest).values()) == {"cached"}

    formats[1]["smoothing_strength"] = 0.5  # change one format's options only
    write_recipe(recipe, tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32}))
    proc = cli("-q", "run", str(recipe), "-w", str(workdir))
    assert proc.returncode == 0, proc.stderr
    assert _statuses(manifest) == {"source": "cached", "calibration": "cached", "quantize[gptq]": "cached",
                                   "quantize[w8a8-int8]": "done", "quantize[fp8]": "cached",
                                   "package[gptq]": "cached", "package[w8a8-int8]": "done", "package[fp8]": "cached"}

    data = json.loads(manifest.read_text())
    assert [s["id"] for s in data["stages"]].count("calibration") == 1
    assert data["environment"]["llmcompressor"] and data["resolved"]["formats"][1]["smoothing_strength"] == 0.5
    assert all(s["key"] and s["path"] for s in data["stages"])
    for link in ("gptq", "w8a8-int8", "fp8"):
        assert (workdir / "tiny" / "artifacts" / link / "config.json").exists()

    proc = cli("-q", "run", str(recipe), "-w", str(workdir), "--force", "fp8")
    assert _statuses(manifest)["quantize[fp8]"] == "done" and _statuses(manifest)["source"] == "cached"
    assert cli("-q", "run", str(recipe), "-w", str(workdir), "--force", "nope").returncode == 2


def test_calibration_change_reruns_calibration_and_its_formats_only(tiny_model, tmp_path):
    formats = [{"format": "gptq", "group_size": 32}, {"format": "fp8"}]
    workdir = tmp_path / "runs"
    for seed in (0, 1):
        recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32, "seed": seed}))
        assert cli("-q", "run", str(recipe), "-w", str(workdir)).returncode == 0
    assert _statuses(workdir / "tiny" / "manifest.json") == {"source": "cached", "calibration": "done", "quantize[gptq]": "done", "quantize[fp8]": "cached",
                                                             "package[gptq]": "done", "package[fp8]": "cached"}


def test_one_failing_format_does_not_stop_the_others(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}, {"format": "fp8"}]))
    plan = build_plan(load_recipe(recipe), recipe, tmp_path / "runs")

    def crash(out, inputs, ctx):  # a branch that dies halfway through writing its output
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("backend crashed")

    plan.stage("quantize[w8a16]").run = crash
    manifest = execute(plan, quiet=True)
    statuses = {r.id: r.status for r in manifest.records}
    assert statuses == {"source": "done", "quantize[w8a16]": "failed", "quantize[fp8]": "done", "package[w8a16]": "skipped", "package[fp8]": "done"}
    assert manifest.status == "failed"
    failed = next(r for r in manifest.records if r.status == "failed")
    assert not (plan.run_dir / "packages" / "w8a16").exists() and (plan.run_dir / "packages" / "fp8" / "README.md").exists()
    assert failed.error == "RuntimeError: backend crashed" and "Traceback" in (plan.run_dir / failed.log).read_text()
    assert not plan.stage("quantize[w8a16]").path.exists(), "a failed stage leaves no output a later run could take for finished"
    assert plan.cached(plan.stage("quantize[fp8]"))
    assert not any((plan.run_dir / ".tmp").iterdir())


def test_crashing_format_exits_1_with_one_line(tmp_path):
    from tests.conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model, [{"format": "fp8"}]))
    # The source copies fine; the quantize branch fails loading the corrupt weights: exit 1, not 2.
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 1, proc.stderr
    assert "quantize[fp8]" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_prints_graph_and_cache_state(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "gptq", "group_size": 32}, {"format": "fp8"}]))
    proc = cli("plan", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 0 and proc.stdout.count("to run") == 6  # source, calibration, 2 x quantize, 2 x package
    assert "calibration" in proc.stdout and "quantize[gptq]" in proc.stdout
    assert not (tmp_path / "runs").exists(), "plan writes nothing"
