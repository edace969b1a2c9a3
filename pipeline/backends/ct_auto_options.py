"""The recipe options of compressed-tensors' `type: auto` (plain data: the recipe schema reads them without
the backend; backends/ct_auto.py chooses, backends/ct_sensitivity.py measures)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class AutoOptions(BaseModel):
    """The 4-bit formats' `type: auto` (a mixin of their options: plain data, read by the recipe schema)."""

    type: Literal["uniform", "auto"] = Field(
        "uniform",
        description="auto: a scheme per group of Linears (this format's 4 bits, INT8 weight-only, or bf16) chosen "
        "from measured sensitivity at a byte budget (like + extra_pct, or target_size)",
    )
    like: Literal["w4a16", "w8a16"] | None = Field(
        None, description="type: auto at the weights' size with every Linear at this scheme (plus extra_pct)"
    )
    extra_pct: float = Field(0, ge=0, le=100, description="type: auto: per cent of bytes beyond `like` to spend")
    target_size: str | None = Field(
        None, pattern=r"^[0-9]+(\.[0-9]+)?(MB|GB|MiB|GiB)$", description="type: auto: the weights' size, e.g. 120MB"
    )
    upgrades: list[Literal["w8a16", "bf16"]] = Field(
        default_factory=lambda: ["w8a16", "bf16"],
        min_length=1,
        description="type: auto: the schemes a group may be raised to (vLLM's CPU build serves bf16, not W8A16)",
    )

    def _auto_suffix(self) -> str:
        if self.type != "auto":
            return ""
        if self.target_size:
            return f"-auto-{self.target_size.lower()}"
        return f"-auto-{self.like}" + (f"-{self.extra_pct:g}pct" if self.extra_pct else "")

    @model_validator(mode="after")
    def _one_budget(self) -> AutoOptions:
        given = [f for f in ("like", "target_size") if getattr(self, f) is not None]
        if self.type == "auto" and len(given) != 1:
            raise ValueError("type: auto needs exactly one byte budget: like (w4a16 or w8a16) or target_size")
        if self.type != "auto" and (given or self.extra_pct):
            raise ValueError(f"{(given or ['extra_pct'])[0]} is a byte budget for type: auto")
        if self.extra_pct and not self.like:
            raise ValueError("extra_pct is a share of like's size: give like, or target_size alone")
        return self
