from __future__ import annotations

import pytest

from pipeline import api
from pipeline.errors import RecipeError
from tests.conftest import tiny_recipe, write_recipe


def test_api_run_selected_formats_and_reuse(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}, {"format": "w8a16"}]))
    result = api.run(recipe, workdir=tmp_path / "runs", only_formats=["w8a16"])
    assert result.ok and set(result.artifacts) == {"w8a16"} and not result.failures
    assert (result.artifacts["w8a16"] / "config.json").exists()
    again = api.run(recipe, workdir=tmp_path / "runs")
    assert again.ok and set(again.artifacts) == {"fp8", "w8a16"}
    assert again.artifacts["w8a16"] == result.artifacts["w8a16"], "the finished artifact is reused"
    with pytest.raises(RecipeError, match="'awq' is not an artifact of this recipe"):
        api.run(recipe, workdir=tmp_path / "runs", only_formats=["awq"])


def test_api_returns_metrics_and_gate_failures(tiny_model, tmp_path):
    evaluation = {
        "enabled": True,
        "corpus": "embedded",
        "windows": 2,
        "context": 48,
        "speed": {"enabled": False},
        "vllm": False,
    }
    formats = [{"format": "w8a16"}, {"format": "fp8", "gates": {"min_top1": 100.0, "max_kld": 0.0}}]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, evaluation=evaluation))
    result = api.run(recipe, workdir=tmp_path / "runs")
    assert (
        not result.ok
        and list(result.failures) == ["evaluate[fp8]", "package[fp8]"]
        and "max_kld" in result.failures["evaluate[fp8]"]
    )
    assert (
        set(result.packages) == {"w8a16"} and (result.packages["w8a16"] / "README.md").exists()
    )  # a gate failure is not shipped
    assert set(result.metrics) == {"base", "w8a16", "fp8"} and result.metrics["base"]["kld"] == 0
    assert result.metrics["w8a16"]["ppl"] > 0 and (result.run_dir / "results.md").exists()
