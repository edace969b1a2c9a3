"""Calibration sources: the named ones in calibration/datasets.yaml, or inline in a recipe.

Every kind ends as a `datasets.Dataset` of records; problems become one-line RecipeErrors."""

from __future__ import annotations

import difflib
import glob
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.checkpoints.sources import package_file
from pipeline.errors import RecipeError, line_of
from pipeline.files import write_json_atomic
from pipeline.fingerprint import cache_root, file_sha256, stable_hash
from pipeline.recipe import CalibrationSource, CalibrationSpec
from pipeline.resources import data_file

SOURCES_FILE = data_file("calibration", "datasets.yaml")
LOADERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
FIELD = ("calibration", "source")


def named_sources(catalog: Path = SOURCES_FILE) -> dict[str, CalibrationSource]:
    raw = yaml.safe_load(catalog.read_text()) or {}
    out = {}
    for name, body in raw.items():
        try:
            out[name] = CalibrationSource.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            raise RecipeError(
                err["msg"], file=str(catalog), line=line_of(catalog, (name,)), field=(name, *err["loc"])
            ) from None
    return out


def resolve(
    spec: CalibrationSpec, recipe_dir: Path, catalog: Path = SOURCES_FILE
) -> tuple[str, CalibrationSource, Path]:
    """(display name, source, directory its relative paths start from)."""
    if isinstance(spec.source, CalibrationSource):
        return "inline", spec.source, recipe_dir
    sources = named_sources(catalog)
    if spec.source not in sources:
        close = difflib.get_close_matches(spec.source, list(sources), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(f"unknown source {spec.source!r}; {hint}known: {', '.join(sources)}", field=FIELD)
    return spec.source, sources[spec.source], catalog.parent


def local_files(src: CalibrationSource, base: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in src.files:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matched = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
        if not matched:
            raise RecipeError(f"no file matches {pattern!r} (looked in {base})", field=(*FIELD, "files"))
        files += matched
    suffixes = {LOADERS.get(f.suffix) for f in files}
    if None in suffixes or len(suffixes) > 1:
        raise RecipeError(
            f"files must all be one of {', '.join(LOADERS)} (got {', '.join(sorted({f.suffix for f in files}))})",
            field=(*FIELD, "files"),
        )
    return files


def check(src: CalibrationSource, base: Path) -> None:
    if src.kind == "local":
        local_files(src, base)
    elif src.kind == "package":
        package_file(src)  # type: ignore[arg-type]  (same package/file fields)


def fingerprint(src: CalibrationSource, base: Path, pinned: str | None = None) -> dict[str, Any]:
    """What of the source shapes the samples: its options and local files' digests, or the Hub dataset's
    commit (`pinned`: the one the plan resolved, so that a stage's guard never asks the network again)."""
    body = src.model_dump(mode="json", exclude={"description", "files", "hub_id"})  # hub_id: card metadata
    if src.kind == "local":
        body["content"] = stable_hash([file_sha256(f) for f in local_files(src, base)])
    elif src.kind == "package":
        body["content"] = file_sha256(package_file(src))  # type: ignore[arg-type]
    elif src.kind == "hub" and not src.revision:
        body["resolved_revision"] = pinned or resolved_revision(src.path)  # type: ignore[arg-type]
    return body


def resolved_revision(dataset: str) -> str | None:
    """The commit a Hub dataset's default branch points at now, so that a dataset changing upstream
    changes the calibration key (and the load reads that very commit). Offline (HF_HUB_OFFLINE, no
    network), the commit last resolved on this machine: the one `datasets` cached, so an online plan and an
    offline one make the same key. None only when it was never resolved here (the key then holds the name,
    as the plan's note says)."""
    known = _known_revisions()
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return known.get(dataset)
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(dataset, timeout=10).sha
    except Exception:
        return known.get(dataset)
    if sha and known.get(dataset) != sha:
        try:
            _revisions_file().parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(_revisions_file(), {**known, dataset: sha})
        except OSError:  # a read-only cache: this plan still has the commit, a later offline one will not
            pass
    return sha or known.get(dataset)


def _revisions_file() -> Path:
    return cache_root() / "dataset-revisions.json"


def _known_revisions() -> dict[str, str]:
    try:
        known = json.loads(_revisions_file().read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def load_records(src: CalibrationSource, base: Path, pinned: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The source's records as a datasets.Dataset, plus notes for the stats (e.g. records dropped).
    `pinned`: the Hub dataset's commit the plan resolved (and keyed)."""
    import datasets

    notes: dict[str, Any] = {}
    if src.kind == "local":
        files = local_files(src, base)
        try:
            ds = datasets.load_dataset(LOADERS[files[0].suffix], data_files=[str(f) for f in files], split="train")
        except Exception as e:
            raise RecipeError(
                f"cannot read {files[0].name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                field=(*FIELD, "files"),
            ) from None
    elif src.kind == "package":
        records, dropped = read_json_records(package_file(src))  # type: ignore[arg-type]
        notes["dropped_incomplete_records"] = dropped
        field = src.text_field or src.messages_field
        ds = datasets.Dataset.from_list([{field: r.get(field)} for r in records if isinstance(r, dict)])
    else:
        ds = _load_hub(src, pinned)
    field = src.text_field or src.messages_field
    if src.records:  # a fixed slice, e.g. to keep calibration and evaluation records apart
        start, stop = (int(x) if x else None for x in src.records.split(":"))
        ds = ds.select(range(len(ds))[start:stop])
    if field not in ds.column_names:
        which = "text_field" if src.text_field else "messages_field"
        raise RecipeError(
            f"{which} {field!r} is not in the data; fields: {', '.join(ds.column_names)}", field=(*FIELD, which)
        )
    if len(ds) == 0:
        raise RecipeError("the source holds no records", field=FIELD)
    return ds, notes


def _load_hub(src: CalibrationSource, pinned: str | None = None) -> Any:
    import datasets

    try:
        revision = src.revision or pinned or resolved_revision(src.path)  # type: ignore[arg-type]
        return datasets.load_dataset(src.path, src.name, split=src.split, revision=revision)
    except Exception as e:
        text = str(e).splitlines()[0] if str(e) else ""
        offline = (
            "offline" in text.lower()
            or "connect" in text.lower()
            or type(e).__name__ in ("OfflineModeIsEnabled", "ConnectionError")
        )
        if offline:
            raise RecipeError(
                f"cannot reach the Hub for dataset {src.path!r}; use a local or package source, or "
                "data-free (source: self)",
                field=FIELD,
            ) from None
        raise RecipeError(f"dataset {src.path!r}: {type(e).__name__}: {text}", field=FIELD) from None


def read_json_records(path: Path) -> tuple[list[Any], int]:
    """Records of a JSON list or JSON-lines file, keeping every complete record of a cut-off file.

    Returns (records, number of incomplete records dropped)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    stripped = text.lstrip()
    if not stripped.startswith("["):
        return _json_lines(text)
    decoder = json.JSONDecoder()
    pos, records = len(text) - len(stripped) + 1, []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return records, 0
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return records, 1  # a cut-off list: what follows the last complete record is one partial record
        records.append(record)


def _json_lines(text: str) -> tuple[list[Any], int]:
    records, dropped = [], 0
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                dropped += 1
    return records, dropped
