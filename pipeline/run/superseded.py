"""`python -m pipeline gc RUN_DIR [--dry-run]`: remove stage outputs no current result refers to.

Every change to a recipe leaves the outputs of the old keys behind (content addressing never
overwrites). An output is current when a manifest of the run (manifest.json, calib-manifest.json,
publish-manifest.json, manifests/*.json of orchestrated tasks) or one of the run's stable links
(source, artifacts/*, evaluation/*, packages/*) points at it; everything else with a stage marker is
superseded. A manifest names every stage its plan holds, pending ones too (an interrupted run, a
partial run of some formats): what a plan still needs is never removed. A side manifest older than the
run's manifest.json is retired (and removed by gc): that newer run planned everything still needed.
Bytes freed count only files with no other hard link (a package shares its weights with its quantize
output)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import MARKER
from pipeline.run.cache import clean_stale_tmp

LINK_DIRS = ("artifacts", "evaluation", "packages")


@dataclass
class Superseded:
    path: Path
    stage: str
    frees: int  # bytes returned to the disk when removed


def side_manifests(run_dir: Path) -> list[Path]:
    """Manifests beside the run's own: `calib show`, `publish`, partial runs, orchestrated tasks."""
    named = [run_dir / n for n in ("calib-manifest.json", "publish-manifest.json")]
    return [p for p in named if p.is_file()] + sorted((run_dir / "manifests").glob("*.json"))


def retired(run_dir: Path) -> list[Path]:
    """Side manifests older than the run's manifest.json: that run planned every stage still needed, so what
    only they name belongs to an older recipe (a partial run of an earlier version, a task of an old plan)."""
    try:
        newest = (run_dir / "manifest.json").stat().st_mtime_ns
    except OSError:
        return []
    return [p for p in side_manifests(run_dir) if p.stat().st_mtime_ns < newest]


def current(run_dir: Path) -> set[Path]:
    keep: set[Path] = set()
    old = set(retired(run_dir))
    manifests = [run_dir / "manifest.json"] + [p for p in side_manifests(run_dir) if p not in old]
    for m in manifests:
        try:
            data = json.loads(m.read_text())
            stages = list(data.get("stages", [])) + list(data.get("planned", []))
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        keep |= {(run_dir / s["path"]).resolve() for s in stages if isinstance(s, dict) and s.get("path")}
    links = [run_dir / "source"] + [p for d in LINK_DIRS for p in (run_dir / d).glob("*")]
    keep |= {p.resolve() for p in links if p.is_symlink()}
    return keep


def superseded(run_dir: Path) -> list[Superseded]:
    keep = current(run_dir)
    out = []
    for d in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink() and (p / MARKER).is_file()):
        if d.resolve() not in keep:
            try:
                stage = json.loads((d / MARKER).read_text()).get("stage", d.name)
            except (OSError, ValueError):
                stage = d.name
            frees = sum(
                f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink() and f.stat().st_nlink == 1
            )
            out.append(Superseded(d, stage, frees))
    return out


def collect(run_dir: Path, dry_run: bool) -> tuple[list[Superseded], list[str]]:
    """(superseded outputs, stale temp dirs); removed unless dry_run. Call under the run lock."""
    found = superseded(run_dir)
    if dry_run:
        stale = sorted(p.name for p in (run_dir / ".tmp").iterdir()) if (run_dir / ".tmp").is_dir() else []
        return found, stale
    for manifest in retired(run_dir):  # first: a later gc must not find what they named kept by them
        manifest.unlink(missing_ok=True)
    for s in found:
        trash = s.path.with_name(f".gc-{s.path.name}")
        s.path.rename(trash)  # atomic: no half-removed directory keeps its marker
        shutil.rmtree(trash)
    return found, clean_stale_tmp(run_dir)
