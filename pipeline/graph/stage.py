"""One node of a run's stage graph, and what it is as data.

A stage is (kind, config, input keys, key). `config` is JSON: everything the kind's module
(pipeline.registry.STAGES) needs to run it. Its `args` entry holds what the run reads that is keyed
elsewhere in the config (the recipe section as JSON, local paths whose content digests are in the
config), so that moving a directory or editing a quality gate does not rebuild an artifact; every
other entry is part of the key. `Stage.job()` is the stage as a JSON value a worker process, an
orchestrator task or another machine that shares the workdir runs without the recipe or the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.stage_id import Kind, StageId


@dataclass
class Stage:
    id: StageId  # source, quantize[fp8], evaluate[awq@vllm]
    kind: Kind  # what it does: the module that runs it, the cost function that prices it, part of the key
    describe: str
    config: dict[str, Any]
    deps: list[StageId]
    versions: dict[str, str]
    label: str = ""  # output directory prefix (default: the id's label, e.g. "quantize-fp8")
    artifact: str | None = None
    link: str | None = None  # stable name under the run dir for the newest output, e.g. "artifacts/awq"
    gates: dict[str, Any] | None = None  # quality gates (GatesSpec as JSON) that judge its finished output's info
    inline: bool = False  # light stages run in the runner's process; the rest in a fresh worker (pipeline.run.worker)
    imports: tuple[str, ...] = ()  # heavy libraries its worker uses: the run's zygote imports them once for all workers
    key: str = ""
    path: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        self.kind = Kind(self.kind)  # an unknown kind fails here, at plan time
        self.label = self.label or self.id.label

    def matches(self, name: str) -> bool:
        return name in (self.id, self.kind, self.artifact)

    def job(self, dep_keys: dict[str, str], inputs: dict[str, Path], trust_remote_code: bool) -> dict[str, Any]:
        """The stage as JSON: what runs it anywhere the workdir is (pipeline.stages.run_job,
        pipeline.run.single.run_job), without the recipe or the plan."""
        return {
            "stage": str(self.id),
            "kind": str(self.kind),
            "key": self.key,
            "config": self.config,
            # a list, not a mapping: the key hashes the inputs' keys in this order, and JSON tools reorder mappings
            "deps": [[str(d), dep_keys[d]] for d in self.deps],
            "versions": self.versions,
            "inputs": {str(k): str(v) for k, v in inputs.items()},
            "trust_remote_code": trust_remote_code,
            "imports": list(self.imports),
            # where it goes and how the runner treats it
            "run_dir": str(self.path.parent),
            "path": str(self.path),
            "label": self.label,
            "artifact": self.artifact,
            "link": self.link,
            "inline": self.inline,
            "gates": self.gates,
        }
