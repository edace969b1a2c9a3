"""The cost model's model sizes, from config.json alone, against the published parameter counts."""

from __future__ import annotations

import pytest

from pipeline.cost.shapes import ModelShape
from pipeline.devtools.twin_archs import ARCHS
from tests.devtools.test_twins import ACTIVE, PUBLISHED


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_ones(arch):
    shape = ModelShape.from_config(ARCHS[arch])
    # norms (and Qwen2.5's q/k/v biases) are left out: under 0.01 % of any of these models
    assert abs(shape.params - PUBLISHED[arch]) / PUBLISHED[arch] < 1e-4
    if arch in ACTIVE:
        low, high = ACTIVE[arch]
        assert low <= shape.active <= high and shape.experts > 1
    else:
        assert shape.active == shape.params and shape.experts == 0


def test_gptq_work_grows_with_the_square_of_the_input_width():
    """GPTQ's column update costs out x in^2 per Linear: Mixtral's 14336-wide down projections dominate."""
    dense = ModelShape.from_config(ARCHS["llama-3.1-8b"])
    wider = ModelShape.from_config({**ARCHS["llama-3.1-8b"], "intermediate_size": 2 * 14336})
    # the MLP's share: gate/up (in 4096) double, down (in 14336 -> 28672) quadruples in in^2 and doubles in out
    assert 2.5 < wider.column_work / dense.column_work < 4.5


def test_gptq_columns_count_every_linears_input_width_expert_by_expert():
    """GPTQ's per-column loop runs once per input column of every Linear: on Qwen3-30B-A3B the 128 narrow experts
    of each layer have 75x the attention's columns (gate/up read the hidden 2048, down the expert width 768)."""
    shape = ModelShape.from_config(ARCHS["qwen3-30b-a3b"])
    attention = 48 * (3 * 2048 + 32 * 128)  # q, k, v read the hidden state, o the 32 heads of 128
    assert shape.columns == attention + 48 * 128 * (2 * 2048 + 768)
    dense = ModelShape.from_config(ARCHS["llama-3.1-8b"])
    assert dense.columns == 32 * (6 * 4096 + 14336)


def test_a_config_without_the_usual_shape_keys_gives_no_estimates_not_a_crash(tiny_model, tmp_path):
    """A remote-code model may name its sizes differently (n_layer, d_model): plan goes on, without figures."""
    import json
    import shutil

    from pipeline.cost import estimate
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe
    from tests.conftest import tiny_recipe, write_recipe

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    del config["num_hidden_layers"]
    (model / "config.json").write_text(json.dumps(config))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model, [{"format": "fp8"}]))
    cost = estimate(build_plan(load_recipe(recipe), recipe, tmp_path / "runs"))
    assert cost.stages == {} and "no estimates: the model's config lacks a shape (KeyError" in cost.note


def test_calibrating_a_mixture_of_experts_costs_every_expert_not_the_top_k():
    """llm-compressor runs every expert on every calibration token (moe_calibrate_all_experts): what more
    experts add at the same top-8 grows with the calibration tokens (priced by the top-k, it would not)."""
    from types import SimpleNamespace

    from pipeline.backends.llmcompressor import AwqOptions
    from pipeline.cost.machine_speed import MachineSpeed
    from pipeline.cost.model import REFERENCE, CostInputs
    from pipeline.cost.quantize_costs import quantize

    speed = MachineSpeed(
        "ref", "reference", 2, 24.0, (), "", REFERENCE["gemm_f32_gflops"], REFERENCE["gemm_bf16_gflops"],
        REFERENCE["memory_gbps"], REFERENCE["disk_write_gbps"], REFERENCE["quantize_mparams_s"], 0.0,
    )  # fmt: skip
    awq = {"a": AwqOptions(format="awq", n_grid=5)}
    stage = SimpleNamespace(artifact="a", id=None)
    moe = {**ARCHS["qwen3-30b-a3b"], "num_hidden_layers": 8}

    def added_by_112_experts(tokens):
        def seconds(experts):
            shape = ModelShape.from_config({**moe, "num_experts": experts})
            return quantize(stage, CostInputs(shape, speed, "float32", tokens, 0, awq, calibration_seq_len=128)).seconds

        return seconds(128) - seconds(16)

    assert 1.9 < added_by_112_experts(8192) / added_by_112_experts(4096) < 2.1
