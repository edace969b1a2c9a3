"""The CPUs this process may run on: its affinity mask (a container's cpuset, `taskset`, a pinned test
worker), not the machine's count. Every thread count we give an engine or a tool comes from here: threads
beyond the mask only take turns on the same cores, and OpenMP's and ggml's threads spin while they wait
(two 2-thread torch processes on 2 cores ran the demo's AWQ 4x slower than one)."""

from __future__ import annotations

import os


def usable() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def count() -> int:
    return len(usable())


def id_list(n: int | None = None) -> str:
    """The first `n` usable CPUs (all by default) as a Linux CPU list: "0-3", "1", "0,2-3" (the form of
    vLLM's VLLM_CPU_OMP_THREADS_BIND and of taskset -c)."""
    ids = usable()[: n or None]
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


# The instruction-set features our engines' kernels depend on (vLLM's CPU build: AVX-512 for W4A16, AMX for
# block FP8; torch: native bf16), as /proc/cpuinfo names them.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def flags() -> tuple[str, ...]:
    """Which of FLAGS this CPU has (empty where /proc/cpuinfo cannot be read: not Linux)."""
    try:
        info = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return ()
    line = next((x for x in info.splitlines() if x.startswith("flags")), "") + " "
    return tuple(f for f in FLAGS if f" {f} " in line)
