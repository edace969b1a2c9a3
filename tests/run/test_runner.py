"""The runner: cache reuse, minimal reruns, one calibration set, independent format branches."""

from __future__ import annotations

import json

from pipeline.graph.plan import build_plan
from pipeline.recipe_loader import load_recipe
from pipeline.run.runner import execute
from tests.conftest import cli, tiny_recipe, write_recipe


def _statuses(manifest_path):
    return {s["id"]: s["status"] for s in json.loads(manifest_path.read_text())["stages"]}


def test_rerun_is_cached_and_option_change_reruns_only_that_branch(tiny_model, tmp_path):
    # Three formats that all need calibration data: one calibration set serves them all.
    formats = [{"format": "gptq", "group_size": 32}, {"format": "w8a8-int8"}, {"format": "fp8", "scheme": "static"}]
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32})
    )
    workdir = tmp_path / "runs"
    manifest = workdir / "tiny" / "manifest.json"

    assert cli("-q", "run", str(recipe), "-w", str(workdir)).returncode == 0
    first = _statuses(manifest)
    # every stage that ran carries the estimate it ran under, beside its measurement (pipeline.cost)
    records = json.loads(manifest.read_text())["stages"]
    assert all(r["estimate"]["seconds"] >= 0 and r["estimate"]["peak_rss_mb"] > 0 for r in records), records
    assert first == {
        "source": "done",
        "calibration": "done",
        "quantize[gptq]": "done",
        "quantize[w8a8-int8]": "done",
        "quantize[fp8]": "done",
        "package[gptq]": "done",
        "package[w8a8-int8]": "done",
        "package[fp8]": "done",
    }

    report = (workdir / "tiny" / "report.md").read_text()  # written without evaluation too: packages and stage timings
    assert (
        "Not evaluated" in report
        and "| gptq | done | packages/gptq |" in report
        and "| quantize[fp8] | done |" in report
    )

    assert cli("-q", "run", str(recipe), "-w", str(workdir)).returncode == 0
    assert set(_statuses(manifest).values()) == {"cached"}

    formats[1]["smoothing_strength"] = 0.5  # change one format's options only
    write_recipe(recipe, tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32}))
    proc = cli("-q", "run", str(recipe), "-w", str(workdir))
    assert proc.returncode == 0, proc.stderr
    assert _statuses(manifest) == {
        "source": "cached",
        "calibration": "cached",
        "quantize[gptq]": "cached",
        "quantize[w8a8-int8]": "done",
        "quantize[fp8]": "cached",
        "package[gptq]": "cached",
        "package[w8a8-int8]": "done",
        "package[fp8]": "cached",
    }

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
        recipe = write_recipe(
            tmp_path / "r.yaml",
            tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32, "seed": seed}),
        )
        assert cli("-q", "run", str(recipe), "-w", str(workdir)).returncode == 0
    assert _statuses(workdir / "tiny" / "manifest.json") == {
        "source": "cached",
        "calibration": "done",
        "quantize[gptq]": "done",
        "quantize[fp8]": "cached",
        "package[gptq]": "done",
        "package[fp8]": "cached",
    }


# A recipe file that parses but names no such scheme: llm-compressor itself rejects it when it runs.
BAD_LLMCOMPRESSOR_RECIPE = (
    "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      targets: [Linear]\n      scheme: NOT_A_SCHEME\n"
)


def test_one_failing_format_does_not_stop_the_others(tiny_model, tmp_path):
    # A real failure inside llm-compressor: a recipe file that parses but names no such scheme.
    bad = tmp_path / "bad-recipe.yaml"
    bad.write_text(BAD_LLMCOMPRESSOR_RECIPE)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(
            tiny_model,
            [{"format": "llmcompressor-recipe", "recipe": str(bad), "calibration": False}, {"format": "fp8"}],
        ),
    )
    plan = build_plan(load_recipe(recipe), recipe, tmp_path / "runs")
    manifest = execute(plan, quiet=True)
    statuses = {r.id: r.status for r in manifest.records}
    assert statuses == {
        "source": "done",
        "quantize[llmcompressor-recipe]": "failed",
        "quantize[fp8]": "done",
        "package[llmcompressor-recipe]": "skipped",
        "package[fp8]": "done",
    }
    assert manifest.status == "failed"
    failed = next(r for r in manifest.records if r.status == "failed")
    assert "NOT_A_SCHEME" in failed.error and "\n" not in failed.error
    assert "Traceback" in (plan.run_dir / failed.log).read_text(), "the worker's traceback is in the stage log"
    assert (
        not (plan.run_dir / "packages" / "llmcompressor-recipe").exists()
        and (plan.run_dir / "packages" / "fp8" / "README.md").exists()
    )
    assert not plan.stage("quantize[llmcompressor-recipe]").path.exists(), (
        "a failed stage leaves no output a later run could take for finished"
    )
    assert plan.cached(plan.stage("quantize[fp8]"))
    assert not any((plan.run_dir / ".tmp").iterdir())


def test_crashing_format_exits_1_with_one_line(tiny_model, tmp_path):
    # A recipe file that is valid YAML but that llm-compressor rejects when it runs: plan cannot know,
    # the quantize branch fails at run time: exit 1 (a failed stage), not 2 (bad input), one line.
    bad = tmp_path / "bad-recipe.yaml"
    bad.write_text(BAD_LLMCOMPRESSOR_RECIPE)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(tiny_model, [{"format": "llmcompressor-recipe", "recipe": str(bad), "calibration": False}]),
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 1, proc.stderr
    line = next(
        ln for ln in proc.stderr.splitlines() if "quantize[llmcompressor-recipe]" in ln and "NOT_A_SCHEME" in ln
    )
    assert "logs/quantize-llmcompressor-recipe.log" in line and "Traceback" not in proc.stderr


def test_plan_prints_graph_and_cache_state(tiny_model, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(
            tiny_model,
            [{"format": "gptq", "group_size": 32}, {"format": "fp8"}],
            calibration={"samples": 2, "seq_len": 32},
        ),
    )
    proc = cli("plan", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 0 and proc.stdout.count("to run") == 6  # source, calibration, 2 x quantize, 2 x package
    assert "calibration" in proc.stdout and "quantize[gptq]" in proc.stdout
    assert not (tmp_path / "runs").exists(), "plan writes nothing"
