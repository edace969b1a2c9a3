"""huggingface_hub's byte counts as the stage's status line ("downloading org/model: 1,200/16,000 MB"),
so a download shows in the run's rich display (and drives its ETA, pipeline.console.Eta) instead of a
tqdm bar of its own, which `-q` and piped output would have to fight."""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm.std import tqdm

MB = 1e6
EVERY_S = 1.0


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def status_bar(status: Callable[[str], None], label: str) -> type[tqdm]:
    """A tqdm class for huggingface_hub's `tqdm_class=` that reports byte progress through `status`."""
    last = [0.0]

    class StatusBar(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own bars take a name; tqdm does not
            # explicit: TQDM_DISABLE (set by quiet_libraries) must not silence the counts we relay
            super().__init__(*args, **{**kwargs, "disable": False, "file": _Sink()})

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            now = time.monotonic()
            if self.unit == "B" and self.total and (now - last[0] >= EVERY_S or self.n >= self.total):
                last[0] = now
                status(f"{label}: {self.n / MB:,.0f}/{self.total / MB:,.0f} MB")
            return shown

    return StatusBar
