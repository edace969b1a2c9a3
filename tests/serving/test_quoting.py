"""Generated files are data, not code: a recipe value that looks like shell ($(...), backticks, ';') reaches
the engine as one literal argument, and running a generated script with the engine stubbed creates nothing."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from pipeline import serving
from pipeline.recipe import ServingSpec
from tests.helpers import env_file, script_argv
from tests.serving.test_targets import artifact

HOSTILE = ['"$(touch {x})"', "$(touch {x})", "`touch {x}`", "a; touch {x}", "'; touch {x}; '", "${{IFS}}touch{x}"]
STUBS = ("docker", "text-generation-launcher", "llama-server", "vllm", "ovms")


def stub_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in STUBS:  # the engine binary as `echo`: what the script would run, printed
        (bin_dir / name).write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("kind", ["compressed-tensors", "bitsandbytes", "gguf", "openvino"])
@pytest.mark.parametrize("value", HOSTILE)
def test_shell_looking_values_stay_literal_in_every_generated_file(kind, value, tmp_path):
    canary = tmp_path / "pwned"
    hostile = value.format(x=canary)
    options = ServingSpec(
        vllm_args={"tokenizer-mode": hostile}, tgi_args={"max-concurrent-requests": hostile}
    ).model_dump(mode="json")
    a = artifact(kind, options=options)
    out = tmp_path / "pkg"
    serving.write(a, out)
    bin_dir = stub_bin(tmp_path)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHON": str(bin_dir / "vllm"),
        "MODEL_DIR": str(out),
    }
    scripts = sorted((out / "serving").glob("*.sh"))
    assert scripts
    for script in scripts:
        argv = script_argv(script)  # bash -n passes
        ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, (script.name, ran.stderr)
        assert not canary.exists(), f"{script.name} ran a command from a recipe value"
        if script.name == "tgi-launcher.sh":  # the value reaches the launcher as one argument, unchanged
            assert hostile in ran.stdout.splitlines() and hostile in argv, (script.name, ran.stdout)
    for path in (out / "serving").iterdir():
        if path.name.endswith((".yaml", ".yml")):
            docs = list(yaml.safe_load_all(path.read_text()))
            if path.name.startswith("vllm"):
                assert docs[0]["tokenizer-mode"] == hostile
        if path.name == "tgi.env":
            assert env_file(path.read_text())["MAX_CONCURRENT_REQUESTS"] == hostile


def test_a_value_that_looks_like_a_shell_variable_is_not_one(tmp_path):
    """Only ShellVar fragments of our own expand; the same text from a recipe is quoted."""
    text = serving.shell_script("x", ["prog", serving.ShellVar('"${PORT:-1}"'), '"${PORT:-1}"'])
    argv = script_argv_of(text, tmp_path)
    assert argv == ["prog", "${PORT:-1}", '"${PORT:-1}"']


def script_argv_of(text: str, tmp_path) -> list[str]:
    path = tmp_path / "s.sh"
    path.write_text(text)
    return script_argv(path)
