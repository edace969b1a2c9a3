"""compressed-tensors type: auto through the whole pipeline on the real SmolLM2-135M-Instruct (issue 44):
at 10 % more bytes than uniform GPTQ W4A16 (g64, the largest group SmolLM2's widths of 576 take), the
measured per-group choice beats uniform GPTQ on held-out KLD; its checkpoint is one compressed-tensors file
whose size is what the choice said; q/k/v and gate/up (fused in vLLM) never mix schemes; and vLLM's CPU
build serves the bf16-upgrade variant where its W4A16 kernel runs (AVX-512)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.backends import ct_auto, ct_sensitivity
from pipeline.errors import StageError
from tests.helpers import smollm2_run

pytest.importorskip("llmcompressor")
AUTO = {"format": "gptq", "type": "auto", "like": "w4a16", "extra_pct": 10}
FORMATS_RUN = [{"format": "gptq"}, AUTO, {**AUTO, "upgrades": ["bf16"], "name": "gptq-auto-bf16"}]


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory) -> Path:
    return smollm2_run(tmp_path_factory.mktemp("ctauto"), "ctauto", FORMATS_RUN, samples=16, windows=4)


def _rows(run_dir: Path) -> dict[str, dict]:
    return {r["artifact"]: r for r in json.loads((run_dir / "results.json").read_text())}


def test_auto_beats_uniform_gptq_at_ten_percent_more_bytes(auto_run):
    rows = _rows(auto_run)
    uniform, auto = rows["gptq"], rows["gptq-auto-w4a16-10pct"]
    assert auto["kld"] < 0.9 * uniform["kld"], (auto["kld"], uniform["kld"])
    sizes = {n: ct_auto.tensor_bytes(auto_run / "packages" / n) for n in ("gptq", "gptq-auto-w4a16-10pct")}
    assert sizes["gptq-auto-w4a16-10pct"] <= 1.10 * sizes["gptq"] * 1.005, sizes  # the budget held on disk


def test_the_choice_is_what_the_checkpoint_stores(auto_run):
    package = auto_run / "packages" / "gptq-auto-w4a16-10pct"
    choice = json.loads((package / ct_auto.CHOICE_FILE).read_text())
    # the choice's byte count (stored_bytes per Linear, the rest at bf16) is the checkpoint's, within 0.5 %
    on_disk = ct_auto.tensor_bytes(package)
    assert abs(on_disk / choice["weights_bytes"] - 1) < 0.005, (on_disk, choice)
    assert choice["weights_bytes"] <= choice["budget_bytes"]
    assert set(choice["histogram"]) - {"w4a16"}, choice["histogram"]  # something was upgraded
    card = (package / "README.md").read_text()
    assert "## Weight schemes" in card and f"Expected KLD {choice['expected_kld']:.4f}" in card
    # read from the tensors themselves: every Linear of a fused group (q/k/v, gate/up) in its group's scheme
    stored = ct_auto.stored_schemes(package)
    assert len(stored) == 30 * 7, len(stored)
    for module, scheme in stored.items():
        assert scheme == choice["types"][ct_sensitivity.group_of(module)[0]], module
    assert set(stored.values()) == set(choice["histogram"]), (set(stored.values()), choice["histogram"])
    run_info = json.loads((auto_run / "manifest.json").read_text())
    quantize = next(s for s in run_info["stages"] if s["id"] == "quantize[gptq-auto-w4a16-10pct]")
    assert quantize["info"]["auto"]["stored"]["linears_checked"] == 30 * 7  # the stage checked it too


def test_a_checkpoint_off_its_choice_fails_the_check(auto_run, tmp_path):
    """The stage's own check (ct_auto.check_stored) catches a checkpoint that does not store what was chosen."""
    package = auto_run / "packages" / "gptq-auto-w4a16-10pct"
    ct_auto.check_stored(package)  # the real one passes
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in package.glob("*.safetensors"):
        (copy / f.name).symlink_to(f)  # read only: the check never writes
    choice = json.loads((package / ct_auto.CHOICE_FILE).read_text())
    group = next(g for g, t in choice["types"].items() if t == "w4a16")
    choice["types"][group] = "bf16"  # what a regex target that matched nothing would leave
    (copy / ct_auto.CHOICE_FILE).write_text(json.dumps(choice))
    with pytest.raises(StageError, match="does not store the chosen schemes"):
        ct_auto.check_stored(copy)


def test_vllm_cpu_serves_the_bf16_upgrade_variant(auto_run):
    import os

    from pipeline.tools import cpus, environments, vllm_server

    if not environments.get("vllm").ready():
        if os.environ.get("LLM_PIPELINE_REQUIRE_VLLM"):
            pytest.fail("vLLM's environment is required here: python -m pipeline setup vllm")
        pytest.skip("vLLM's environment not set up (python -m pipeline setup vllm)")
    if "avx512f" not in cpus.flags():
        pytest.skip("vLLM's CPU build runs W4A16 on AVX-512 only (FACTS.md): this CPU has AVX2")
    package = auto_run / "packages" / "gptq-auto-bf16"
    assert json.loads((package / ct_auto.CHOICE_FILE).read_text())["histogram"].get("bf16")
    name = yaml.safe_load((package / "serving" / "vllm-cpu.yaml").read_text())["served-model-name"]
    result = vllm_server.serve_check(package, "vllm-cpu.yaml", name, auto_run.parent / "auto-vllm.log")
    assert result["status"] == "ok" and result["answer"].strip(), result
