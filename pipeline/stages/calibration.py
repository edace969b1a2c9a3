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
from pipeline.recipe import CalibrationSpec

VERSION = 1


def check(
    spec: CalibrationSpec, recipe_dir: Path, model_config: dict[str, Any] | None, catalog: Path = sources.SOURCES_FILE
) -> None:
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
        supply.check_supply(
            files,
            src.text_field or src.messages_field or "",
            "text_field" if src.text_field else "messages_field",
            chat,
            src.records,
            spec.samples,
            spec.seq_len,
            spec.packing if spec.packing is not None else not chat,
            ("calibration", "source"),
        )


def fingerprint(spec: CalibrationSpec, recipe_dir: Path, catalog: Path = sources.SOURCES_FILE) -> dict[str, Any]:
    name, src, base = sources.resolve(spec, recipe_dir, catalog)
    return {
        "version": VERSION,
        "name": name,
        "source": sources.fingerprint(src, base),
        **spec.model_dump(mode="json", exclude={"source"}),
    }


def run(
    spec: CalibrationSpec, recipe_dir: Path, model_dir: Path, out: Path, ctx: Any, catalog: Path = sources.SOURCES_FILE
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    name, src, base = sources.resolve(spec, recipe_dir, catalog)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=ctx.trust_remote_code)
    if src.kind == "self":
        samples, stats = generate(model_dir, tokenizer, src, spec, ctx, ctx.trust_remote_code)
        notes: dict[str, Any] = {}
    else:
        ctx.status(f"loading {name}")
        records, notes = sources.load_records(src, base)
        ctx.status(f"sampling {spec.samples} x {spec.seq_len} tokens from {len(records)} records")
        samples, stats = build_samples(records, src, spec, tokenizer, name)
    calibration_samples.write(out, samples)
    stats = {"source": name, "kind": src.kind, "seed": spec.seed, "seq_len": spec.seq_len, **stats, **notes}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
