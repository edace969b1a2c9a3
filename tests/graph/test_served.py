"""The vLLM part of the plan: serve checks (and measurements through vLLM) only where vLLM loads the
kind, off by a recipe option, and a one-line note instead of them when vLLM's environment is not set up."""

from __future__ import annotations

from pipeline.tools import environments
from tests.conftest import cli, tiny_recipe, write_recipe

FORMATS = [{"format": "w8a16"}, {"format": "bnb-nf4"}]


def _plan(tmp_path, tiny_model, **evaluation):
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, FORMATS, evaluation={"enabled": True, **evaluation})
    )
    return cli("plan", str(recipe))  # in a child: it sees this test's LLM_PIPELINE_CACHE


def test_without_vllm_environment_the_checks_are_a_one_line_note(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PIPELINE_CACHE", str(tmp_path / "empty-cache"))
    proc = _plan(tmp_path, tiny_model)
    assert proc.returncode == 0, proc.stderr
    assert "serve-check[" not in proc.stdout and "@vllm]" not in proc.stdout
    note = [line for line in (proc.stdout + proc.stderr).splitlines() if "serve checks and evaluation skipped" in line]
    assert len(note) == 1 and "python -m pipeline setup vllm" in note[0]


def test_checks_only_what_vllm_loads_and_the_option_turns_them_off(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PIPELINE_CACHE", str(tmp_path / "cache"))
    env = environments.get("vllm")  # ready as far as a plan can tell: its marker (a plan never starts it)
    env.home.mkdir(parents=True)
    (env.home / environments.MARKER).write_text("{}")
    proc = _plan(tmp_path, tiny_model)
    assert proc.returncode == 0, proc.stderr
    assert "serve-check[base]" in proc.stdout and "serve-check[w8a16]" in proc.stdout
    assert "floor[vllm]" in proc.stdout and "evaluate[w8a16@vllm]" in proc.stdout
    assert "serve-check[bnb-nf4]" not in proc.stdout and "bnb-nf4@vllm" not in proc.stdout  # vLLM's core loads no bnb
    assert "skipped" not in proc.stdout + proc.stderr
    off = _plan(tmp_path, tiny_model, vllm=False)
    assert (
        off.returncode == 0
        and not any(s in off.stdout for s in ("serve-check[", "@vllm]", "floor[vllm]"))
        and "skipped" not in off.stderr
    )
    top_k = _plan(tmp_path, tiny_model, kld="top-k")  # vLLM's top-k needs the base's full log-probs to compare with
    assert top_k.returncode == 0 and "serve-check[w8a16]" in top_k.stdout and "@vllm]" not in top_k.stdout
    assert "vLLM evaluation skipped: it needs the base's full log-probs" in top_k.stdout + top_k.stderr


def test_plan_says_what_this_machines_vllm_cannot_serve(tiny_model, monkeypatch):
    """Declared by the vLLM engine from what its CPU build was seen refusing, for the CPU the plan read; a GPU
    machine says nothing."""
    from pipeline.graph import served
    from pipeline.graph.machine import Machine
    from pipeline.recipe import Recipe

    entries = [{"format": "nvfp4a16"}, {"format": "fp8-block"}, {"format": "fp8", "kv_cache": "fp8"}]
    recipe = Recipe.model_validate(tiny_recipe(tiny_model, entries))
    said = served.refusals(recipe, Machine(cpu_flags=("avx2", "avx512f")))
    assert [line.split(":")[0] for line in said] == ["nvfp4a16", "fp8-block"]  # fp8 with an FP8 KV cache is served
    assert "FP4" in said[0] and "AMX" in said[1]
    amx = Machine(cpu_flags=("avx2", "avx512f", "amx_tile"))
    assert [line.split(":")[0] for line in served.refusals(recipe, amx)] == ["nvfp4a16"]
    monkeypatch.setattr(environments, "accelerator", lambda: "cuda")
    assert served.refusals(recipe, amx) == []
