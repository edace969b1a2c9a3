"""Stage outputs on disk, and files we write: where an output lives (`<run_dir>/<label>-<key16>/`), when
it counts as finished (its marker holds the full key), the two bookkeeping files every output holds
(that marker, written last by pipeline.run.cache, and its info for the manifest), hard links and
atomic JSON writes.

Every layer needs these (the graph addresses outputs, stages skip the marker when they copy a tree,
the runner writes both), so they live here at the bottom, not in the run machinery that fills the cache."""

from __future__ import annotations

import errno
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


# Why os.link can fail where a copy is the answer: another filesystem, one that has no hard links (or
# forbids them to us), or a file at its link limit. Anything else (EEXIST, ENOENT, EACCES on the
# target directory) is a real error and surfaces.
LINK_REFUSED = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link where the filesystem allows (a 70B checkpoint must not be stored twice), copy otherwise.
    A symlink (an HF cache snapshot's, a user's) is followed to its file: Linux's link() would link the
    symlink itself, which dangles once out of its directory."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(os.path.realpath(src), dst)
    except OSError as e:
        if e.errno not in LINK_REFUSED:
            raise
        shutil.copy2(src, dst)


def fsync_tree(root: Path) -> None:
    """Flush every file under `root` and the directories holding them to the disk: a stage output is
    marked finished only after its bytes are there, so a power loss cannot leave a truncated file in
    an output that counts as finished."""
    for p in sorted(root.rglob("*"), reverse=True) + [root]:
        if p.is_symlink():
            continue
        fd = os.open(p, os.O_RDONLY | (os.O_DIRECTORY if p.is_dir() else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, obj: Any, durable: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def existing_ancestor(path: Path) -> Path:
    """`path`, or its nearest existing parent (a run dir not made yet lives on its parent's disk)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
