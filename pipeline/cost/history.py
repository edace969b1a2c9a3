"""Estimates that learn from this machine's finished stages.

Every stage that finishes appends one line to `<cache>/cost-history/<machine>.jsonl`: its group (stage
kind, plus the format or engine), the model's parameter count, the prior estimate (before any
correction) and what was measured. A later estimate of the same group is multiplied by the median of
measured / prior over the nearest runs in model size (within 8x when there are any, else all), the last
20 of them; peak RSS likewise. A machine never measured before gets the prior alone."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.cost.model import VERSION, CostInputs, Estimate
from pipeline.fingerprint import cache_root

KEEP = 20


def path(fingerprint: str) -> Path:
    return cache_root() / "cost-history" / f"{fingerprint}.jsonl"


def group(stage, c: CostInputs) -> str:
    opts = c.options(stage)
    what = getattr(opts, "format", "") or stage.config.get("engine", "")
    if getattr(opts, "type", None):
        what += f":{opts.type}"
    return f"v{VERSION}:{stage.kind}:{what}:{c.compute_dtype}"


def record(fingerprint: str, group_name: str, params: int, prior: Estimate, seconds: float, peak_mb: float | None):
    """Append one finished stage (an append of one short line: concurrent runs do not tear it)."""
    p = path(fingerprint)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "group": group_name,
        "params": params,
        "prior_s": round(prior.seconds, 2),
        "prior_mb": round(prior.peak_rss_mb, 1),
        "seconds": seconds,
        "peak_mb": peak_mb,
        "at": round(time.time()),
    }
    with open(p, "a") as f:
        f.write(json.dumps(line) + "\n")


def corrections(fingerprint: str) -> dict[str, list[dict[str, Any]]]:
    try:
        lines = path(fingerprint).read_text().splitlines()
    except OSError:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
            out.setdefault(entry["group"], []).append(entry)
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line: skip it
    return out


def corrected(prior: Estimate, group_name: str, past: dict[str, list[dict[str, Any]]], params: int) -> Estimate:
    entries = [e for e in past.get(group_name, []) if e.get("prior_s") and e.get("seconds")]
    near = [e for e in entries if 1 / 8 <= e["params"] / max(params, 1) <= 8]
    use = (near or entries)[-KEEP:]
    if not use:
        return prior
    time_ratio = statistics.median(e["seconds"] / e["prior_s"] for e in use)
    mems = [e["peak_mb"] / e["prior_mb"] for e in use if e.get("peak_mb") and e.get("prior_mb")]
    mem_ratio = statistics.median(mems) if mems else 1.0
    return replace(
        prior,
        seconds=prior.seconds * min(max(time_ratio, 0.05), 20),
        peak_rss_mb=prior.peak_rss_mb * min(max(mem_ratio, 0.2), 5),
        corrected_by=len(use),
    )
