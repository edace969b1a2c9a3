"""Stage outputs on disk, and files we write: where an output lives (`<run_dir>/<label>-<key16>/`), when
it counts as finished (its marker holds the full key), the two bookkeeping files every output holds
(that marker, written last by pipeline.run.cache, and its info for the manifest), hard links and
atomic JSON writes.

Every layer needs these (the graph addresses outputs, stages skip the marker when they copy a tree,
the runner writes both), so they live here at the bottom, not in the run machinery that fills the cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

MARKER = ".stage.json"  # a stage output counts as finished only when this holds its full key (pipeline.run.cache)
INFO = "stage_info.json"  # what the stage function returned, with its seconds and peak memory


def stage_dir(run_dir: Path, label: str, key: str) -> Path:
    return run_dir / f"{label}-{key[:16]}"


def is_finished(path: Path, key: str) -> bool:
    try:
        return json.loads((path / MARKER).read_text())["key"] == key
    except (OSError, ValueError, KeyError):
        return False


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link where the filesystem allows (a 70B checkpoint must not be stored twice), copy otherwise."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
