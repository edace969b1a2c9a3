"""What a quantize stage costs: its format's family says (pipeline.backends.Backend.cost, in the family's own
modules: backends/llmcompressor_cost.py, backends/gguf_cost.py, and the bitsandbytes and OpenVINO backends),
from the plan's CostInputs; here it becomes an Estimate, which history then corrects."""

from __future__ import annotations

from pipeline.backends import FORMATS
from pipeline.cost.model import CostInputs, Estimate
from pipeline.graph.stage import Stage


def quantize(stage: Stage, c: CostInputs) -> Estimate:
    opts = c.options(stage)
    q = FORMATS[opts.format].backend.cost(opts, c)
    return Estimate(q.seconds, q.peak_rss_mb, q.written_bytes, q.basis, scratch_bytes=q.scratch_bytes)
