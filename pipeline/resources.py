"""The data files the pipeline ships (calibration/ and eval/ at the repository's top): reached through
pipeline/_data/, links in a source tree and copies in an installed wheel (pyproject's package-data),
so a non-editable install finds them too. Read-only: nothing is ever written there."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "_data"


def data_file(*parts: str) -> Path:
    """A shipped file or directory: data_file("eval", "gates.yaml"). Resolved: keys that hold a path
    relative to a task file must see the same directory as the files it names (not the link to it)."""
    return DATA.joinpath(*parts).resolve()
