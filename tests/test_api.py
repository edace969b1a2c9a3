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
    with pytest.raises(RecipeError, match="only_formats names 'awq'"):
        api.run(recipe, workdir=tmp_path / "runs", only_formats=["awq"])
