"""plan: feasibility checks before heavy work, serving notes, and missing optional backends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import cli, tiny_recipe, write_recipe


def test_missing_backend_names_the_pip_extra(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}, {"format": "bnb-nf4"}]))
    # sys.modules[name] = None is how Python itself marks a module as unavailable: find_spec gives None.
    code = (
        "import sys; sys.modules['bitsandbytes'] = None; from pipeline.cli import main; "
        f"sys.argv = ['pipeline', 'plan', {str(recipe)!r}]; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert (
        "r.yaml:6: formats[1].format: format 'bnb-nf4' needs bitsandbytes: pip install 'llm-quant-pipeline[bnb]'"
        in proc.stderr
    )


def test_plan_says_where_fp8_and_int8_serve(tiny_model, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(
            tiny_model, [{"format": "fp8"}, {"format": "w8a8-int8"}], calibration={"samples": 2, "seq_len": 32}
        ),
    )
    proc = cli("plan", str(recipe))
    assert proc.returncode == 0
    assert "fp8: FP8 W8A8 runs at speed in vLLM on NVIDIA compute capability >= 8.9" in proc.stdout
    assert "w8a8-int8: INT8 W8A8 kernels in vLLM need NVIDIA compute capability >= 7.5" in proc.stdout


def test_plan_has_package_stages_and_publish_only_when_enabled(tiny_model, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}], publish={"enabled": True, "org": "me"})
    )
    proc = cli("plan", str(recipe))
    assert (
        proc.returncode == 0
        and "package[fp8]" in proc.stdout
        and "publish[fp8]  push to the Hub: me/tiny-fp8" in proc.stdout
    )
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}]))
    assert "publish[" not in cli("plan", str(recipe)).stdout


@pytest.mark.parametrize(
    "publish, message",
    [
        ({"enabled": True}, "publish: Value error, publish.org is needed by repo_template's {org}"),
        ({"repo_template": "{org}/{size}"}, "unknown field 'size'"),
        ({"repo_template": "no-slash-{format}"}, "does not make a Hub repo id 'org/name'"),
    ],
)
def test_bad_publish_section_names_the_field(tiny_model, tmp_path, publish, message):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}], publish=publish))
    proc = cli("plan", str(recipe))
    assert (
        proc.returncode == 2 and message.replace("Value error, ", "") in proc.stderr and "Traceback" not in proc.stderr
    ), proc.stderr
