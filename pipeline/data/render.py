"""Records -> calibration samples: chat rendered through the model's own template, text packed or
truncated to seq_len tokens. Deterministic for a given seed."""

from __future__ import annotations

from typing import Any

from pipeline.errors import RecipeError
from pipeline.recipe import CalibrationSource, CalibrationSpec

# ShareGPT and friends name roles differently; chat templates know user/assistant/system.
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


def to_messages(value: Any) -> list[dict[str, str]] | None:
    if not isinstance(value, list) or not value:
        return None
    messages = []
    for turn in value:
        if not isinstance(turn, dict):
            return None
        role = ROLES.get(str(turn.get("role", turn.get("from", ""))).lower())
        content = turn.get("content", turn.get("value"))
        if role is None or not isinstance(content, str):
            return None
        messages.append({"role": role, "content": content})
    return messages


def build_samples(
    records: Any, src: CalibrationSource, spec: CalibrationSpec, tokenizer: Any, name: str
) -> tuple[list[dict], dict]:
    chat = src.messages_field is not None
    packing = spec.packing if spec.packing is not None else not chat
    if chat and not tokenizer.chat_template:
        raise RecipeError(
            f"source {name!r} is chat data but the model's tokenizer has no chat template; use a text source",
            field=("calibration", "source"),
        )
    shuffled = records.shuffle(seed=spec.seed)
    samples: list[dict] = []
    skipped = 0
    buffer: list[int] = []
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for record in shuffled:
        if len(samples) >= spec.wanted:
            break
        text = _render(record, src, tokenizer)
        if not text:
            skipped += 1
            continue
        ids = tokenizer(text, add_special_tokens=not chat)["input_ids"]
        if not packing:
            samples.append({"input_ids": ids[: spec.seq_len]})
            continue
        buffer += ids + sep
        while len(buffer) >= spec.seq_len and len(samples) < spec.wanted:
            samples.append({"input_ids": buffer[: spec.seq_len]})
            buffer = buffer[spec.seq_len :]
    if len(samples) < spec.required:
        unit = f"windows of {spec.seq_len} tokens" if packing else "usable records"
        raise RecipeError(
            f"source {name!r} gives only {len(samples)} {unit}, fewer than samples: {spec.required}; "
            "lower samples or seq_len, or use a larger source",
            field=("calibration", "samples"),
        )
    for s in samples:
        s["text"] = tokenizer.decode(s["input_ids"])
    lengths = [len(s["input_ids"]) for s in samples]
    stats = {
        "samples": len(samples),
        "tokens": sum(lengths),
        "mean_len": round(sum(lengths) / len(lengths), 1),
        "max_len": max(lengths),
        "min_len": min(lengths),
        "packing": packing,
        "chat_template": chat,
        "skipped_records": skipped,
    }
    return samples, stats


def _render(record: dict, src: CalibrationSource, tokenizer: Any) -> str | None:
    if src.text_field:
        text = record.get(src.text_field)
        return text if isinstance(text, str) and text.strip() else None
    messages = to_messages(record.get(src.messages_field))
    if not messages:
        return None
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:
        return None
