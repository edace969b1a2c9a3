"""Helpers to call stage and backend functions directly in tests (real libraries, no mocks)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
OLLAMA_PARAMETERS = {"num_ctx", "stop", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed", "num_predict"}


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
            parsed[name] = compile(path.read_text(), name, "exec")  # runs elsewhere (the tool's own environment): it must parse here
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
