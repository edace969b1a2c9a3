"""Helpers to call stage and backend functions directly in tests (real libraries, no mocks)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from pipeline.console import StageContext, stage_progress


@contextmanager
def stage_ctx(stage_id: str = "test") -> Iterator[StageContext]:
    with stage_progress(quiet=True) as progress:
        yield StageContext(stage_id, progress, progress.add_task(stage_id))


def logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits.float()


def probe_ids(n: int = 48) -> torch.Tensor:
    return torch.randint(3, 400, (1, n), generator=torch.Generator().manual_seed(0))
