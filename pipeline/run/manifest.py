"""`manifest.json` of a run: recipe, resolved config, stage keys, versions, timings, memory.

Rewritten atomically after every stage, so a run that dies still leaves an honest account."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.files import write_json_atomic
from pipeline.fingerprint import file_sha256
from pipeline.graph.plan import Plan
from pipeline.versions import environment


@dataclass
class StageRecord:
    id: str
    kind: str
    artifact: str | None
    key: str
    path: str
    status: str  # done | cached | failed | failed-gates | skipped | interrupted
    seconds: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None
    bad_input: bool = False  # failed because of the recipe or its data (exit 2), not a crash (exit 1)
    log: str | None = None
    info: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None  # pipeline.cost's figures for this run of it (none when cached)


class Manifest:
    def __init__(self, plan: Plan, name: str = "manifest.json"):
        self.plan = plan
        self.path = plan.run_dir / name
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a partial run's: manifests/only-<formats>.json
        self.started = time.time()
        self.records: list[StageRecord] = []
        self.status = "running"
        self.interrupted_by: str | None = None  # the signal that stopped the run
        self.runner: Callable[[], float] | None = None  # the runner process's peak RSS so far (MB)
        # The recipe as it was when the run began, read once: renamed or edited mid-run, it changes nothing.
        self.recipe_text = plan.recipe_path.read_text()
        self.recipe_sha256 = file_sha256(plan.recipe_path)

    def add(self, record: StageRecord) -> None:
        self.records.append(record)
        self.write()

    def failed(self) -> list[StageRecord]:
        return [r for r in self.records if r.status in ("failed", "failed-gates", "skipped", "interrupted")]

    def finish(self, status: str) -> None:
        self.status = status
        self.write()

    def write(self) -> None:
        p = self.plan
        write_json_atomic(
            self.path,
            {
                "recipe_file": str(p.recipe_path),
                "recipe_sha256": self.recipe_sha256,
                "recipe_text": self.recipe_text,
                "resolved": p.recipe.model_dump(mode="json"),
                "artifacts": {
                    name: {"format": label} for name, label in p.labels.items()
                },  # as the results table names them
                "status": self.status,
                **({"interrupted_by": self.interrupted_by} if self.interrupted_by else {}),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "seconds": round(time.time() - self.started, 2),
                "environment": environment(),
                "runner_peak_rss_mb": self.runner()
                if self.runner
                else None,  # the parent process; stages report their workers' own
                "stages": [asdict(r) for r in self.records],
                "pending": [s.id for s in p.stages if s.id not in {r.id for r in self.records}],
                # every stage of the plan with its output path, run or not: `gc` keeps them all
                "planned": [{"id": s.id, "key": s.key, "path": relative(s.path, p.run_dir)} for s in p.stages],
                "stage_versions": {s.id: s.versions for s in p.stages},
            },
        )


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
