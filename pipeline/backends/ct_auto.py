"""compressed-tensors `type: auto`: one weight scheme per group of Linears (the format's W4A16, W8A16 per
channel, or bf16), chosen at a byte budget from measured sensitivity (backends/ct_sensitivity.py) by the
knapsack GGUF's `type: auto` uses (backends/knapsack.py). llm-compressor writes one checkpoint: the format's
own scheme for every Linear, a second config group naming the Linears upgraded to W8A16 (a regex target
outranks the class target), the bf16 ones in `ignore`. Each group is what vLLM fuses (q/k/v, gate/up), so a
fused layer never mixes schemes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.backends import SharedStep, ct_sensitivity, knapsack
from pipeline.backends.llmcompressor_schemes import scheme
from pipeline.checkpoints import loading
from pipeline.errors import StageError
from pipeline.stage_id import CALIBRATION, SOURCE, Kind

CHOICE_FILE = "ct-schemes.json"  # beside the artifact: the choice, its budget and its expected KLD


def budget(opts: Any, sensitivity: dict[str, Any]) -> int:
    """Bytes of weights: `target_size`, or the size of `like` for every group plus `extra_pct` of it."""
    if opts.target_size:
        return loading.parse_size(opts.target_size)
    groups = [t for t in sensitivity["tensors"].values() if t["types"]]
    like = knapsack.fixed_bytes(sensitivity) + sum(t["types"][opts.like]["bytes"] for t in groups)
    return int(like * (1 + opts.extra_pct / 100))


def choose_for(opts: Any, sensitivity_dir: Path, out: Path, ctx: Any) -> dict[str, Any]:
    """The choice for one auto format, written to CHOICE_FILE in `out`; the candidates it may use are the
    format's own scheme and its `upgrades`."""
    sensitivity = ct_sensitivity.output(sensitivity_dir)
    allowed = {"w4a16", *opts.upgrades}
    for t in sensitivity["tensors"].values():
        t["types"] = {s: c for s, c in t["types"].items() if s in allowed}
    try:
        choice = knapsack.choose(sensitivity, budget(opts, sensitivity))
    except knapsack.BudgetError as e:
        raise StageError(f"{opts.artifact}: {e}") from None
    ctx.status(f"chose schemes for {len(choice['types'])} groups: {choice['histogram']}")
    members = {g: t["members"] for g, t in sensitivity["tensors"].items()}
    modules = {s: sorted(m for g, t in choice["types"].items() if t == s for m in members[g]) for s in allowed}
    summary = {k: choice[k] for k in ("expected_kld", "weights_bytes", "budget_bytes", "bpw", "histogram", "by_kind")}
    summary["additivity"] = {**sensitivity["additivity"], "probe": sensitivity["probe"]}
    (out / CHOICE_FILE).write_text(json.dumps({**summary, "types": choice["types"]}, indent=1))
    return {"auto": summary, "modules": modules}


def stored_schemes(checkpoint: Path) -> dict[str, str]:
    """Decoder Linear -> the scheme its tensors are stored in, read from the safetensors themselves (not from the
    config that says what they should be): bf16 where `weight` is a float tensor, w8a16 where it is int8, else
    w4a16 or w8a16 from the packed width over the original (`weight_shape`), grouped or per channel from the
    scale's width."""
    from safetensors import safe_open

    out: dict[str, str] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(shard), "np") as f:
            for name in f.keys():
                module, _, leaf = name.rpartition(".")
                if ct_sensitivity.group_of(module) is None:
                    continue
                if leaf == "weight":  # unpacked: bf16, or 8-bit integers ("int-quantized")
                    out[module] = "w8a16" if f.get_slice(name).get_dtype() == "I8" else "bf16"
                elif leaf == "weight_packed":
                    rows, cols = (int(v) for v in f.get_tensor(f"{module}.weight_shape"))
                    bits = f.get_slice(name).get_shape()[1] * 32 // cols
                    grouped = f.get_slice(f"{module}.weight_scale").get_shape()[1] > 1
                    out[module] = {(4, True): "w4a16", (8, False): "w8a16"}.get((bits, grouped), f"{bits}-bit")
    return out


def check_stored(checkpoint: Path) -> dict[str, Any]:
    """After llm-compressor wrote it: every Linear of every group is stored in the scheme chosen for the group (a
    regex target that matched nothing, or matched more, would leave the checkpoint off the choice and a fused
    vLLM layer mixed), and its tensors take the bytes the choice counted (within 0.5 %). A StageError if not."""
    choice = json.loads((checkpoint / CHOICE_FILE).read_text())
    stored = stored_schemes(checkpoint)
    wrong = sorted(m for m, s in stored.items() if s != choice["types"][ct_sensitivity.group_of(m)[0]])
    if not stored:
        raise StageError("the checkpoint does not store the chosen schemes: it has no decoder Linear at all")
    if wrong:
        raise StageError(
            f"the checkpoint does not store the chosen schemes: {len(wrong)} Linears off, e.g. {wrong[0]} stored "
            f"as {stored[wrong[0]]}"
        )
    on_disk = tensor_bytes(checkpoint)
    if abs(on_disk / choice["weights_bytes"] - 1) > 0.005:
        raise StageError(
            f"the checkpoint's tensors take {on_disk} bytes where the choice counted {choice['weights_bytes']}"
        )
    return {"linears_checked": len(stored), "tensor_bytes": on_disk}


def tensor_bytes(checkpoint: Path) -> int:
    """Bytes of the tensors in a checkpoint's safetensors (each file less its JSON header)."""
    total = 0
    for f in checkpoint.glob("*.safetensors"):
        with f.open("rb") as fh:
            total += f.stat().st_size - 8 - int.from_bytes(fh.read(8), "little")
    return total


def targets(modules: list[str]) -> list[str]:
    """compressed-tensors targets naming exactly these modules."""
    return [f"re:^{re.escape(m)}$" for m in modules]


def sensitivity_step(opts: Any, versions: dict[str, str]) -> SharedStep:
    """The sensitivity stage an auto format needs: one per distinct 4-bit scheme (group size, symmetry), shared
    by every auto format of the run with that scheme."""
    w4 = scheme(opts)["weights"]
    options = ct_sensitivity.candidates(w4.get("group_size"), w4["symmetric"])
    return SharedStep(
        Kind.CT_SENSITIVITY,
        f"g{w4.get('group_size', 'channel')}-{'sym' if w4['symmetric'] else 'asym'}",
        "cost of W4A16 / W8A16 / bf16 per group of Linears (weighted error, KLD probes on calibration text)",
        {
            "version": ct_sensitivity.VERSION,
            "candidates": options,
            "probe": "w4a16",
            "windows": ct_sensitivity.PROBE_WINDOWS,
        },
        needs=(SOURCE, CALIBRATION),
        versions=versions,
    )


def describe(opts: Any) -> str:
    """ ", auto: ..." for the plan's format line; "" when the format is uniform."""
    if getattr(opts, "type", "uniform") != "auto":
        return ""
    budget = opts.target_size or f"the size of {opts.like}" + (f" +{opts.extra_pct:g} %" if opts.extra_pct else "")
    return f", auto: {'/'.join(['w4a16', *opts.upgrades])} per layer group at {budget}"
