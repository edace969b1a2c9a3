"""Each format family's quantize cost sees the options that change the work or the bytes: GPTQ's bits,
AutoRound's iterations, and each llama.cpp type's own size (never one figure for every i-quant)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.backends import FORMATS
from pipeline.backends.gguf import TYPES
from pipeline.backends.gguf_cost import GGUF_BPW, gguf_bits
from pipeline.cost.machine_speed import MachineSpeed
from pipeline.cost.model import REFERENCE, CostInputs
from pipeline.cost.shapes import ModelShape
from pipeline.devtools.twin_archs import ARCHS

SPEED = MachineSpeed(
    "ref", "reference", 2, 24.0, (), "", REFERENCE["gemm_f32_gflops"], REFERENCE["gemm_bf16_gflops"],
    REFERENCE["memory_gbps"], REFERENCE["disk_write_gbps"], REFERENCE["quantize_mparams_s"], 0.0,
)  # fmt: skip
SHAPE = ModelShape.from_config({**ARCHS["llama-3.1-8b"], "num_hidden_layers": 4})


def _cost(entry: dict):
    opts = FORMATS[entry["format"]].options.model_validate(entry)
    given = CostInputs(SHAPE, SPEED, "bfloat16", 64 * 512, 0, {opts.artifact: opts}, calibration_seq_len=512)
    return FORMATS[opts.format].backend.cost(opts, given)


def test_gptq_at_8_bits_writes_twice_the_weights_of_4_bits():
    four, eight = _cost({"format": "gptq"}), _cost({"format": "gptq", "bits": 8})
    embeddings = SHAPE.embeddings * 2
    assert (eight.written_bytes - embeddings) / (four.written_bytes - embeddings) == pytest.approx(1.0 / 0.53)


@pytest.mark.parametrize("entry", [{"format": "autoround"}, {"format": "awq", "rounding": "autoround"}])
def test_autoround_time_grows_with_its_iterations(entry):
    few, many = _cost({**entry, "iters": 50}), _cost({**entry, "iters": 1000})
    assert many.seconds > 3 * few.seconds, (few, many)


def test_every_llama_cpp_type_a_recipe_names_has_its_own_size():
    assert set(TYPES) <= set(GGUF_BPW)  # no type falls back to a shared guess
    bits = {t: gguf_bits(SimpleNamespace(type=t, like=None, target_bpw=None)) for t in ("IQ2_XXS", "IQ3_S", "IQ4_XS")}
    assert bits["IQ2_XXS"] < bits["IQ3_S"] < bits["IQ4_XS"] < gguf_bits(SimpleNamespace(type="Q4_K_M", like=None))
    small, big = _cost({"format": "gguf", "type": "IQ2_XXS"}), _cost({"format": "gguf", "type": "IQ4_XS"})
    assert small.written_bytes < 0.55 * big.written_bytes


def test_llm_compressor_s_offload_folder_counts_toward_the_disk_peak(monkeypatch):
    assert _cost({"format": "awq"}).scratch_bytes == 0  # fits this machine's memory: nothing offloaded
    monkeypatch.setenv("LLM_PIPELINE_MAX_CPU_MEMORY", "1GB")  # the budget that sends the rest to disk
    offloaded = _cost({"format": "awq"}).scratch_bytes
    assert offloaded > 1e9, offloaded  # 1.3 B parameters in bf16, 1 GB of them in memory


def test_a_compressed_mixture_of_experts_evaluation_counts_its_dense_copy():
    from pipeline.cost.stage_costs import evaluate

    moe = ModelShape.from_config({**ARCHS["qwen3-30b-a3b"], "num_hidden_layers": 2})

    def scratch(fmt: str, shape: ModelShape) -> int:
        opts = FORMATS[fmt].options.model_validate({"format": fmt})
        given = CostInputs(shape, SPEED, "bfloat16", 0, 2 * 512, {fmt: opts}, eval_context=512)
        stage = SimpleNamespace(id=f"evaluate[{fmt}]", kind="evaluate", artifact=fmt, config={"engine": "transformers"})
        return evaluate(stage, given).scratch_bytes

    assert scratch("w8a16", moe) == CostInputs(moe, SPEED, "bfloat16", 0, 0, {}).compute_bytes()
    assert scratch("w8a16", SHAPE) == 0  # a dense model's artifact loads as it is
