"""What the package stages know at plan time: the calibration set's Hub dataset for the card's `datasets:`."""

from __future__ import annotations

from conftest import tiny_recipe, write_recipe

from pipeline import api
from pipeline.graph.packaging import calibration_datasets
from pipeline.recipe import CalibrationSpec


def test_card_datasets_name_the_calibration_hub_dataset(tiny_model, tmp_path):
    formats = [{"format": "gptq", "group_size": 64}, {"format": "w8a16"}]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"source": "sharegpt"}))
    plan = api.plan(recipe, tmp_path / "runs")
    datasets = {s.id: s.config["datasets"] for s in plan.stages if s.kind == "package"}
    assert datasets == {"package[gptq]": ["anon8231489123/ShareGPT_Vicuna_unfiltered"], "package[w8a16]": []}

    hub = {"kind": "hub", "path": "org/data", "text_field": "text"}
    for source, expected in (("default", []), (hub, ["org/data"]), ({**hub, "hub_id": "org/other"}, ["org/other"])):
        r = plan.recipe.model_copy(update={"calibration": CalibrationSpec(source=source)})
        assert calibration_datasets(r) == expected, source
