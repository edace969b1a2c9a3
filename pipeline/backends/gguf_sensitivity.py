"""GGUF sensitivity stage: what each quantization type would cost each tensor, for `type: auto`.

Measured once per run on the F16/BF16 conversion and shared by every auto format; llama.cpp does
every quantization and every KLD, we only read its files:
1. error: each candidate type is written once for all tensors (`llama-quantize --pure`, with the
   importance matrix); a tensor's error is its squared weight error weighted by the importance matrix
   (E[x²] per input channel), i.e. the expected squared error of that layer's output. Tensors over
   1 M weights are quantized from a row sample (backends/gguf_rows.py): unbiased errors, exact bytes,
   and each estimate's standard error from the spread of its rows (recorded, largest in the info).
2. scale: one probe per tensor kind (attn_q, ffn_down, token_embd, ...): only that kind at PROBE,
   everything else unquantized, scored by llama-perplexity's KLD to the unquantized model on
   calibration windows. KLD / summed error turns a tensor's error into expected KLD. (Probes on a Q8_0
   model, requantized from it, would be half the bytes and faster to score, but on SmolLM2 they chose
   worse: auto at Q4_K_M's size 0.0279 KLD against 0.0216, measured side by side with bench/quality.py.)
A probe of every kind at once checks that the per-kind costs add up (`additivity`).
The choice at a size budget is made per artifact from this file (backends/gguf_auto.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.backends import gguf_convert, gguf_imatrix, gguf_rows
from pipeline.data import samples as calibration_samples
from pipeline.errors import StageError
from pipeline.fingerprint import ARGS
from pipeline.stage_id import CALIBRATION
from pipeline.tools import cpus, llamacpp_toolchain
from pipeline.tools.processes import run_logged

VERSION = 5  # 2: experts weighted by their own importance and token share; 3: row samples; 4: 4 probe windows;
# 5: row samples of 1 M weights with standard errors
FILE = "sensitivity.json"
# (llama-quantize file type written with --pure, the ggml tensor type it gives)
LADDER = (
    ("Q2_K", "q2_K"),
    ("Q3_K_M", "q3_K"),
    ("IQ3_S", "iq3_s"),
    ("IQ4_XS", "iq4_xs"),
    ("Q4_0", "q4_0"),
    ("IQ4_NL", "iq4_nl"),
    ("Q4_K_M", "q4_K"),
    ("Q5_0", "q5_0"),
    ("Q5_K_M", "q5_K"),
    ("Q6_K", "q6_K"),
    ("Q8_0", "q8_0"),
)
PROBE = "q4_0"  # blocks of 32: valid for every tensor llama.cpp quantizes
MAX_CTX, MAX_CHUNKS = 512, 4  # 4 windows of 512: one llama-perplexity pass of 2048 tokens per probe
MAX_BANDS = 10  # layer bands probed for their own factor


def output(stage_dir: Path) -> dict[str, Any]:
    return json.loads((stage_dir / FILE).read_text())


def layer(tensor: str) -> int | None:
    m = re.match(r"blk\.(\d+)\.", tensor)
    return int(m.group(1)) if m else None


def kind(tensor: str) -> str:
    return re.sub(r"^blk\.\d+\.", "", tensor).removesuffix(".weight")


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    a = config[ARGS]
    return measure(inputs[a["convert"]], gguf_imatrix.output(inputs[a["matrix"]]), inputs[CALIBRATION], out, ctx)


def measure(converted: Path, matrix: Path | None, calibration: Path, out: Path, ctx: Any) -> dict[str, Any]:
    from gguf import GGUFReader

    chain = llamacpp_toolchain.require()
    f16 = gguf_convert.output(converted)
    source = GGUFReader(f16)
    weights = {t.name: t for t in source.tensors if len(t.shape) >= 2}  # matrices and stacked experts
    importance = _importance(matrix) if matrix and matrix.suffix == ".gguf" else {}  # a legacy .dat: unweighted errors
    tensors: dict[str, dict[str, Any]] = {
        n: {"kind": kind(n), "elements": int(t.n_elements), "bytes": int(t.n_bytes), "types": {}}
        for n, t in weights.items()
    }
    work = out / "work"
    work.mkdir()
    ctx.status("sensitivity: a row sample of the wide tensors")
    cut = gguf_rows.write(f16, work / "sample.gguf") or {}
    ladder_source = work / "sample.gguf" if cut else f16
    sampled = {t.name: t for t in GGUFReader(ladder_source).tensors if t.name in weights}
    for i, (ftype, ggml) in enumerate(LADDER, 1):
        ctx.status(f"sensitivity: every tensor at {ggml} ({i}/{len(LADDER)})")
        qfile = _quantize(chain, ladder_source, matrix, work / f"{ggml}.gguf", ftype, [])
        for t in GGUFReader(qfile).tensors:
            if t.name in weights and t.tensor_type.name.lower() == ggml.lower():  # skip fallbacks (row width)
                rows, kept = cut.get(t.name, (1, 1))  # every row has the same bytes: the full size is exact
                errors = _row_errors(sampled[t.name], t, importance.get(t.name))
                cost = tensors[t.name]["types"][ggml] = {
                    "bytes": int(t.n_bytes) // kept * rows,
                    "error": float(errors.sum()) * rows / kept,
                }
                if t.name in cut:
                    cost["rel_se"] = _rel_se(errors, kept / rows)
        qfile.unlink()
    del sampled

    text = work / "calibration.txt"
    text.write_text("\n".join(calibration_samples.texts(calibration)))
    n_ctx = min(MAX_CTX, llamacpp_toolchain.count_tokens(f16, text.read_text()) // 2)
    if n_ctx < 16:
        raise StageError(
            "the calibration text is too short for llama-perplexity's sensitivity probes; raise "
            "calibration.samples or seq_len"
        )
    base = work / "base.kld"
    ctx.status("sensitivity: logits of the unquantized model on calibration windows")
    _perplexity(chain, f16, text, n_ctx, ["--kl-divergence-base", base])
    probes = [0]

    def probe(members: list[str], label: str) -> float:
        probes[0] += 1
        ctx.status(f"sensitivity: probe {probes[0]}: {label} at {PROBE}")
        # llama-quantize applies overrides only when quantizing: a Q8_0 default, every other tensor back to f16
        overrides = [f"^{re.escape(n)}$={PROBE if n in members else 'f16'}" for n in tensors]
        model = _quantize(chain, f16, matrix, work / "probe.gguf", "Q8_0", overrides)
        kld = _perplexity(chain, model, text, n_ctx, ["--kl-divergence-base", base, "--kl-divergence"])
        model.unlink()
        return kld

    probed = {n: v for n, v in tensors.items() if PROBE in v["types"]}
    kinds: dict[str, dict[str, Any]] = {}
    for k in sorted({v["kind"] for v in probed.values()}):
        members = [n for n, v in probed.items() if v["kind"] == k]
        error = sum(probed[n]["types"][PROBE]["error"] for n in members)
        kld = probe(members, k)
        kinds[k] = {"tensors": len(members), "probe_kld": kld, "scale": kld / error if error > 0 else 0.0}
    # The same kind costs more in some layers than the importance matrix says (early layers' errors travel
    # further): a factor per band of layers, from probing every kind of the band at once.
    layers = sorted({layer(n) for n in probed} - {None})
    width = -(-len(layers) // MAX_BANDS) if layers else 1
    bands: dict[str, dict[str, Any]] = {}
    for start in range(0, len(layers), width):
        band = set(layers[start : start + width])
        members = [n for n in probed if layer(n) in band]
        predicted = sum(kinds[probed[n]["kind"]]["scale"] * probed[n]["types"][PROBE]["error"] for n in members)
        kld = probe(members, f"layers {min(band)}-{max(band)}")
        bands[f"{min(band)}-{max(band)}"] = {
            "layers": sorted(band),
            "probe_kld": kld,
            "factor": kld / predicted if predicted > 0 else 1.0,
        }
    factor = {n: b["factor"] for b in bands.values() for n in b["layers"]}
    for n, v in tensors.items():
        scale = kinds.get(v["kind"], {}).get("scale", 0.0) * factor.get(layer(n), 1.0)
        for cost in v["types"].values():
            cost["kld"] = scale * cost["error"]
    additivity = {
        "predicted": sum(v["types"][PROBE]["kld"] for v in probed.values()),
        "measured": probe(list(probed), "every tensor"),
    }
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    info = {
        "version": VERSION,
        "probe": PROBE,
        "ctx": n_ctx,
        "kinds": kinds,
        "bands": bands,
        "additivity": additivity,
        "row_samples": {n: {"rows": r, "sampled": k} for n, (r, k) in cut.items()},
        "weights_bytes": sum(int(t.n_bytes) for t in source.tensors),
        "tensors": tensors,
    }
    (out / FILE).write_text(json.dumps(info, indent=1))
    return {
        "file": FILE,
        "ctx": n_ctx,
        "types": [g for _, g in LADDER],
        "additivity": additivity,
        "row_sampled_tensors": len(cut),
        "row_sample_max_rel_se": max(
            (c.get("rel_se", 0.0) for v in tensors.values() for c in v["types"].values()), default=0.0
        ),
    }


def _quantize(chain: Any, source: Path, matrix: Path | None, target: Path, ftype: str, overrides: list[str]) -> Path:
    cmd: list[Any] = [chain.tool("llama-quantize"), "--pure"]
    cwd = None
    if matrix is not None:
        args, cwd = gguf_imatrix.quantize_args(matrix)
        cmd += args
    if overrides:
        (target.parent / "types.txt").write_text("\n".join(overrides) + "\n")
        cmd += ["--tensor-type-file", target.parent / "types.txt"]
    run_logged(cmd + [source, target, ftype, str(cpus.count())], cwd=cwd)
    return target


def _perplexity(chain: Any, model: Path, text: Path, n_ctx: int, extra: list[Any]) -> float:
    # -fa off: the same attention path as the engine that evaluates the artifacts (FACTS.md).
    found: list[float] = []

    def mean_kld(line: str) -> None:
        m = re.match(r"Mean\s+KLD:\s+([0-9.eE+-]+)", line.strip())
        if m:
            found.append(float(m.group(1)))

    run_logged(
        [
            chain.tool("llama-perplexity"),
            "-m",
            model,
            "-f",
            text,
            "-c",
            str(n_ctx),
            "--chunks",
            str(MAX_CHUNKS),
            "-t",
            str(cpus.count()),
            "-fa",
            "off",
            *extra,
        ],
        on_line=mean_kld,
    )
    if "--kl-divergence" in extra and not found:
        raise StageError(f"llama-perplexity printed no mean KLD for {model.name} (see the stage log)")
    return found[-1] if found else 0.0


def _importance(matrix: Path) -> dict[str, Any]:
    """Per input channel of each tensor, from llama-imatrix's GGUF file: E[x²] (sum of squares / count).
    Stacked experts (`ffn_*_exps`) have a row of sums and a count per expert: expert e's row is divided
    by the tokens of every expert together, i.e. E[x² | routed to e] weighted by the share of tokens e
    is routed, so a rarely used expert's error counts for what it costs on average."""
    import numpy as np
    from gguf import GGUFReader

    tensors = {t.name: t.data for t in GGUFReader(matrix).tensors}
    out = {}
    for name, data in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        counts = np.asarray(tensors[name.replace(".in_sum2", ".counts")], dtype=np.float64).reshape(-1)
        if data.ndim == 2 and data.shape[0] == counts.size > 1:
            out[name.removesuffix(".in_sum2")] = data / max(float(counts.sum()), 1.0)
        else:
            out[name.removesuffix(".in_sum2")] = data.reshape(-1) / max(float(counts[0]), 1.0)
    return out


def _error(original: Any, quantized: Any, importance: Any) -> float:
    return float(_row_errors(original, quantized, importance).sum())


def _row_errors(original: Any, quantized: Any, importance: Any) -> Any:
    """Each row's squared weight error, weighted per input channel by that channel's importance (per expert
    for stacked experts: GGUF shape [n_in, n_out, n_expert])."""
    import numpy as np
    from gguf.quants import dequantize

    n_in = int(original.shape[0])
    w = dequantize(original.data, original.tensor_type).astype(np.float32).reshape(-1, n_in)
    q = dequantize(quantized.data, quantized.tensor_type).reshape(w.shape)
    squared = (w - q) ** 2
    if importance is None:
        return squared.sum(axis=1)
    if importance.ndim == 2 and len(original.shape) == 3 and importance.shape == (int(original.shape[2]), n_in):
        return (squared.reshape(importance.shape[0], -1, n_in) * importance[:, None, :]).sum(axis=2).reshape(-1)
    return squared @ importance if importance.shape == (n_in,) else squared.sum(axis=1)


def _rel_se(row_errors: Any, share: float) -> float:
    """Standard error of a row sample's estimate (sum x rows / sampled rows) over the estimate: simple random
    sampling's formula with the finite-population correction; `share` = sampled rows / rows. The sample takes
    an even stride (and the same rows of every expert), at least as precise for rows in no particular order."""
    n, total = row_errors.size, float(row_errors.sum())
    if n < 2 or total <= 0:
        return 0.0
    return float((n * row_errors.var(ddof=1) * (1 - share)) ** 0.5 / total)
