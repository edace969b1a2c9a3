"""The calibration set on disk (the calibration stage's output, also the evaluation corpus): samples.jsonl,
one {"input_ids", "text"} per line. What every reader of a calibration set goes through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES = "samples.jsonl"


def write(stage_dir: Path, samples: list[dict[str, Any]]) -> None:
    with open(stage_dir / SAMPLES, "w") as f:
        for s in samples:
            f.write(json.dumps({"input_ids": s["input_ids"], "text": s["text"]}, ensure_ascii=False) + "\n")


def load(stage_dir: Path) -> list[dict[str, Any]]:
    with open(stage_dir / SAMPLES) as f:
        return [json.loads(line) for line in f]


def texts(stage_dir: Path) -> list[str]:
    return [s["text"] for s in load(stage_dir)]
