"""Next-token quality of an artifact against the base model, over the same token ids.

The base model's distributions are kept once per run (the reference stage): in full when they fit
`max_logits_mb`, else as the top-k log-probs per position. With top-k, the KL divergence is that of
the two distributions coarsened to (top-k tokens of the base, everything else): never above the
true KLD, and equal to it when the base puts no mass outside its top-k. Perplexity and top-1
agreement are exact either way (the base's log-prob of each target and its argmax are kept too)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

META = "reference.json"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(np.float32)


@dataclass
class Reference:
    """The base model's view of the evaluation windows (positions 0..C-2 of each window predict 1..C-1)."""

    method: str  # "full" or "top-k"
    target_lp: np.ndarray  # [N] base log-prob of each next token
    top1: np.ndarray  # [N] base argmax
    full: np.ndarray | None = None  # [N, V] base log-probs
    top_vals: np.ndarray | None = None  # [N, k]
    top_idx: np.ndarray | None = None  # [N, k]

    @classmethod
    def build(cls, lps: Iterable[np.ndarray], windows: list[list[int]], keep_full: bool, k: int) -> "Reference":
        """From the base log-probs of each window, reduced window by window (top-k never holds all of them)."""
        parts: dict[str, list[np.ndarray]] = {"target_lp": [], "top1": [], "full": [], "top_vals": [], "top_idx": []}
        for lp, w in zip(lps, windows):
            lp, targets = lp[:-1], np.asarray(w[1:])
            parts["target_lp"].append(lp[np.arange(len(targets)), targets])
            parts["top1"].append(lp.argmax(-1))
            if keep_full:
                parts["full"].append(lp)
                continue
            idx = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
            vals = np.take_along_axis(lp, idx, -1)
            order = np.argsort(-vals, axis=-1)
            parts["top_idx"].append(np.take_along_axis(idx, order, -1).astype(np.int32))
            parts["top_vals"].append(np.take_along_axis(vals, order, -1))
        arrays = {name: np.concatenate(v) for name, v in parts.items() if v}
        return cls("full" if keep_full else f"top-{k}", **arrays)

    def save(self, out: Path) -> None:
        arrays = {k: getattr(self, k) for k in ("target_lp", "top1", "full", "top_vals", "top_idx") if getattr(self, k) is not None}
        for name, arr in arrays.items():
            np.save(out / f"{name}.npy", arr)
        (out / META).write_text(json.dumps({"method": self.method, "positions": int(len(self.target_lp)), "arrays": list(arrays)}))

    @classmethod
    def load(cls, path: Path) -> "Reference":
        meta = json.loads((path / META).read_text())
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
        return cls(meta["method"], **arrays)


def token_stats(ref: Reference, lo: int, lp: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position KLD(base || artifact), artifact NLL and top-1 match for positions lo..lo+len(targets)."""
    hi = lo + len(targets)
    if ref.full is not None:
        p_lp = np.asarray(ref.full[lo:hi])
        kld = (np.exp(p_lp) * (p_lp - lp)).sum(-1)
    else:
        vals, idx = np.asarray(ref.top_vals[lo:hi]), np.asarray(ref.top_idx[lo:hi])
        q_top = np.take_along_axis(lp, idx, -1)
        p_tail = np.clip(1 - np.exp(vals).sum(-1), 0, 1)
        q_tail = np.clip(1 - np.exp(q_top).sum(-1), 1e-30, 1)
        tail = np.where(p_tail > 0, p_tail * (np.log(np.maximum(p_tail, 1e-30)) - np.log(q_tail)), 0.0)
        kld = (np.exp(vals) * (vals - q_top)).sum(-1) + tail
    return {"kld": np.maximum(kld, 0.0), "nll": -lp[np.arange(len(targets)), targets],
            "same_top1": lp.argmax(-1) == np.asarray(ref.top1[lo:hi]), "base_nll": -np.asarray(ref.target_lp[lo:hi])}


def summarize(stats: list[dict[str, np.ndarray]], method: str) -> dict[str, Any]:
    cat = {k: np.concatenate([s[k] for s in stats]) for k in stats[0]}
    ppl, base_ppl = float(np.exp(cat["nll"].mean())), float(np.exp(cat["base_nll"].mean()))
    kld = cat["kld"]
    return {"ppl": ppl, "base_ppl": base_ppl, "ppl_increase_pct": 100 * (ppl / base_ppl - 1),
            "kld": float(kld.mean()), "kld_stderr": float(kld.std(ddof=1) / np.sqrt(len(kld))) if len(kld) > 1 else 0.0,
            "kld_median": float(np.median(kld)), "kld_p99": float(np.percentile(kld, 99)),
            "top1_pct": float(100 * cat["same_top1"].mean()), "tokens": int(len(kld)), "kld_method": method}


def score(engine: Any, windows: list[list[int]], ref: Reference, progress=lambda i, n: None) -> dict[str, Any]:
    """The artifact's metrics over every window, through `engine.logprobs(ids) -> [len(ids), V]`."""
    stats, lo = [], 0
    for i, ids in enumerate(windows):
        lp = engine.logprobs(ids)[:-1]
        targets = np.asarray(ids[1:])
        stats.append(token_stats(ref, lo, lp, targets))
        lo += len(targets)
        progress(i + 1, len(windows))
    return summarize(stats, ref.method)
