"""One node of a run's stage graph."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.stage_id import StageId

StageRun = Callable[
    [Path, dict[str, Path], Any], dict[str, Any]
]  # (empty output dir, inputs by stage id, context) -> facts


@dataclass
class Stage:
    id: StageId  # source, quantize[fp8], evaluate[awq@vllm]
    kind: str  # part of the cache key: "source", "quantize", "evaluate-engine" (usually the id's kind)
    describe: str
    config: dict[str, Any]
    deps: list[StageId]
    versions: dict[str, str]
    run: StageRun
    label: str = ""  # output directory prefix (default: the id's label, e.g. "quantize-fp8")
    artifact: str | None = None
    link: str | None = None  # stable name under the run dir for the newest output, e.g. "artifacts/awq"
    check: Callable[[dict[str, Any]], list[str]] | None = None  # gates: problems with a finished output's info
    inline: bool = False  # light stages run in the runner's process; the rest in a fresh worker (pipeline.run.worker)
    imports: tuple[str, ...] = ()  # heavy libraries its worker uses: the run's zygote imports them once for all workers
    key: str = ""
    path: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        self.label = self.label or self.id.label

    def matches(self, name: str) -> bool:
        return name in (self.id, self.kind, self.artifact)
