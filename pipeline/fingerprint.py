"""Content fingerprints of big input files, computed once and remembered.

Hashing a 16 GB checkpoint takes tens of seconds, and `plan`, `run`, every orchestrator task and
every Airflow DAG parse need its key. A file's sha256 (and facts read from it, such as a GGUF's
metadata) is remembered under the pipeline cache by (path, size, mtime, inode, device): the test
rsync and make rely on. A file rewritten in place gets a new mtime and is read again.

Dot-files and dot-directories (.git, .cache, .ipynb_checkpoints) are not part of a model's content:
they are neither hashed nor copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MEMO_VERSION = 1


def cache_root() -> Path:
    """Where the pipeline keeps machine-wide state: tool builds, environments, fingerprints."""
    return Path(os.environ.get("LLM_PIPELINE_CACHE", Path.home() / ".cache" / "llm-quant-pipeline"))


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able value, independent of dict order: what cache keys are made of."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()


ARGS = "args"  # the stage config entry that is not part of its key (pipeline.graph.stage)


def stage_key(kind: str, config: dict[str, Any], dep_keys: list[str], versions: dict[str, str]) -> str:
    """A stage's cache key: its kind, its keyed config, its inputs' keys (in order) and library versions."""
    keyed = {k: v for k, v in config.items() if k != ARGS}
    return stable_hash({"stage": kind, "config": keyed, "deps": dep_keys, "versions": versions})


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


RACY_NS = 2 * 10**9  # a file modified this recently could change again within the same mtime tick


def _identity(path: Path, kind: str) -> str | None:
    st = path.stat()
    if time.time_ns() - st.st_mtime_ns < RACY_NS:
        return None  # as git does with "racily clean" files: do not trust (or store) what the stat says
    ident = [MEMO_VERSION, kind, str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:40]


def remembered(path: Path, kind: str, compute: Callable[[Path], Any]) -> Any:
    """compute(path), from the memo when this exact file was seen before (JSON-able values only)."""
    ident = _identity(path, kind)
    if ident is None:
        return compute(path)
    memo = cache_root() / "fingerprints" / f"{ident}.json"
    try:
        return json.loads(memo.read_text())["value"]
    except (OSError, ValueError, KeyError):
        pass
    value = compute(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"path": str(path), "value": value}))
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only cache only costs time
    return value


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, remembered (a file changed within the last seconds is always read)."""
    return remembered(Path(path), "sha256", _sha256)


def content_files(root: Path) -> Iterator[Path]:
    """The files that make up a directory's content, in a stable order: no dot-files or dot-directories."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def tree_digest(root: Path, skip: Callable[[str], bool] = lambda rel: False) -> str:
    """Hash of every content file's relative path and sha256, so a directory is keyed by what it holds."""
    h = hashlib.sha256()
    for p in content_files(root):
        rel = p.relative_to(root).as_posix()
        if not skip(rel):
            h.update(rel.encode() + b"\0" + file_sha256(p).encode() + b"\0")
    return h.hexdigest()
