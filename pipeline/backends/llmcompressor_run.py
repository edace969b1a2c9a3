"""Running llm-compressor for the llmcompressor backend, in the stage's worker process.

Calibrated schemes go through `oneshot` with the model loaded as llm-compressor documents for big
models (`_loaded`); data-free schemes through `model_free_ptq`, one safetensors shard at a time."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.backends import expert_counts
from pipeline.checkpoints import loading, moe
from pipeline.data.samples import load as load_samples
from pipeline.files import INFO, MARKER

log = logging.getLogger("pipeline.backends.llmcompressor")
EMBEDDINGS = "re:.*embed_tokens$"
# Mixture-of-experts routers (Qwen-MoE/DeepSeek `mlp.gate`, Mixtral `block_sparse_moe.gate`, Llama 4
# `feed_forward.router`, gpt-oss `mlp.router`) and shared-expert gates stay unquantized: they are tiny, a
# token's route depends on their exact logits, and transformers does not load a quantized router (it
# re-initialises it at random, silently: seen with model_free_ptq on Qwen3-MoE).
ROUTERS = r"re:.*(mlp|block_sparse_moe|feed_forward)\.(gate|router|shared_expert_gate)$"


def oneshot(recipe: Any, source: Path, calibration: Path | None, out: Path, ctx: Any) -> dict[str, Any]:
    """`recipe`: modifiers, or the path of a recipe YAML. Returns facts for the manifest."""
    import torch
    from llmcompressor import oneshot as llmc_oneshot
    from transformers import AutoTokenizer

    _guard_pin_memory()
    with _loaded(source, out, ctx) as model:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=ctx.trust_remote_code)
        kwargs: dict[str, Any] = {}
        if calibration is not None:
            kwargs = _calibration_kwargs(calibration)
            ctx.status(f"calibrating on {kwargs['num_calibration_samples']} samples (llmcompressor oneshot)")
        else:
            ctx.status("quantizing (llmcompressor oneshot, data-free)")
        found_routers: list[str] = []
        moe_model = moe.is_moe(model.config.to_dict())
        unquantized = _unquantized_decoder_linears(recipe)
        if moe_model or unquantized:
            _split_awq_mappings(recipe, model, unquantized)
        if moe_model:
            found_routers = _ignore_routers(recipe, model)
        layers = moe.text_config(model.config.to_dict()).get("num_hidden_layers")
        _route_loguru(ctx, layers)  # after every import: llmcompressor and compressed-tensors add sinks when imported
        with expert_counts.counted(model) as experts:
            llmc_oneshot(model=model, recipe=recipe, tokenizer=tokenizer, **kwargs)
        if experts.get("experts_never_routed"):
            ctx.status(
                f"{experts['experts_never_routed']} experts were routed no calibration token (all were calibrated)"
            )
        ctx.status("saving compressed-tensors checkpoint")
        stored = getattr(torch, loading.stored_dtype(source))
        if (
            model.dtype != stored
        ):  # upcast for CPU speed (pipeline.checkpoints.loading): unquantized parts keep the source's precision
            model.to(stored)
        model.save_pretrained(out, save_compressed=True)
        tokenizer.save_pretrained(out)
    renamed = moe.restore_expert_names(out, json.loads((source / "config.json").read_text()))
    if renamed:
        ctx.status(f"{renamed} expert tensors given back their architecture's names")
    return {
        **({"expert_tensors_renamed": renamed} if renamed else {}),
        "entrypoint": "oneshot",
        "modifiers": [type(m).__name__ for m in recipe] if isinstance(recipe, list) else recipe,
        **({"experts": experts} if experts else {}),
        **({"routers": found_routers} if found_routers else {}),
    }


def _ignore_routers(recipe: Any, model: Any) -> list[str]:
    """Every router found from the model's structure (pipeline.backends.moe_modules) left unquantized by each
    quantizing modifier, whatever its name (ROUTERS names the usual ones for the data-free path)."""
    from pipeline.backends import moe_modules

    found = moe_modules.routers(model, moe.experts(model.config.to_dict()))
    for modifier in recipe if isinstance(recipe, list) else []:
        if found and isinstance(getattr(modifier, "ignore", None), list):
            modifier.ignore = [*modifier.ignore, *(r for r in found if r not in modifier.ignore)]
    return found


def _split_awq_mappings(recipe: Any, model: Any, unquantized: frozenset[str]) -> None:
    """AWQ on a model mixing dense and MoE layers, or leaving decoder Linears unquantized: the architecture's
    mappings split by layer kind, without the layers with nothing to balance (pipeline.backends.awq_mappings);
    a mapping the recipe sets itself is the recipe's."""
    from pipeline.backends import awq_mappings

    for modifier in recipe if isinstance(recipe, list) else []:
        if type(modifier).__name__ == "AWQModifier" and modifier.mappings is None:
            modifier.mappings = awq_mappings.for_model(model, unquantized)


def _unquantized_decoder_linears(recipe: Any) -> frozenset[str]:
    """Decoder Linears the recipe's modifiers leave unquantized by name (`type: auto`'s bf16 ones)."""
    names = {n for m in (recipe if isinstance(recipe, list) else []) for n in (getattr(m, "ignore", None) or [])}
    return frozenset(n for n in names if not n.startswith("re:") and ".layers." in n)


@contextmanager
def _loaded(source: Path, out: Path, ctx: Any) -> Iterator[Any]:
    """The source model for oneshot, loaded as llm-compressor documents for big models: on the CPU in
    its stored dtype (float32 only for small models, pipeline.checkpoints.loading), with the sequential pipeline
    onloading one layer at a time to an accelerator when there is one; and, when the weights do not
    fit the CPU memory budget, with compressed-tensors' disk offloading (`load_offloaded_model`)."""
    import tempfile

    from transformers import AutoModelForCausalLM

    dtype = loading.compute_dtype(source)
    size = loading.weight_bytes(source) // loading.BYTES[loading.stored_dtype(source)] * dtype.itemsize
    budget = loading.cpu_budget_bytes()
    name = str(dtype).removeprefix("torch.")
    if size <= budget:
        ctx.status(f"loading model ({size / 1e6:,.0f} MB, {name})")
        # Shards read with pread, one conversion at a time for MoE (loading.from_pretrained_pread): the
        # memory-mapped default holds the whole checkpoint in file-backed RSS beside the model, and every
        # expert twice while transformers stacks them (1.47x the bf16 size before calibration starts).
        sequential = moe.is_moe(json.loads((source / "config.json").read_text()))
        yield _linearized(
            loading.from_pretrained_pread(
                source, trust_remote_code=ctx.trust_remote_code, sequential=sequential, dtype=dtype, device_map=None
            ),
            ctx,
        )
        return
    from compressed_tensors.offload import load_offloaded_model

    ctx.status(
        f"loading model ({size / 1e6:,.0f} MB, {name}) with disk offloading: more than the "
        f"{budget / 1e6:,.0f} MB CPU budget"
    )
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f"{out.name}.offload-") as folder:
        with load_offloaded_model():
            model = AutoModelForCausalLM.from_pretrained(
                source,
                dtype=dtype,
                device_map="auto_offload",
                max_memory={"cpu": budget},
                offload_folder=folder,
                trust_remote_code=ctx.trust_remote_code,
            )
        yield _linearized(model, ctx)


def _linearized(model: Any, ctx: Any) -> Any:
    """transformers' fused experts turned into one nn.Linear per expert and projection, by llm-compressor's
    own converter (`LinearExperts2D.from_experts_module`), one MoE block at a time. oneshot would do it
    itself (`linearize_moe`), but that keeps every fused block referenced until the last is converted:
    every expert weight twice at once, 2.05x the bf16 checkpoint measured on an 8-layer Qwen3-30B-A3B
    twin. Block by block, one block's experts are held twice at most. (llm-compressor's direct path,
    `load_quantizable_moe`, fails here: transformers' patch mapping then imports every model module, aria's
    image processor among them, which needs torchvision.)"""
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D
    from llmcompressor.modeling.moe.linearize import get_non_linearized_moes

    names = [name for name, _ in get_non_linearized_moes(model)]
    for i, name in enumerate(names, 1):
        ctx.status(f"one linear layer per expert: block {i}/{len(names)}")
        fused = model.get_submodule(name)
        converter = LinearExperts2D.get_linear_experts_cls(type(fused))
        model.set_submodule(name, converter.from_experts_module(fused, getattr(fused, "config", model.config)))
        del fused  # the last reference: its weights are freed before the next block is copied
    return model


def model_free(scheme: dict[str, Any], ignore: list[str], source: Path, out: Path, ctx: Any) -> dict[str, Any]:
    """Data-free schemes (FP8 dynamic, W8A16) with llm-compressor's model_free_ptq: one safetensors
    shard at a time, never the whole model in memory. Same tensors as oneshot (checked in the tests).
    The embedding table is left alone, as llm-compressor's own examples do: model_free_ptq would
    otherwise quantize a tied embedding as if it were a Linear layer."""
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme
    from llmcompressor import model_free_ptq

    config = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme.model_validate(scheme)}, ignore=ignore + [EMBEDDINGS, ROUTERS]
    )
    ctx.status("quantizing shard by shard (llmcompressor model_free_ptq, data-free)")
    _route_loguru(ctx)
    model_free_ptq(str(source), str(out), config=config, device=loading.device())
    for leftover in (MARKER, INFO):  # model_free_ptq copies every non-weight file of the source stage
        (out / leftover).unlink(missing_ok=True)
    return {"entrypoint": "model_free_ptq", "modifiers": ["QuantizationModifier"]}


def _calibration_kwargs(calibration: Path) -> dict[str, Any]:
    from datasets import Dataset

    samples = load_samples(calibration)
    ids = [s["input_ids"] for s in samples]
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    return {
        "dataset": ds,
        "num_calibration_samples": len(ids),
        "max_seq_length": max(map(len, ids)),
        "shuffle_calibration_samples": False,
    }


def _route_loguru(ctx: Any, layers: int | None = None) -> None:
    """llmcompressor logs through loguru to the terminal: send it to the stage's log file, and show
    its per-layer messages ("Quantizing model.layers.7.mlp.down_proj") as the stage's progress, with the
    layers done so far ("layers done 7/24": the runner's ETA follows that count)."""
    from loguru import logger

    def sink(message: Any) -> None:
        text = message.record["message"]
        log.info(text)
        if text.startswith(("Quantizing", "Smoothing", "Calibrating", "Applying", "Compressing")) or "layers." in text:
            at = re.search(r"layers\.(\d+)\.", text)
            done = f" (layers done {int(at.group(1))}/{layers})" if at and layers else ""
            ctx.status(text.replace("1 module(s): ", "")[:100] + done)

    logger.remove()
    logger.add(sink, level="INFO", format="{message}")


def _guard_pin_memory() -> None:
    """llmcompressor 0.14 pins its activation cache for host-to-GPU copies; on a CPU-only torch,
    pin_memory raises "Cannot access accelerator device". Pinning is pointless there: skip it."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if not torch.accelerator.is_available():
        IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
