"""Evaluation through the CLI on the tiny model: stages, metrics.json per artifact, the results table
and plot, gates that trip (exit 1, artifact kept and marked) and pass, and plan-time checks."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import cli, tiny_recipe, write_recipe

EVAL = {
    "enabled": True,
    "vllm": False,
    "corpus": "embedded",
    "windows": 4,
    "context": 64,
    "speed": {"prompt_tokens": 32, "decode_tokens": 8, "repeats": 2, "warmup": 1},
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("eval")
    formats = [{"format": "w8a16"}, {"format": "fp8", "gates": {"max_kld": 0.0}}]  # fp8 cannot have KLD exactly 0
    recipe = write_recipe(tmp / "r.yaml", tiny_recipe(tiny_model, formats, evaluation=EVAL))
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"))
    return tmp, recipe, proc


def test_gate_failure_exits_1_and_names_gate_value_limit(evaluated):
    tmp, _, proc = evaluated
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"evaluate\[fp8\] failed its quality gates: max_kld: mean KLD [0-9.e-]+ > 0.0", proc.stderr), (
        proc.stderr
    )
    run = tmp / "runs" / "tiny"
    stages = {s["id"]: s for s in json.loads((run / "manifest.json").read_text())["stages"]}
    assert stages["evaluate[fp8]"]["status"] == "failed-gates" and stages["evaluate[w8a16]"]["status"] == "done"
    assert (run / "artifacts" / "fp8" / "config.json").exists()  # the artifact stays on disk
    rows = {r["artifact"]: r for r in json.loads((run / "results.json").read_text())}
    assert rows["fp8"]["gates"].startswith("FAILED: max_kld") and rows["w8a16"]["gates"] == "ok"
    assert stages["package[fp8]"]["status"] == "skipped" and not (run / "packages" / "fp8").exists()  # nothing to ship
    assert stages["package[w8a16]"]["status"] == "done" and (run / "packages" / "w8a16" / "README.md").exists()


def test_stages_metrics_and_results(evaluated):
    tmp, _, _ = evaluated
    run = tmp / "runs" / "tiny"
    ids = [s["id"] for s in json.loads((run / "manifest.json").read_text())["stages"]]
    assert ids.count("reference") == 1 and ids.count("eval-corpus") == 1
    assert [i for i in ids if i.startswith("evaluate[")] == ["evaluate[w8a16]", "evaluate[fp8]"]
    for art in ("base", "w8a16", "fp8"):
        m = json.loads((run / "evaluation" / art / "metrics.json").read_text())
        cpu = m["speed"]["cpu"]
        assert m["ppl"] > 0 and m["tokens"] == 4 * 63 and m["kld_method"] == "full"
        assert cpu["pp_tps"]["n"] >= 2 and cpu["pp_tps"]["min"] <= cpu["pp_tps"]["median"] <= cpu["pp_tps"]["max"]
        assert cpu["machine"]["loadavg"] and isinstance(cpu["noisy"], list) and "spread_pct" in cpu["tg_tps"]
        assert cpu["tg_tps"]["median"] > 0 and cpu["rss_mb"] > 0 and cpu["roofline_tg_tps"] > 0
    base = json.loads((run / "evaluation" / "base" / "metrics.json").read_text())
    w8 = json.loads((run / "evaluation" / "w8a16" / "metrics.json").read_text())
    assert base["kld"] == 0 and w8["base_ppl"] == pytest.approx(base["ppl"]) and 0 < w8["kld"] < 0.05
    table = (run / "results.md").read_text()
    assert all(f"| {a} |" in table for a in ("base", "w8a16", "fp8"))
    assert (run / "results.png").stat().st_size > 10_000


def test_looser_gate_passes_without_reevaluating(evaluated, tiny_model):
    tmp, recipe, _ = evaluated
    formats = [{"format": "w8a16"}, {"format": "fp8", "gates": {"max_kld": 0.5, "min_top1": 50}}]
    write_recipe(recipe, tiny_recipe(tiny_model, formats, evaluation=EVAL))
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"))
    assert proc.returncode == 0, proc.stderr
    stages = json.loads((tmp / "runs" / "tiny" / "manifest.json").read_text())["stages"]
    statuses = {s["id"]: s["status"] for s in stages}
    assert statuses.pop("package[fp8]") == "done"  # skipped while fp8 failed its gate; now it ships
    assert set(statuses.values()) == {"cached"}  # gates are checked on the cached metrics: nothing re-evaluated
    proc = cli("report", str(tmp / "runs" / "tiny"))
    assert proc.returncode == 0 and "w8a16" in proc.stdout and "report.html" in proc.stdout


@pytest.mark.parametrize(
    "evaluation,message",
    [
        ({**EVAL, "tasks": ["no_such_task_xyz"]}, "evaluation.tasks[0]: unknown lm-eval task 'no_such_task_xyz'"),
        (
            {**EVAL, "speed": {"prompt_tokens": 1000}},
            "evaluation.speed.prompt_tokens: 1000 is more than the evaluation text holds",
        ),
        ({**EVAL, "corpus": "nope"}, "evaluation.corpus: unknown source 'nope'"),
        ({**EVAL, "windows": 500}, "evaluation.windows: the source holds at most"),
    ],
)
def test_bad_evaluation_settings(tmp_path, tiny_model, evaluation, message):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}], evaluation=evaluation))
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
