"""What the stage graph reads from the machine, read once per run.

The plan depends on the machine in a few places: whether vLLM's environment is set up (and what is
installed in it), what its CPU build can serve on this CPU, and which device and dtype the reference and
evaluations compute in. The plan reads them once; stage workers and orchestrator tasks run jobs made from
that plan and never plan again, so a `setup vllm` finishing mid-run, or free memory changing, cannot
change what they run. The compute choice is in the evaluation keys: a reused workdir never compares a float32 reference
with bf16 rows, or CPU figures with CUDA ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.checkpoints import loading
from pipeline.tools import cpus, environments


@dataclass(frozen=True)
class Machine:
    vllm_ready: bool = False
    vllm_resolved: str = ""  # digest of what vLLM's environment holds (its pip freeze)
    compute: dict[str, Any] = field(default_factory=dict)  # loading.compute_choice(): device, float32 limit
    cpu_flags: tuple[str, ...] = ()  # tools.cpus.flags(): what vLLM's CPU build can serve here depends on them

    @classmethod
    def probe(cls) -> Machine:
        env = environments.get("vllm")
        ready = env.ready()
        return cls(ready, env.resolved() if ready else "", loading.compute_choice(), cpus.flags())
