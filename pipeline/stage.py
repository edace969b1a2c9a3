"""One node of a run's stage graph. Backends build their own shared stages (e.g. a GGUF conversion) from this too."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Stage:
    id: str  # "source", "quantize[fp8]"
    kind: str  # "source", "quantize"
    label: str  # output directory prefix
    describe: str
    config: dict[str, Any]
    deps: list[str]
    versions: dict[str, str]
    run: Callable[[Path, dict[str, Path], Any], dict[str, Any]]
    artifact: str | None = None
    link: str | None = None  # stable name under the run dir for the newest output, e.g. "artifacts/awq"
    check: Callable[[dict[str, Any]], list[str]] | None = None  # gates: problems with a finished output's info
    inline: bool = False  # light stages run in the runner's process; the rest in a fresh worker process (pipeline.worker, forked by pipeline.zygote)
    imports: tuple[str, ...] = ()  # heavy libraries its worker uses: the run's zygote imports them once for all workers
    key: str = ""
    path: Path = field(default_factory=Path)

    def matches(self, name: str) -> bool:
        return name in (self.id, self.kind, self.artifact)
