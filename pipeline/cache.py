"""Content-addressed stage outputs, written atomically.

A stage's output lives in `<run_dir>/<label>-<key16>/` and counts as finished only when its
`.stage.json` marker holds the full key. Outputs are built in `<run_dir>/.tmp/` and renamed into
place, so a crash or SIGKILL mid-stage leaves only a temp dir that no run mistakes for a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pipeline.fingerprint import sha256_file as file_sha256  # noqa: F401  (outputs we wrote: hashed as they are)

MARKER = ".stage.json"
TMP = ".tmp"


def stable_hash(obj: Any) -> str:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link where the filesystem allows (a 70B checkpoint must not be stored twice), copy otherwise."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_dir(run_dir: Path, label: str, key: str) -> Path:
    return run_dir / f"{label}-{key[:16]}"


def is_finished(path: Path, key: str) -> bool:
    try:
        return json.loads((path / MARKER).read_text())["key"] == key
    except (OSError, ValueError, KeyError):
        return False


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


@contextmanager
def atomic_stage(run_dir: Path, label: str, key: str, meta: dict) -> Iterator[Path]:
    """Yield an empty temp dir; on success mark it finished and rename it to its final place."""
    final = stage_dir(run_dir, label, key)
    tmp_root = run_dir / TMP
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = tmp_root / f"{final.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        write_json_atomic(tmp / MARKER, {"key": key, "label": label, "finished_at": time.time(), **meta})
        if final.exists():  # a forced rerun, or an unmarked leftover: replace it
            trash = tmp_root / f"{final.name}.old.{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_stale_tmp(run_dir: Path) -> list[str]:
    """Remove temp dirs left by runs that died. Call only while holding the run lock: then none is live."""
    tmp_root = run_dir / TMP
    if not tmp_root.is_dir():
        return []
    removed = sorted(p.name for p in tmp_root.iterdir())
    shutil.rmtree(tmp_root, ignore_errors=True)
    return removed
