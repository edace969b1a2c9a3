"""Content-addressed stage outputs, written atomically.

A stage's output lives in `<run_dir>/<label>-<key16>/` and counts as finished only when its
`.stage.json` marker holds the full key. Outputs are built in `<run_dir>/.tmp/` and renamed into
place, so a crash or SIGKILL mid-stage leaves only a temp dir that no run mistakes for a result.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import RecipeError
from pipeline.files import MARKER, fsync_tree, stage_dir, write_json_atomic

TMP = ".tmp"


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
        fsync_tree(tmp)  # the bytes first, then the marker, then the rename (each durable before the next)
        write_json_atomic(tmp / MARKER, {"key": key, "label": label, "finished_at": time.time(), **meta}, durable=True)
        if final.exists():  # a forced rerun, or an unmarked leftover: replace it
            trash = tmp_root / f"{final.name}.old.{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def run_lock(run_dir: Path, shared: bool = False) -> Iterator[None]:
    """One run per run directory at a time: two runs would race on the same stage outputs.

    Orchestrators (Prefect, Airflow) run disjoint stages of one plan in parallel tasks: those take the
    lock shared, which still keeps a CLI run (exclusive) out while any of them works."""
    with open(run_dir / ".lock", "a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecipeError(
                f"another run is using {run_dir} (lock held); wait for it or use another --workdir"
            ) from None
        yield


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale_tmp(run_dir: Path) -> list[str]:
    """Remove temp dirs left by runs that died. Call only while holding the run lock: then none is live."""
    tmp_root = run_dir / TMP
    if not tmp_root.is_dir():
        return []
    removed = sorted(p.name for p in tmp_root.iterdir())
    shutil.rmtree(tmp_root, ignore_errors=True)
    return removed
