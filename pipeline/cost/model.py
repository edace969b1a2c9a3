"""What the cost model works from, and what it gives: one Estimate per stage.

Every figure is built from the model's shapes (pipeline.cost.shapes), the recipe's token counts and the
machine's measured throughputs (pipeline.cost.machine_speed), with constants fitted on the reference
machine (REFERENCE: a 2-core AMD EPYC with AVX-512 and native bf16, where the tables of pipeline/docs/estimates.md were
measured). A constant is "work per second on the reference machine"; another machine's rate is that
times the ratio of its micro-benchmark figure to the reference's, for the resource the work is bound
by (matrix products in float32 or bf16, memory, disk, llama-quantize). History (pipeline.cost.history)
corrects what remains, per stage kind, from this machine's own finished stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.cost.machine_speed import MachineSpeed
from pipeline.cost.shapes import ModelShape

VERSION = 3  # of the cost functions and constants: history learned against another version is not reused
GB = 1e9
# Resident memory of a stage worker before it holds any model: it is forked from the run's zygote, which
# imported torch and transformers (pipeline.run.zygote); a tool it runs (llama.cpp) is measured apart,
# and the stage's peak is the larger of the two (wait4).
WORKER_BASE_MB = 620
MB = 1e6


@dataclass(frozen=True)
class Estimate:
    seconds: float
    peak_rss_mb: float
    written_bytes: int
    basis: str = ""  # what the figure counts, e.g. "24 layers x 4096 tokens"
    corrected_by: int = 0  # finished stages of this machine's history that scaled it
    scratch_bytes: int = 0  # written and deleted again within the stage (its disk peak is both)

    @property
    def disk_peak(self) -> int:
        return self.written_bytes + self.scratch_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb),
            "written_bytes": int(self.written_bytes),
            "basis": self.basis,
            "corrected_by": self.corrected_by,
            "scratch_bytes": int(self.scratch_bytes),
        }


# The reference machine's micro-benchmark (pipeline.cost.machine_speed), where the constants were fitted.
REFERENCE = {
    "gemm_f32_gflops": 190.0,
    "gemm_bf16_gflops": 420.0,
    "memory_gbps": 20.0,
    "disk_write_gbps": 1.6,
    "quantize_mparams_s": 28.0,
}


@dataclass(frozen=True)
class CostInputs:
    shape: ModelShape
    speed: MachineSpeed
    compute_dtype: str  # what transformers computes in here: float32 (small models on CPU) or the stored dtype
    calibration_tokens: int
    eval_tokens: int
    formats: dict[str, Any] = field(default_factory=dict)  # artifact -> its FormatOptions
    source_written: int = 0  # bytes the source stage writes (hard links and the Hub cache: 0)
    source_kind: str = "path"
    speed_run: tuple[int, int, int, float] = (0, 0, 0, 0.0)  # prompt, decoded tokens, runs, budget s (0: off)
    tasks: bool = False  # lm-eval tasks: their harness in the worker
    eval_context: int = 512  # tokens per evaluation window (llama.cpp sizes its logits buffer by it)
    calibration_seq_len: int = 512  # tokens per calibration sample (one sample is one forward batch)

    @property
    def worker_base_mb(self) -> float:
        return WORKER_BASE_MB

    def options(self, stage) -> Any:
        """The FormatOptions of the artifact a stage makes or measures (None for the model-wide stages)."""
        name = stage.artifact or getattr(stage.id, "arg", None) or ""
        return self.formats.get(name.split("@")[0])

    def scale(self, resource: str) -> float:
        """How much faster this machine is than the reference at `resource` (1.0 when not measured)."""
        mine = getattr(self.speed, resource, None)
        return mine / REFERENCE[resource] if mine else 1.0

    def torch_rate(self, dtype: str | None = None) -> float:
        """FLOP/s of transformers' forward pass here (a fraction of the GEMM peak: norms, attention, copies)."""
        dtype = dtype or self.compute_dtype
        key = "gemm_f32_gflops" if dtype == "float32" else "gemm_bf16_gflops"
        peak = getattr(self.speed, key) * 1e9
        return peak * 0.35

    def llama_rate(self) -> float:
        """FLOP/s of llama.cpp's F16 forward pass here (its own kernels: tracks float32 GEMM throughput)."""
        return 170e9 * self.scale("gemm_f32_gflops")

    def quantize_rate(self) -> float:
        """Weights per second of llama-quantize (K-quants with an importance matrix)."""
        return 33e6 * self.scale("quantize_mparams_s")

    def bf16_bytes(self) -> int:
        return self.shape.bytes(16)

    def compute_bytes(self) -> int:
        return self.shape.bytes(32 if self.compute_dtype == "float32" else 16)
