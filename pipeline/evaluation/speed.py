"""Speed figures users can trust on a shared, noisy machine.

A measurement is repeated until its last `repeats` samples lie within ±`tolerance` of their median,
or its time budget is spent; the figure is then that median with its spread, and marked `noisy` when
it never settled. The decode roofline (memory bandwidth / bytes read per token) is printed only when
it is physically possible: a decode rate above the ceiling means the bandwidth probe was wrong for
that run (measured while something else used the memory bus), and it is marked, not shown as >100 %.
What else kept the CPUs busy (load average, the busiest other processes) is recorded with the figure.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.tools import cpus, processes


def spread(values: list[float]) -> dict[str, Any]:
    med = statistics.median(values)
    rel = (max(values) - min(values)) / 2 / med if med else 0.0
    return {"median": med, "min": min(values), "max": max(values), "n": len(values), "spread_pct": round(100 * rel, 1)}


def settled(values: list[float], window: int, tolerance: float) -> list[float] | None:
    """The last `window` values when all lie within ±tolerance of their median, else None."""
    if len(values) < window:
        return None
    last = values[-window:]
    med = statistics.median(last)
    return last if med > 0 and all(abs(v - med) <= tolerance * med for v in last) else None


def until_settled(
    sample: Callable[[], list[dict[str, float]]], keys: tuple[str, ...], window: int, tolerance: float, budget_s: float
) -> dict[str, Any]:
    """Call `sample()` (each call returns one or more {key: value} samples) until every key's last
    `window` values settle, or `budget_s` is spent. Returns {key: spread} plus `noisy` and `seconds`."""
    samples: list[dict[str, float]] = []
    start = time.perf_counter()
    while True:
        samples += sample()
        columns = {k: [s[k] for s in samples] for k in keys}
        stable = {k: settled(v, window, tolerance) for k, v in columns.items()}
        if all(v is not None for v in stable.values()) or time.perf_counter() - start > budget_s:
            break
    result: dict[str, Any] = {k: spread(stable[k] or columns[k]) for k in keys}
    result["noisy"] = [k for k in keys if stable[k] is None]
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def machine_load(exclude: set[int] | None = None, top: int = 3) -> dict[str, Any]:
    """Load average and the busiest other processes right now (sampled over 0.5 s)."""
    import psutil

    mine = {os.getpid()} | (exclude or set())
    procs = [p for p in psutil.process_iter(["pid", "name"]) if p.info["pid"] not in mine]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(0.5)
    busy = []
    for p in procs:
        try:
            busy.append((p.cpu_percent(None), p.info["name"], p.info["pid"]))
        except psutil.Error:
            pass
    busy = sorted((b for b in busy if b[0] >= 5), reverse=True)[:top]
    return {
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": cpus.count(),
        "busy": [{"name": n, "pid": pid, "cpu_pct": round(c)} for c, n, pid in busy],
    }


def run_child(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600.0) -> tuple[str, float]:
    """stdout and peak RSS (MB) of one child process (wait4 gives that child's own rusage)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env=env, preexec_fn=processes.dies_with_parent()
        )
        timer = threading.Timer(timeout, proc.kill)  # a hung benchmark must not stall the run
        timer.start()
        try:
            out = proc.stdout.read()  # type: ignore[union-attr]
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            processes.stop(proc, grace=2)  # and reaped: no zombie
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            tail = (err.read() or out).decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{Path(cmd[0]).name} exited with {proc.returncode}: {tail}")
    return out.decode(), usage.ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now (MB): what holding the model and its KV cache costs."""
    return round(int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def memory_bandwidth_gbps(mb: int = 512, repeats: int = 7) -> float:
    """Read bandwidth of this machine: the best of a few full passes over a buffer much larger than the caches."""
    import torch

    buf = torch.ones(mb * (1 << 20) // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        buf.sum().item()
        best = min(best, time.perf_counter() - t0)
    return buf.numel() * 4 / best / 1e9


def roofline(result: dict[str, Any], weight_bytes: int, bandwidth_gbps: float) -> dict[str, Any]:
    """Decode reads every weight once per token: bandwidth / bytes-per-token is the ceiling for tg t/s."""
    ceiling = bandwidth_gbps * 1e9 / weight_bytes
    pct = 100 * result["tg_tps"]["median"] / ceiling
    out = {
        **result,
        "weight_bytes": weight_bytes,
        "bandwidth_gbps": round(bandwidth_gbps, 2),
        "roofline_tg_tps": round(ceiling, 2),
    }
    if pct > 100:  # impossible: the probe under-measured the bandwidth in this run
        return {
            **out,
            "roofline_pct": None,
            "roofline_note": f"bandwidth probe unreliable in this run (decode at {pct:.0f} % of its ceiling)",
        }
    return {**out, "roofline_pct": round(pct, 1)}
