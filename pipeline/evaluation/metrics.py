"""Next-token quality of an artifact against the base model, over the same token ids.

The base model's view is kept once per run (the reference stage). By default its full next-token
log-probs, as float16 in a memory-mapped file written window by window (llama.cpp keeps its KLD base
the same way, as 16-bit values), so the KL divergence is exact for any vocabulary: a 128k vocabulary
costs 256 KB per scored token on disk, never a whole-corpus array in memory. `kld: top-k` keeps only
the base's top-k log-probs per position for disk-starved runs: the KLD of the two distributions
coarsened to (top-k tokens, the rest) is a lower bound on the true one, and is labelled so.
Perplexity and top-1 agreement are exact either way (the base's log-prob of each target and its
argmax are kept in float32).

Which positions are scored: `all` (every position of every window), or `second-half` (positions
C/2 .. C-2 of each C-token window, llama-perplexity's convention: every scored token has at least
C/2 tokens of context), so that its figures can be reproduced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

META = "reference.json"
FULL = "logprobs.f16"
ROWS = 64  # positions per chunk when comparing full distributions: 64 x 128k x 4 B = 32 MB


def scored(window_len: int, convention: str) -> range:
    """Positions of a window whose next-token prediction is scored."""
    return range(window_len // 2 if convention == "second-half" else 0, window_len - 1)


def describe(method: str, convention: str) -> str:
    if method == "full":
        what = "exact KLD over the full vocabulary"
    elif method.startswith("engine top-"):
        what = (
            f"KLD over the {method.removeprefix('engine ')} tokens the engine reports and the "
            "rest (a lower bound on the full KLD)"
        )
    else:
        what = f"{method} KLD (a lower bound on the full KLD)"
    where = (
        "the second half of each window (llama-perplexity's convention)"
        if convention == "second-half"
        else "every position"
    )
    return f"{what}, scored on {where}"


@dataclass
class Reference:
    """The base model's view of the scored positions of the evaluation windows."""

    method: str  # "full" or "top-k"
    score: str  # "all" or "second-half"
    target_lp: np.ndarray  # [N] float32 base log-prob of each next token
    top1: np.ndarray  # [N] base argmax
    full: np.ndarray | None = None  # [N, V] float16 base log-probs (memory-mapped)
    top_vals: np.ndarray | None = None  # [N, k]
    top_idx: np.ndarray | None = None  # [N, k]

    @classmethod
    def build(
        cls, out: Path, lps: Iterable[np.ndarray], windows: list[list[int]], method: str, k: int, score: str, vocab: int
    ) -> Reference:
        """Write the reference into `out` from the base log-probs of each window ([len(w), V] float32), one window at a
        time."""
        n = sum(len(scored(len(w), score)) for w in windows)
        full = (
            np.lib.format.open_memmap(out / FULL, mode="w+", dtype=np.float16, shape=(n, vocab))
            if method == "full"
            else None
        )
        target_lp, top1 = np.empty(n, np.float32), np.empty(n, np.int32)
        top_vals = np.empty((n, k), np.float32) if full is None else None
        top_idx = np.empty((n, k), np.int32) if full is None else None
        lo = 0
        for lp, w in zip(lps, windows, strict=True):
            pos = scored(len(w), score)
            rows, targets = lp[pos.start : pos.stop], np.asarray(w[pos.start + 1 : pos.stop + 1])
            hi = lo + len(rows)
            target_lp[lo:hi] = rows[np.arange(len(targets)), targets]
            top1[lo:hi] = rows.argmax(-1)
            if full is not None:
                full[lo:hi] = rows  # float16: log-probs down to -65504, 11 significant bits
            else:
                idx = np.argpartition(-rows, k - 1, axis=-1)[:, :k]
                vals = np.take_along_axis(rows, idx, -1)
                order = np.argsort(-vals, axis=-1)
                top_idx[lo:hi] = np.take_along_axis(idx, order, -1)  # type: ignore[index]
                top_vals[lo:hi] = np.take_along_axis(vals, order, -1)  # type: ignore[index]
            lo = hi
        if full is not None:
            full.flush()
        arrays = {"target_lp": target_lp, "top1": top1, "top_vals": top_vals, "top_idx": top_idx}
        for name, arr in arrays.items():
            if arr is not None:
                np.save(out / f"{name}.npy", arr)
        label = "full" if method == "full" else f"top-{k}"
        files = [FULL] * (full is not None) + [f"{name}.npy" for name, arr in arrays.items() if arr is not None]
        size = sum((out / f).stat().st_size for f in files)
        (out / META).write_text(
            json.dumps({"method": label, "score": score, "positions": n, "vocab": vocab, "files": files, "bytes": size})
        )
        return cls.load(out)

    @classmethod
    def load(cls, path: Path) -> Reference:
        meta = json.loads((path / META).read_text())
        arrays = {f.removesuffix(".npy"): np.load(path / f, mmap_mode="r") for f in meta["files"] if f.endswith(".npy")}
        full = np.load(path / FULL, mmap_mode="r") if FULL in meta["files"] else None
        return cls(meta["method"], meta["score"], full=full, **arrays)


@dataclass
class TopLogprobs:
    """Next-token log-probs an engine reports only in part (vLLM: its top-k and the token that follows):
    per position the token ids (-1 pads) and their log-probs. Perplexity and top-1 stay exact; the KLD is
    that of the two distributions coarsened to (the reported tokens, the rest), a lower bound on the full one."""

    idx: np.ndarray  # [n, m] int64
    vals: np.ndarray  # [n, m] float32

    def __getitem__(self, rows: slice) -> TopLogprobs:
        return TopLogprobs(self.idx[rows], self.vals[rows])

    @property
    def k(self) -> int:
        return self.idx.shape[1] - 1  # the top-k, and the scored token when it is not among them


def token_stats(ref: Reference, lo: int, lp: np.ndarray | TopLogprobs, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position KLD(base || artifact), artifact NLL and top-1 match for reference rows lo..lo+len(targets)."""
    if isinstance(lp, TopLogprobs):
        return _partial_stats(ref, lo, lp, targets)
    hi = lo + len(targets)
    if ref.full is not None:
        kld = np.concatenate(
            [
                _kld_rows(
                    np.asarray(ref.full[a : min(a + ROWS, hi)], dtype=np.float32), lp[a - lo : min(a + ROWS, hi) - lo]
                )
                for a in range(lo, hi, ROWS)
            ]
        )
    else:
        vals, idx = np.asarray(ref.top_vals[lo:hi]), np.asarray(ref.top_idx[lo:hi])
        q_top = np.take_along_axis(lp, idx, -1)
        p_tail = np.clip(1 - np.exp(vals).sum(-1), 0, 1)
        q_tail = np.clip(1 - np.exp(q_top).sum(-1), 1e-30, 1)
        tail = np.where(p_tail > 0, p_tail * (np.log(np.maximum(p_tail, 1e-30)) - np.log(q_tail)), 0.0)
        kld = (np.exp(vals) * (vals - q_top)).sum(-1) + tail
    nll = -lp[np.arange(len(targets)), targets]
    return {
        "kld": np.maximum(kld, 0.0),
        "nll": nll,
        "base_nll": -np.asarray(ref.target_lp[lo:hi]),
        "same_top1": lp.argmax(-1) == np.asarray(ref.top1[lo:hi]),
    }


def _partial_stats(ref: Reference, lo: int, lp: TopLogprobs, targets: np.ndarray) -> dict[str, np.ndarray]:
    n = len(targets)
    known, hit = lp.idx >= 0, lp.idx == targets[:, None]
    if not hit.any(-1).all():
        raise ValueError("the engine did not report the log-prob of every scored token")
    nll = -np.where(hit, lp.vals, 0).sum(-1)
    top1 = lp.idx[np.arange(n), np.where(known, lp.vals, -np.inf).argmax(-1)]
    kld = np.full(n, np.nan)
    if ref.full is not None:  # the base's probabilities of exactly the reported tokens
        for a in range(0, n, ROWS):
            p_lp = np.asarray(ref.full[lo + a : lo + min(a + ROWS, n)], dtype=np.float32)
            p_lp = p_lp - np.logaddexp.reduce(p_lp, axis=-1, keepdims=True)
            m, ids, q_lp = (
                known[a : a + ROWS],
                np.maximum(lp.idx[a : a + ROWS], 0),
                lp.vals[a : a + ROWS].astype(np.float64),
            )
            p_k = np.take_along_axis(p_lp, ids, -1).astype(np.float64)
            p, q = np.where(m, np.exp(p_k), 0), np.where(m, np.exp(q_lp), 0)
            p_rest, q_rest = np.clip(1 - p.sum(-1), 0, 1), np.clip(1 - q.sum(-1), 1e-30, 1)
            tail = np.where(p_rest > 0, p_rest * (np.log(np.maximum(p_rest, 1e-30)) - np.log(q_rest)), 0.0)
            with np.errstate(invalid="ignore"):  # p = 0: no term (0 * -inf is NaN, masked out)
                terms = np.where(m & (p > 0), p * (p_k - q_lp), 0)
            kld[a : a + ROWS] = terms.sum(-1) + tail
    return {
        "kld": np.maximum(kld, 0.0),
        "nll": nll,
        "base_nll": -np.asarray(ref.target_lp[lo : lo + n]),
        "same_top1": top1 == np.asarray(ref.top1[lo : lo + n]),
    }


def _kld_rows(p_lp: np.ndarray, q_lp: np.ndarray) -> np.ndarray:
    # Rounding to float16 leaves each row summing to 1 only within ~1e-3: renormalized in float32, the
    # stored distribution's first-order error cancels (self-KLD of a near-uniform 512-token model: 2e-5 -> 1e-7).
    p_lp = p_lp - np.logaddexp.reduce(p_lp, axis=-1, keepdims=True)
    return (np.exp(p_lp) * (p_lp - q_lp)).sum(-1, dtype=np.float64)


def summarize(stats: list[dict[str, np.ndarray]], method: str, convention: str) -> dict[str, Any]:
    cat = {k: np.concatenate([s[k] for s in stats]) for k in stats[0]}
    kld = cat["kld"]
    ppl, base_ppl = float(np.exp(cat["nll"].mean())), float(np.exp(cat["base_nll"].mean()))
    return {
        "ppl": ppl,
        "base_ppl": base_ppl,
        "ppl_increase_pct": 100 * (ppl / base_ppl - 1),
        "kld": float(kld.mean()),
        "kld_stderr": float(kld.std(ddof=1) / np.sqrt(len(kld))) if len(kld) > 1 else 0.0,
        "kld_median": float(np.median(kld)),
        "kld_p99": float(np.percentile(kld, 99)),
        "top1_pct": float(100 * cat["same_top1"].mean()),
        "tokens": int(len(kld)),
        "kld_method": method,
        "score": convention,
    }


def score(engine: Any, windows: list[list[int]], ref: Reference, progress=lambda i, n: None) -> dict[str, Any]:
    """The artifact's metrics over every window, through `engine.logprobs(ids) -> [len(ids), V]`."""
    stats, lo, method = [], 0, ref.method
    for i, ids in enumerate(windows):
        pos = scored(len(ids), ref.score)
        lp = engine.logprobs(ids)[pos.start : pos.stop]
        if isinstance(lp, TopLogprobs):
            method = f"engine top-{lp.k}" if ref.full is not None else "none"
        targets = np.asarray(ids[pos.start + 1 : pos.stop + 1])
        stats.append(token_stats(ref, lo, lp, targets))
        lo += len(targets)
        progress(i + 1, len(windows))
    return summarize(stats, method, ref.score)
