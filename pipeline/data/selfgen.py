"""Data-free calibration: the model writes its own samples (seeded sampling from BOS or short
prompts), as in "LLM-QAT" / "data-free quantization" work, for when no data fits the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.checkpoints import loading
from pipeline.recipe import CalibrationSource, CalibrationSpec

BATCH = 8


def generate(
    model_dir: Path, tokenizer: Any, src: CalibrationSource, spec: CalibrationSpec, ctx: Any, trust_remote_code: bool
) -> tuple[list[dict], dict]:
    import torch
    from transformers import AutoModelForCausalLM

    dev = loading.device()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=loading.compute_dtype(model_dir, on=dev), device_map=dev, trust_remote_code=trust_remote_code
    ).eval()
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in src.prompts] or [[start]]
    torch.manual_seed(spec.seed)
    samples: list[dict] = []
    while len(samples) < spec.wanted:
        prompt = prompts[len(samples) % len(prompts)][: spec.seq_len - 1]
        n = min(BATCH, spec.wanted - len(samples))
        ctx.status(f"generating samples {len(samples) + 1}-{len(samples) + n} of {spec.wanted}")
        ids = torch.tensor([prompt] * n, device=dev)
        new = spec.seq_len - len(prompt)
        with torch.no_grad():
            # min_new_tokens keeps EOS away, so every sample is exactly seq_len tokens long.
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=50,
                temperature=1.0,
                min_new_tokens=new,
                max_new_tokens=new,
                pad_token_id=tokenizer.pad_token_id or start,
            )
        samples += [{"input_ids": row.tolist(), "text": tokenizer.decode(row)} for row in out.cpu()]
    stats = {
        "samples": len(samples),
        "tokens": spec.wanted * spec.seq_len,
        "mean_len": float(spec.seq_len),
        "max_len": spec.seq_len,
        "min_len": spec.seq_len,
        "packing": False,
        "chat_template": False,
        "skipped_records": 0,
        "generated": True,
    }
    return samples, stats
