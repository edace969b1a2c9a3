"""What this machine can do per second, measured once and kept under the pipeline cache.

The cost model's inputs from the machine: cores, RAM, CPU features (AVX2, AVX-512, VNNI, AMX, native
bf16), a GPU if any, and five throughputs measured by a micro-benchmark of a few seconds: float32 and
bfloat16 matrix products in torch (the compute of calibration and evaluation), memory bandwidth (a
copy), disk write speed (with fsync, where the cache lives) and llama-quantize on one 4096 x 4096
tensor (when llama.cpp is built). The result is keyed by a fingerprint of what identifies the machine
(CPU model and features, cores, RAM, GPU, torch version, llama.cpp build): a different machine, or an
upgraded torch, measures again. Reading the fingerprint costs no torch import, so `plan` stays fast."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.files import write_json_atomic
from pipeline.fingerprint import cache_root
from pipeline.tools import cpus
from pipeline.tools.processes import dies_with_parent

VERSION = 2
BUSY = 0.5  # load average per core above which the figures are taken as disturbed


@dataclass(frozen=True)
class MachineSpeed:
    fingerprint: str
    cpu: str
    cores: int
    ram_gb: float
    flags: tuple[str, ...]
    gpu: str  # "" without one
    gemm_f32_gflops: float
    gemm_bf16_gflops: float
    memory_gbps: float
    disk_write_gbps: float
    quantize_mparams_s: float | None  # llama-quantize to q4_K, million weights per second (None: not built)
    measured_s: float  # what the micro-benchmark cost
    load: float = 0.0  # the 1-minute load average per core when it ran: over 0.5, measured again when quieter

    @property
    def native_bf16(self) -> bool:
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags


def identity() -> dict:
    """What makes two machines (for our purposes) the same one: read from /proc, no imports."""
    info = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = cpus.flags()
    mem = next((line for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")), "0 0")
    from pipeline.versions import versions

    return {
        "version": VERSION,
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "ram_gb": round(int(mem.split()[1]) / 2**20, 1),
        "flags": flags,
        "gpu": _gpu(),
        "torch": versions(("torch",)).get("torch", ""),
        "llama": str(_llama_quantize() or ""),
    }


def machine_speed(measure: bool = True) -> MachineSpeed | None:
    """This machine's figures: from the cache, else measured now (a few seconds) unless `measure` is off."""
    ident = identity()
    fingerprint = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "machine" / f"{fingerprint}.json"
    try:
        data = json.loads(path.read_text())
        data["flags"] = tuple(data["flags"])
        cached = MachineSpeed(**data)
        # figures taken beside other work understate the machine: replace them once it is quiet
        if not measure or cached.load <= BUSY or _load() > BUSY:
            return cached
    except (OSError, ValueError, TypeError):
        pass
    if not measure:
        return None
    speed = _measure(fingerprint, ident)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, asdict(speed))
    except OSError:  # a read-only cache: measured again next time
        pass
    return speed


def _measure(fingerprint: str, ident: dict) -> MachineSpeed:
    import numpy as np
    import torch

    start = time.perf_counter()
    f32, bf16 = _gemm(torch, torch.float32), _gemm(torch, torch.bfloat16)
    block = np.ones(2**25, dtype=np.float32)  # 128 MB: beyond any cache
    copy = _best(lambda: np.copyto(np.empty_like(block), block), 3)
    memory = 2 * block.nbytes / copy / 1e9  # read + write
    disk = _disk_write(cache_root())
    quantize = _quantize_speed()
    return MachineSpeed(
        fingerprint,
        ident["cpu"],
        ident["cores"],
        ident["ram_gb"],
        ident["flags"],
        ident["gpu"],
        round(f32, 1),
        round(bf16, 1),
        round(memory, 2),
        round(disk, 3),
        None if quantize is None else round(quantize, 2),
        round(time.perf_counter() - start, 2),
        round(_load(), 2),
    )


def _load() -> float:
    return os.getloadavg()[0] / max(len(os.sched_getaffinity(0)), 1)


def _gemm(torch, dtype) -> float:
    """GFLOP/s of a 1024 x 4096 by 4096 x 1024 product (the shape of a layer over a batch of tokens)."""
    torch.manual_seed(0)
    a, b = torch.randn(1024, 4096, dtype=dtype), torch.randn(4096, 1024, dtype=dtype)
    a @ b  # warm-up: thread pool, kernel selection
    return 2 * 1024 * 4096 * 1024 / _best(lambda: a @ b, 3) / 1e9


def _disk_write(where: Path) -> float:
    """GB/s of writing 128 MB and fsyncing it (the stages write big files and fsync them)."""
    data = os.urandom(2**20) * 128
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".disk-speed-") as f:
            start = time.perf_counter()
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            return len(data) / (time.perf_counter() - start) / 1e9
    except OSError:  # not writable: the estimates use the reference machine's disk
        return 0.0


def _quantize_speed() -> float | None:
    """Million weights per second of llama-quantize to Q4_K on one 4096 x 4096 F16 tensor."""
    tool = _llama_quantize()
    if tool is None:
        return None
    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="quantize-speed-") as d:
        src, dst = Path(d) / "f16.gguf", Path(d) / "q4k.gguf"
        writer = gguf.GGUFWriter(str(src), "llama")
        # the hyperparameters llama-quantize's loader insists on, for a one-layer llama
        writer.add_context_length(2048)
        writer.add_embedding_length(4096)
        writer.add_block_count(1)
        writer.add_feed_forward_length(4096)
        writer.add_head_count(32)
        writer.add_head_count_kv(8)
        writer.add_layer_norm_rms_eps(1e-5)
        weights = np.random.default_rng(0).standard_normal((4096, 4096), np.float32).astype(np.float16)
        writer.add_tensor("blk.0.ffn_up.weight", weights)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        start = time.perf_counter()
        done = subprocess.run(
            [str(tool), "--pure", str(src), str(dst), "Q4_K_M"], capture_output=True, preexec_fn=dies_with_parent()
        )
        seconds = time.perf_counter() - start
        return 4096 * 4096 / seconds / 1e6 if done.returncode == 0 else None


def _llama_quantize() -> Path | None:
    """llama-quantize when llama.cpp is built (else GGUF estimates use the reference machine's rate)."""
    from pipeline.tools import llamacpp_toolchain

    chain = llamacpp_toolchain.find()
    return chain.tool("llama-quantize") if chain else None


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _gpu() -> str:
    root = Path("/proc/driver/nvidia/gpus")
    if not root.is_dir():
        return ""
    names = []
    for info in sorted(root.glob("*/information")):
        line = next((x for x in _read(str(info)).splitlines() if x.startswith("Model:")), "")
        names.append(line.split(":", 1)[-1].strip())
    return ", ".join(names)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
