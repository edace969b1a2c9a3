"""Shape twins: the exact tensor shapes of real architectures (dense and mixture-of-experts), and each
dense family through AWQ at group size 128 (GPTQ too for Llama), FP8 and GGUF Q4_K_M (K-quants with no
fallback types), every artifact reloading and generating. Random weights: these tests are about
compatibility, never quality."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.devtools import twins
from tests.conftest import ROOT, cli, llama_cpp_or_skip, write_recipe

# Parameter counts the model cards publish (embeddings included): total, and active per token for MoE
# (Qwen3-30B-A3B: "30.5B, 3.3B activated"; Mixtral-8x7B: 46.7B, 12.9B active).
PUBLISHED = {
    "llama-3.1-8b": 8_030_261_248,
    "qwen2.5-7b": 7_615_616_512,
    "mistral-7b-v0.3": 7_248_023_552,
    "qwen3-8b": 8_190_735_360,
    "qwen3-30b-a3b": 30_532_122_624,
    "mixtral-8x7b": 46_702_792_704,
}
ACTIVE = {"qwen3-30b-a3b": (3.3e9, 3.4e9), "mixtral-8x7b": (12.85e9, 12.95e9)}
K_QUANTS = {"Q4_K", "Q6_K"}  # what Q4_K_M writes when every width is a multiple of 256
CI_VOCAB = {"llama-3.1-8b": 49152, "qwen2.5-7b": 32768, "mistral-7b-v0.3": 32768}  # smallest each twin tokenizer allows
CI_RUNS = list(CI_VOCAB)  # the dense families CI runs through the formats (MoE: tests/backends/test_moe.py)
# GPTQ's code path does not depend on the architecture (AWQ's layer mappings do), and GPTQ at Llama-3.1-8B's
# widths (hidden 4096, 32/8 heads, MLP 14336) runs on the Mixtral twin of tests/backends/test_moe.py, whose
# attention and expert shapes are exactly those: a second run here cost CI ~80 s.


def _model(cfg, device="meta"):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
    with torch.device(device):
        return AutoModelForCausalLM.from_config(hf_config)


@pytest.mark.parametrize("arch", list(twins.ARCHS))
def test_twin_shapes_are_the_real_architectures(arch, tmp_path):
    """Every tensor name and shape equals what transformers writes for the real config, and the
    full-depth parameter count equals the published one (active parameters too for MoE). Dense: the
    state dict transformers builds on the meta device (no memory). MoE: transformers fuses experts in
    memory and splits them back on save, so a small real model (2 layers, 4 experts, narrow widths)
    is saved and its files read."""
    import torch
    from safetensors import safe_open

    cfg = twins.config(arch, twins.ARCHS[arch]["num_hidden_layers"])
    ours = dict(twins.tensor_shapes(cfg))
    full = sum(v.numel() for v in _model(cfg).state_dict().values())
    assert sum(torch.Size(s).numel() for s in ours.values()) == full == PUBLISHED[arch]
    if arch not in ACTIVE:
        assert ours == {k: tuple(v.shape) for k, v in _model(cfg).state_dict().items()}
        assert twins.active_params(cfg) == full
        return
    low, high = ACTIVE[arch]
    assert low <= twins.active_params(cfg) <= high
    small = twins.config(arch, 2, vocab=512, experts=max(4, cfg["num_experts_per_tok"]))
    narrow = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2}
    small.update(narrow, **{k: 64 for k in ("moe_intermediate_size", "head_dim") if k in small})
    _model(small, "cpu").save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        written = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert dict(twins.tensor_shapes(small)) == written


def test_moe_twin_routes_tokens_to_every_expert(tmp_path):
    """The twin's routers (orthogonal rows of equal norm) send tokens of ordinary text to every expert:
    random rows of unequal norm let top-k starve some experts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    proc = cli(
        "-q",
        "twin",
        "qwen3-30b-a3b",
        "--layers",
        "1",
        "--vocab",
        "49152",
        "--experts",
        "32",
        "--out",
        str(tmp_path / "m"),
    )
    assert proc.returncode == 0, proc.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    lines = (ROOT / "calibration" / "data" / "embedded.jsonl").read_text().splitlines()[:8]
    ids = tok(" ".join(json.loads(line)["text"] for line in lines), return_tensors="pt")
    routed = []
    gate = model.model.layers[0].mlp.gate
    handle = gate.register_forward_hook(lambda m, a, out: routed.append(out[2] if isinstance(out, tuple) else out))
    model(**ids)
    handle.remove()
    counts = torch.bincount(routed[0].reshape(-1), minlength=32)
    assert (counts > 0).all(), counts.tolist()


@pytest.fixture(scope="module", params=CI_RUNS)
def twin_run(request, tmp_path_factory):
    """One recipe run per architecture: 1-layer twin (vocabulary cut for CI), awq, fp8 and gguf Q4_K_M. One
    architecture at a time, its files deleted after its tests: all three at once filled a CI disk."""
    llama_cpp_or_skip()
    arch = request.param
    tmp = tmp_path_factory.mktemp(arch)
    proc = cli("-q", "twin", arch, "--layers", "1", "--vocab", str(CI_VOCAB[arch]), "--out", str(tmp / "model"))
    assert proc.returncode == 0, proc.stderr
    recipe = write_recipe(
        tmp / "r.yaml",
        {
            "name": arch,
            "model": {"path": str(tmp / "model")},
            "calibration": {"source": "default", "samples": 2, "seq_len": 64},
            # n_grid 4: AWQ's scale search at a coarse grid; its mechanics and layout are what is tested here.
            "formats": [
                {"format": "awq", "group_size": 128, "n_grid": 4},
                {"format": "fp8"},
                {"format": "gguf", "type": "Q4_K_M"},
            ],
            "package": {"enabled": False},
        },
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"), timeout=1800)
    yield proc, tmp / "runs" / arch
    shutil.rmtree(tmp, ignore_errors=True)


def test_twin_through_every_format_reloads_and_generates(twin_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    proc, run = twin_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    for art in ("awq", "fp8"):
        path = run / "artifacts" / art
        qc = json.loads((path / "config.json").read_text())["quantization_config"]
        group = next(iter(qc["config_groups"].values()))["weights"]
        assert art == "fp8" or group["group_size"] == 128
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        ids = tok("The capital of France is", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
        assert out.shape[1] == ids["input_ids"].shape[1] + 3, art


def test_twin_gguf_is_all_k_quants_and_runs_in_llama_cpp(twin_run):
    from gguf import GGUFReader
    from llama_cpp import Llama

    from pipeline.checkpoints.filecheck import gguf_data_end

    proc, run = twin_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = next((run / "artifacts" / "gguf-q4_k_m").glob("*.gguf"))
    reader = GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert set(types.values()) <= K_QUANTS, {
        n: t for n, t in types.items() if t not in K_QUANTS
    }  # no Q5_0/Q8_0 fallbacks
    assert gguf_data_end(path) == max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    llm = Llama(model_path=str(path), n_ctx=64, verbose=False)
    out = llm.create_completion("The capital of France is", max_tokens=3, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1


def test_twin_refuses_an_out_dir_that_is_not_a_twin(tmp_path):
    """`--out .` or a real checkpoint must never be deleted to make room for a twin: refused before any work."""
    real = tmp_path / "my-checkpoint"
    real.mkdir()
    (real / "config.json").write_text("{}")
    proc = cli("-q", "twin", "qwen2.5-7b", "--layers", "1", "--vocab", "32768", "--out", str(real))
    assert proc.returncode == 2 and "is not empty and is not a twin" in proc.stderr, proc.stderr
    assert [p.name for p in real.iterdir()] == ["config.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dir left beside it"
