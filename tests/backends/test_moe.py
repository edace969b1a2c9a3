"""Mixture-of-experts: a 1-layer Qwen3-MoE shape twin (real widths: hidden 2048, expert width 768; 16 of
its 128 experts, top-8; vocabulary cut for CI) through AWQ, W8A16, FP8 and GGUF Q4_K_M, evaluated. The
files are read: every expert is in the format's layout, the router is untouched, every expert saw
calibration tokens, `type: auto`'s error weighs each expert by its own importance, and bitsandbytes is
refused at plan. Random weights: compatibility only. (`type: auto` end to end on this twin adds ~6
minutes of llama-quantize passes: PIPELINE_MOE_AUTO=1 adds it.)"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import cli, llama_cpp_or_skip, write_recipe

EXPERTS = 16
FORMATS = [
    {"format": "awq", "group_size": 128, "n_grid": 4},  # a coarse grid: the mechanics are tested, not the search
    {"format": "w8a16"},
    {"format": "fp8"},
    {"format": "gguf", "type": "Q4_K_M"},
] + ([{"format": "gguf", "type": "auto", "like": "Q4_K_M"}] if os.environ.get("PIPELINE_MOE_AUTO") else [])
EVALUATION = {
    "enabled": True,
    "vllm": False,
    "default_gates": False,  # random weights: quality gates mean nothing here
    "corpus": "embedded",
    "windows": 2,
    "context": 64,
    "speed": {"enabled": False},
}


def _recipe(tmp, formats):
    return write_recipe(
        tmp / "r.yaml",
        {
            "name": "moe",
            "model": {"path": str(tmp / "model")},
            "calibration": {"source": "default", "samples": 4, "seq_len": 64},
            "formats": formats,
            "evaluation": EVALUATION,
            "package": {"enabled": False},
        },
    )


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory):
    llama_cpp_or_skip()
    tmp = tmp_path_factory.mktemp("moe")
    proc = cli(
        "-q", "twin", "qwen3-30b-a3b", "--layers", "1", "--vocab", "49152", "--experts", str(EXPERTS),
        "--out", str(tmp / "model"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = cli("-q", "run", str(_recipe(tmp, FORMATS)), "-w", str(tmp / "runs"), timeout=1800)
    yield tmp, proc, tmp / "runs" / "moe"
    shutil.rmtree(tmp, ignore_errors=True)


def _tensors(path):
    from safetensors import safe_open

    with safe_open(str(next(path.glob("*.safetensors"))), "pt") as f:
        return {k: str(f.get_slice(k).get_dtype()) for k in f.keys()}


def test_every_expert_is_quantized_and_the_router_is_not(moe_run):
    _, proc, run = moe_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    layout = {  # artifact -> (suffix of a quantized expert projection, its dtype)
        "awq": ("weight_packed", "I32"),
        "w8a16": ("weight_packed", "I32"),
        "fp8": ("weight", "F8_E4M3"),
    }
    for art, (suffix, dtype) in layout.items():
        tensors = _tensors(run / "artifacts" / art)
        for e in range(EXPERTS):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                name = f"model.layers.0.mlp.experts.{e}.{proj}.{suffix}"
                assert tensors.get(name) == dtype, (art, name, tensors.get(name))
        assert tensors["model.layers.0.mlp.gate.weight"] == "BF16", art  # the router stays as it was
        assert not [k for k in tensors if k.startswith("model.layers.0.mlp.gate.weight_")], art


def test_every_expert_saw_calibration_tokens(moe_run):
    _, proc, run = moe_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = {s["id"]: s for s in json.loads((run / "manifest.json").read_text())["stages"]}
    experts = stages["quantize[awq]"]["info"]["experts"]
    assert len(experts["calibrated_rows"]["0"]) == EXPERTS and experts["min_calibrated_rows"] > 0
    assert len(experts["routed_tokens"]["0"]) == EXPERTS and experts["experts_never_routed"] == 0
    counts = stages["imatrix[f16]"]["info"]["expert_tokens"]["blk.0.ffn_down_exps.weight"]  # llama-imatrix's own counts
    assert len(counts) == EXPERTS and min(counts) > 0


def test_gguf_experts_are_k_quants_and_the_router_is_not(moe_run):
    from gguf import GGUFReader

    _, proc, run = moe_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for art in [a for a in ("gguf-q4_k_m", "gguf-auto-q4_k_m") if (run / "artifacts" / a).exists()]:
        reader = GGUFReader(str(next((run / "artifacts" / art).glob("*.gguf"))))
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        for proj in ("gate", "up", "down"):
            assert types[f"blk.0.ffn_{proj}_exps.weight"] in {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"}, types
        assert types["blk.0.ffn_gate_inp.weight"] in {"F32", "F16", "BF16"}  # llama.cpp keeps the router unquantized


def test_sensitivity_weighs_each_expert_by_its_own_importance(moe_run):
    """`type: auto`'s error of a stacked expert tensor uses each expert's own row of the importance matrix
    (the crash of issue 29: every expert was normalised by one count); swapping experts' rows changes it."""
    import numpy as np
    from gguf import GGUFReader

    from pipeline.backends import gguf_sensitivity

    _, proc, run = moe_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    importance = gguf_sensitivity._importance(next(run.glob("imatrix-*/imatrix.gguf")))
    name = "blk.0.ffn_down_exps.weight"
    assert importance[name].shape == (EXPERTS, 768)
    original = next(t for t in GGUFReader(next(run.glob("gguf-convert-*/*.gguf"))).tensors if t.name == name)
    quantized = next(
        t for t in GGUFReader(next((run / "artifacts" / "gguf-q4_k_m").glob("*.gguf"))).tensors if t.name == name
    )
    error = gguf_sensitivity._error(original, quantized, importance[name])
    swapped = gguf_sensitivity._error(original, quantized, np.roll(importance[name], 1, axis=0))
    assert error > 0 and not np.isclose(error, swapped)
    if (run / "artifacts" / "gguf-auto-q4_k_m").exists():
        sensitivity = json.loads(next(run.glob("gguf-sensitivity-*/sensitivity.json")).read_text())
        assert sensitivity["tensors"][name]["types"]["q4_K"]["error"] > 0


def test_every_artifact_has_an_evaluation_row(moe_run):
    _, proc, run = moe_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["artifact"]: r for r in json.loads((run / "results.json").read_text())}
    for art in ("awq", "w8a16", "fp8", "gguf-q4_k_m"):
        metrics = json.loads((run / "evaluation" / art / "metrics.json").read_text())
        assert metrics["kld"] > 0 and art in rows, art
        if not art.startswith("gguf"):
            assert "weights only" in metrics["caveat"]


def test_bitsandbytes_is_refused_at_plan_naming_the_share_left_bf16(moe_run):
    tmp, _, _ = moe_run
    proc = cli("plan", str(_recipe(tmp, [{"format": "bnb-nf4"}])), "-w", str(tmp / "plan"))
    assert proc.returncode == 2, proc.stderr
    assert "bitsandbytes quantizes nn.Linear layers only" in proc.stderr and "% of its weights" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
