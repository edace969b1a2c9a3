"""Evaluation-corpus stage: held-out text (eval/corpora.yaml) as `windows` windows of `context` token ids.

Built once per run with the source model's tokenizer; every artifact, whatever its engine, is scored
on exactly these ids. It reuses the calibration machinery (same source kinds, rendering, packing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data import samples as calibration_samples
from pipeline.errors import RecipeError
from pipeline.recipe import CalibrationSpec, EvaluationSpec
from pipeline.resources import data_file
from pipeline.stages import calibration

VERSION = 1
CORPORA = data_file("eval", "corpora.yaml")
FIELDS = {"source": "corpus", "samples": "windows", "seq_len": "context"}


def _spec(ev: EvaluationSpec) -> CalibrationSpec:
    return CalibrationSpec(source=ev.corpus, samples=ev.windows, seq_len=ev.context, seed=ev.seed, packing=True)


def _as_evaluation(e: RecipeError) -> RecipeError:
    """Errors come from the calibration code: name the evaluation fields instead."""
    if e.loc[:1] == ("calibration",):
        e.loc = (
            ("evaluation", FIELDS.get(str(e.loc[1]), str(e.loc[1])), *e.loc[2:]) if len(e.loc) > 1 else ("evaluation",)
        )
        e.args = (str(e),)
    return e


def check(ev: EvaluationSpec, recipe_dir: Path, model_config: dict[str, Any] | None) -> None:
    try:
        calibration.check(_spec(ev), recipe_dir, model_config, CORPORA)
    except RecipeError as e:
        raise _as_evaluation(e) from None


def config(ev: EvaluationSpec, recipe_dir: Path) -> dict[str, Any]:
    """The held-out text's sampling and digests (and, unkeyed, where it lies): the calibration stage's config."""
    return {"version": VERSION, **calibration.config(_spec(ev), recipe_dir, CORPORA)}


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    return calibration.fingerprint(config)


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    try:
        return calibration.run(config, inputs, out, ctx)
    except RecipeError as e:
        raise _as_evaluation(e) from None


def windows(stage_dir: Path) -> list[list[int]]:
    return [s["input_ids"] for s in calibration_samples.load(stage_dir)]
