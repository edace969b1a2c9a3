"""Quality gates: limits on an artifact's evaluation, per format or for the whole recipe.

The most specific gate wins, limit by limit: the format entry's `gates`, then `evaluation.gates`,
then the defaults for the format's family in eval/gates.yaml (when `evaluation.default_gates`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.recipe import GatesSpec

DEFAULTS_FILE = Path(__file__).resolve().parents[2] / "eval" / "gates.yaml"


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
    """One message per gate that trips: the gate, the measured value and the limit."""
    out = []
    if gates.max_kld is not None and metrics["kld"] > gates.max_kld:
        out.append(f"max_kld: mean KLD {metrics['kld']:.4g} > {gates.max_kld}")
    if gates.max_ppl_increase_pct is not None and metrics["ppl_increase_pct"] > gates.max_ppl_increase_pct:
        out.append(
            f"max_ppl_increase_pct: perplexity +{metrics['ppl_increase_pct']:.2f} % > {gates.max_ppl_increase_pct} %"
        )
    if gates.min_top1 is not None and metrics["top1_pct"] < gates.min_top1:
        out.append(f"min_top1: top-1 agreement {metrics['top1_pct']:.2f} % < {gates.min_top1} %")
    return out
