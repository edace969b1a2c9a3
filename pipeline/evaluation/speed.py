"""Speed in the serving engine: prompt processing (prefill) and decode tokens/s, time to first token,
peak memory, and the decode roofline of this machine's memory bandwidth.

Each measurement runs in its own process so that its peak RSS is the engine's alone. transformers:
a fixed prompt from the evaluation text, then greedy decode one token at a time with the KV cache.
llama.cpp: its own llama-bench (pp = prompt tokens, tg = decode tokens), which warms up first."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run_child(cmd: list[str]) -> tuple[str, float]:
    """stdout and peak RSS (MB) of one child process (wait4 gives that child's own rusage)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            out = proc.stdout.read()  # type: ignore[union-attr]
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            tail = (err.read() or out).decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{Path(cmd[0]).name} exited with {proc.returncode}: {tail}")
    return out.decode(), usage.ru_maxrss / 1024


def llama_bench(tool: Path, gguf: Path, prompt: int, decode: int, repeats: int, threads: int) -> dict[str, Any]:
    out, rss = run_child([str(tool), "-m", str(gguf), "-p", str(prompt), "-n", str(decode), "-r", str(repeats),
                          "-t", str(threads), "-o", "json"])
    rows = json.loads(out)
    pp = next(r for r in rows if r["n_prompt"] and not r["n_gen"])
    tg = next(r for r in rows if r["n_gen"] and not r["n_prompt"])
    ttft = [1000 * prompt / ts for ts in pp["samples_ts"]]
    return {"engine": "llama.cpp (llama-bench)", "device": "cpu", "threads": threads, "pp_tps": spread(pp["samples_ts"]),
            "tg_tps": spread(tg["samples_ts"]), "ttft_ms": spread(ttft), "peak_rss_mb": round(rss, 1)}


def transformers_speed(path: Path, prompt_ids: list[int], decode: int, repeats: int, warmup: int, threads: int,
                       trust_remote_code: bool, device: str = "cpu") -> dict[str, Any]:
    payload = json.dumps({"path": str(path), "ids": prompt_ids, "decode": decode, "repeats": repeats, "warmup": warmup,
                          "threads": threads, "trust_remote_code": trust_remote_code, "device": device})
    out, rss = run_child([sys.executable, "-m", "pipeline.evaluation.speed", payload])
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": round(rss, 1)}


def _measure(args: dict[str, Any]) -> dict[str, Any]:
    import torch

    from pipeline.evaluation.engines import HFEngine

    engine = HFEngine(Path(args["path"]), args["threads"], args["trust_remote_code"], args["device"])
    model, device = engine.model, args["device"]
    ids = torch.tensor([args["ids"]], device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pp, tg, ttft = [], [], []
    with torch.no_grad():
        for i in range(args["warmup"] + args["repeats"]):
            sync()
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            sync()
            t1 = time.perf_counter()
            cache = out.past_key_values
            for _ in range(args["decode"]):
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            sync()
            t2 = time.perf_counter()
            if i >= args["warmup"]:
                pp.append(ids.shape[1] / (t1 - t0))
                ttft.append(1000 * (t1 - t0))
                tg.append(args["decode"] / (t2 - t1))
    return {"engine": "transformers", "device": device, "threads": torch.get_num_threads(), "pp_tps": spread(pp),
            "tg_tps": spread(tg), "ttft_ms": spread(ttft), "weight_bytes": engine.weight_bytes()}


def memory_bandwidth_gbps(mb: int = 512, repeats: int = 5) -> float:
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
    return {**result, "weight_bytes": weight_bytes, "bandwidth_gbps": round(bandwidth_gbps, 2),
            "roofline_tg_tps": round(ceiling, 2), "roofline_pct": round(100 * result["tg_tps"]["median"] / ceiling, 1)}


if __name__ == "__main__":  # the child process of transformers_speed
    parser = argparse.ArgumentParser()
    parser.add_argument("payload")
    print(json.dumps(_measure(json.loads(parser.parse_args().payload))))
