"""Quality gates: limits on an artifact's evaluation, per format or for the whole recipe.

The most specific gate wins, limit by limit: the format entry's `gates`, then `evaluation.gates`,
then the defaults for the format's family in eval/gates.yaml (when `evaluation.default_gates`)."""

from __future__ import annotations

import math
from typing import Any

import yaml

from pipeline.recipe import GatesSpec
from pipeline.resources import data_file

DEFAULTS_FILE = data_file("eval", "gates.yaml")


def defaults(fmt: str, options: dict[str, Any]) -> GatesSpec:
    """Family defaults from eval/gates.yaml: the first rule whose `match` fits the format entry."""
    for rule in yaml.safe_load(DEFAULTS_FILE.read_text())["rules"]:
        match = rule["match"]
        if all(options.get(k) in (v if isinstance(v, list) else [v]) for k, v in match.items()):
            return GatesSpec.model_validate(rule["gates"])
    return GatesSpec()


def resolve(*layers: GatesSpec | None) -> GatesSpec:
    """Merge gate layers, most specific first."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer.model_dump() if layer else {}).items():
            if merged.get(k) is None:
                merged[k] = v
    return GatesSpec.model_validate(merged)


def failures(metrics: dict[str, Any], gates: GatesSpec) -> list[str]:
    """One message per gate that trips: the gate, the measured value and the limit. A gated metric that
    is not a finite number (NaN, inf, missing) trips its gate: a NaN compares False with any limit, and
    a broken artifact is what gates exist to catch."""
    out = []
    checks = (  # gate, metric, does the value trip it, the message
        ("max_kld", "kld", lambda v, g: v > g, lambda v, g: f"mean KLD {v:.4g} > {g}"),
        ("max_ppl_increase_pct", "ppl_increase_pct", lambda v, g: v > g, lambda v, g: f"perplexity +{v:.2f} % > {g} %"),
        ("min_top1", "top1_pct", lambda v, g: v < g, lambda v, g: f"top-1 agreement {v:.2f} % < {g} %"),
    )
    for gate, key, trips, message in checks:
        limit = getattr(gates, gate)
        if limit is None:
            continue
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            out.append(f"{gate}: {key} is {value!r}, not a finite number (limit {limit})")
        elif trips(value, limit):
            out.append(f"{gate}: {message(value, limit)}")
    return out
