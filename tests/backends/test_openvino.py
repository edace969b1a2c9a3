"""OpenVINO formats: recipe options -> optimum-intel's OVWeightQuantizationConfig fields, what needs the
calibration set, and the shared export stage (the quantization itself: tests/test_openvino_recipe.py)."""

from __future__ import annotations

import pytest

from pipeline.backends import FORMATS
from pipeline.backends.openvino import nncf_config
from pipeline.recipe import Recipe


def _opts(tiny_model, entry):
    return Recipe.model_validate({"name": "t", "model": {"path": str(tiny_model)}, "formats": [entry]}).formats[0]


@pytest.mark.parametrize(
    "entry,config,calibrated",
    [
        ({"format": "openvino-int8"}, {"bits": 8, "sym": False}, False),
        ({"format": "openvino-int8", "symmetric": True}, {"bits": 8, "sym": True}, False),
        (
            {"format": "openvino-int4", "group_size": 32, "mode": "data-free"},
            {"bits": 4, "sym": False, "group_size": 32, "ratio": 1.0},
            False,
        ),
        (
            {"format": "openvino-int4"},
            {"bits": 4, "sym": False, "group_size": 128, "ratio": 1.0, "quant_method": "awq", "scale_estimation": True},
            True,
        ),
        (
            {"format": "openvino-int4", "mode": "gptq", "ratio": 0.8, "group_size": -1},
            {"bits": 4, "sym": False, "group_size": -1, "ratio": 0.8, "gptq": True},
            True,
        ),
    ],
)
def test_options_map_onto_nncf(tiny_model, entry, config, calibrated):
    opts = _opts(tiny_model, entry)
    backend = FORMATS[opts.format].backend
    assert nncf_config(opts) == config and backend.needs_calibration(opts) == calibrated
    assert backend.engine == "openvino" and backend.kind == "openvino"


def test_every_openvino_format_shares_one_export(tiny_model):
    """INT4 and INT8 compress the same unquantized export, which is also the OpenVINO engine's floor."""
    from pipeline.engines import get

    steps = [
        s
        for e in ({"format": "openvino-int4", "group_size": 32}, {"format": "openvino-int8"})
        for s in FORMATS[e["format"]].backend.shared_steps(_opts(tiny_model, e))
    ]
    assert {s.id for s in steps} == {"openvino-export[fp16]"}
    assert get("openvino").floor == steps[0].kind


def test_group_size_zero_is_refused(tiny_model):
    with pytest.raises(ValueError, match="group_size"):
        _opts(tiny_model, {"format": "openvino-int4", "group_size": 0})
