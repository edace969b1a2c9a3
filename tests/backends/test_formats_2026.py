"""The formats of 2026 through the whole pipeline (issue 44), on the real SmolLM2-135M-Instruct: the
evaluation measures what the format does, not less. W4A4 must cost more than the same FP4 weights alone
(the activations' quantization is emulated, not dropped), and an FP8 KV cache must cost something on top
of the same FP8 weights (the cache is quantized in the evaluation too), with its scales in the checkpoint
and `kv-cache-dtype: fp8` in the package's vLLM configs. Block FP8 on a model whose widths 128 tiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.backends import FORMATS
from pipeline.recipe import Recipe
from tests.conftest import build_tiny_model
from tests.helpers import logits, probe_ids, smollm2_run, stage_ctx

pytest.importorskip("llmcompressor")
FORMATS_RUN = [
    {"format": "nvfp4a16"},
    {"format": "nvfp4"},
    {"format": "fp8"},
    {"format": "fp8", "kv_cache": "fp8"},
]


@pytest.fixture(scope="module")
def run_2026(tmp_path_factory) -> Path:
    return smollm2_run(tmp_path_factory.mktemp("f2026"), "f2026", FORMATS_RUN, samples=8, windows=2)


def _rows(run_dir: Path) -> dict[str, dict]:
    return {r["artifact"]: r for r in json.loads((run_dir / "results.json").read_text())}


def test_w4a4_is_evaluated_with_its_activations_quantized(run_2026):
    rows = _rows(run_2026)
    # measured with 4 windows: nvfp4 0.406, nvfp4a16 0.216 (mxfp4 1.11 against mxfp4a16 0.433)
    assert rows["nvfp4"]["kld"] > 1.3 * rows["nvfp4a16"]["kld"], (rows["nvfp4"]["kld"], rows["nvfp4a16"]["kld"])
    metrics = json.loads(next((run_2026 / "evaluation").glob("nvfp4/metrics.json")).read_text())
    assert "bfloat16" in metrics["caveat"]  # FP4 unpacks to bf16 only: the row says what it computed in


def test_fp8_kv_cache_scales_are_stored_served_and_measured(run_2026):
    from safetensors import safe_open

    rows = _rows(run_2026)
    # the same FP8 weights (per-channel min/max either way); the cache's quantization is the difference
    # (4 windows: 0.0334 against 0.0263)
    assert rows["fp8-kv-fp8"]["kld"] > rows["fp8"]["kld"] > 0, (rows["fp8-kv-fp8"]["kld"], rows["fp8"]["kld"])
    package = run_2026 / "packages" / "fp8-kv-fp8"
    qc = json.loads((package / "config.json").read_text())["quantization_config"]
    assert qc["kv_cache_scheme"]["num_bits"] == 8 and qc["kv_cache_scheme"]["type"] == "float"
    with safe_open(str(next(package.glob("*.safetensors"))), "pt") as f:
        scales = [k for k in f.keys() if k.endswith(("self_attn.k_scale", "self_attn.v_scale"))]
        assert len(scales) == 2 * 30 and all(float(f.get_tensor(k).float().max()) > 0 for k in scales)
    for name in ("vllm.yaml", "vllm-cpu.yaml"):
        assert yaml.safe_load((package / "serving" / name).read_text())["kv-cache-dtype"] == "fp8"
    plain = yaml.safe_load((run_2026 / "packages" / "fp8" / "serving" / "vllm.yaml").read_text())
    assert "kv-cache-dtype" not in plain


def test_fp8_block_quantizes_and_reloads_where_128_tiles_every_weight(tmp_path):
    model = build_tiny_model(tmp_path / "wide", hidden=256)  # kv heads x head_dim = 2 x 64 = 128
    opts = Recipe.model_validate({"name": "t", "model": {"path": str(model)}, "formats": [{"format": "fp8-block"}]})
    opts = opts.formats[0]
    out = tmp_path / "out"
    out.mkdir()
    with stage_ctx() as ctx:
        info = FORMATS["fp8-block"].backend.quantize(opts, {"source": model}, out, ctx)
    assert info["entrypoint"] == "model_free_ptq"  # data-free: shard by shard
    group = next(iter(json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"].values()))
    assert group["weights"]["block_structure"] == [128, 128] and group["input_activations"]["group_size"] == 128
    ids = probe_ids()
    base, quant = logits(model, ids), logits(out, ids)
    diff = (base - quant).abs().max().item()
    assert 0 < diff < 0.3 * base.abs().max().item(), diff
