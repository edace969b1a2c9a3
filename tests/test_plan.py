"""plan: feasibility checks before heavy work, serving notes, and missing optional backends."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import tiny_recipe, write_recipe, cli


def test_missing_backend_names_the_pip_extra(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}, {"format": "bnb-nf4"}]))
    # sys.modules[name] = None is how Python itself marks a module as unavailable: find_spec gives None.
    code = ("import sys; sys.modules['bitsandbytes'] = None; from pipeline.cli import main; "
            f"sys.argv = ['pipeline', 'plan', {str(recipe)!r}]; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "r.yaml:6: formats[1].format: format 'bnb-nf4' needs bitsandbytes: pip install 'llm-quant-pipeline[bnb]'" in proc.stderr


def test_plan_says_where_fp8_and_int8_serve(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}, {"format": "w8a8-int8"}]))
    proc = cli("plan", str(recipe))
    assert proc.returncode == 0
    assert "fp8: FP8 W8A8 runs at speed in vLLM on NVIDIA compute capability >= 8.9" in proc.stdout
    assert "w8a8-int8: INT8 W8A8 kernels in vLLM need NVIDIA compute capability >= 7.5" in proc.stdout


def test_unimplemented_sections_are_announced_not_silently_ignored(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}], publish={"enabled": True}))
    proc = cli("plan", str(recipe))
    assert proc.returncode == 0 and "publish: not implemented in this version yet" in proc.stderr
