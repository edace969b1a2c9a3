"""Calibration stage: one set of token ids (and the text they came from) shared by every format of a run.

Output: samples.jsonl ({"input_ids", "text"} per line) and stats.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.checkpoints.sources import package_file
from pipeline.data import samples as calibration_samples
from pipeline.data import sources, supply
from pipeline.data.render import build_samples
from pipeline.data.selfgen import generate
from pipeline.errors import RecipeError
from pipeline.fingerprint import ARGS
from pipeline.recipe import CalibrationSpec
from pipeline.stage_id import SOURCE

VERSION = 1


def check(
    spec: CalibrationSpec, recipe_dir: Path, model_config: dict[str, Any] | None, catalog: Path = sources.SOURCES_FILE
) -> str | None:
    """Raise on a source that cannot give the samples; a note when `samples` is unset and the source
    holds fewer than the default (the set is then as large as the source gives)."""
    name, src, base = sources.resolve(spec, recipe_dir, catalog)
    sources.check(src, base)
    context = (model_config or {}).get("max_position_embeddings")
    if context and spec.seq_len > context:
        raise RecipeError(
            f"{spec.seq_len} is longer than the model's context ({context} tokens)", field=("calibration", "seq_len")
        )
    if src.kind in ("local", "package"):
        files = sources.local_files(src, base) if src.kind == "local" else [package_file(src)]  # type: ignore[arg-type]
        chat = src.messages_field is not None
        most = supply.check_supply(
            files,
            src.text_field or src.messages_field or "",
            "text_field" if src.text_field else "messages_field",
            chat,
            src.records,
            spec.required,
            spec.seq_len,
            spec.packing if spec.packing is not None else not chat,
            ("calibration", "source"),
        )
        if spec.samples is None and most < spec.wanted:
            return (
                f"calibration.samples is not set: source {name!r} holds at most {most} samples of "
                f"{spec.seq_len} tokens (by its size), fewer than the default {spec.wanted}, so the set is as "
                "large as it gives; set calibration.samples and a larger source (e.g. sharegpt) to choose"
            )
    return None


def config(spec: CalibrationSpec, recipe_dir: Path, catalog: Path = sources.SOURCES_FILE) -> dict[str, Any]:
    """The stage's config: the sampling options and the data's digests, and (unkeyed) where the data lies."""
    where = {"spec": spec.model_dump(mode="json"), "recipe_dir": str(recipe_dir), "catalog": str(catalog)}
    return {**keyed(spec, recipe_dir, catalog), ARGS: where}


def _args(config: dict[str, Any]) -> tuple[CalibrationSpec, Path, Path]:
    a = config[ARGS]
    return CalibrationSpec.model_validate(a["spec"]), Path(a["recipe_dir"]), Path(a["catalog"])


def _pinned(config: dict[str, Any]) -> str | None:
    """The Hub dataset commit the plan resolved and keyed (None for other sources, or offline)."""
    return config["source"].get("resolved_revision")


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The data's digests, read afresh (the mid-run guard); a Hub dataset keeps the commit the plan pinned."""
    return keyed(*_args(config), pinned=_pinned(config))


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    spec, recipe_dir, catalog = _args(config)
    return build(spec, recipe_dir, inputs[SOURCE], out, ctx, catalog, pinned=_pinned(config))


def keyed(
    spec: CalibrationSpec, recipe_dir: Path, catalog: Path = sources.SOURCES_FILE, pinned: str | None = None
) -> dict[str, Any]:
    name, src, base = sources.resolve(spec, recipe_dir, catalog)
    return {
        "version": VERSION,
        "name": name,
        "source": sources.fingerprint(src, base, pinned),
        **spec.model_dump(mode="json", exclude={"source"}),
    }


def build(
    spec: CalibrationSpec,
    recipe_dir: Path,
    model_dir: Path,
    out: Path,
    ctx: Any,
    catalog: Path = sources.SOURCES_FILE,
    pinned: str | None = None,
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    name, src, base = sources.resolve(spec, recipe_dir, catalog)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=ctx.trust_remote_code)
    if src.kind == "self":
        samples, stats = generate(model_dir, tokenizer, src, spec, ctx, ctx.trust_remote_code)
        notes: dict[str, Any] = {}
    else:
        ctx.status(f"loading {name}")
        records, notes = sources.load_records(src, base, pinned)
        ctx.status(f"sampling {spec.wanted} x {spec.seq_len} tokens from {len(records)} records")
        samples, stats = build_samples(records, src, spec, tokenizer, name)
    calibration_samples.write(out, samples)
    stats = {"source": name, "kind": src.kind, "seed": spec.seed, "seq_len": spec.seq_len, **stats, **notes}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
