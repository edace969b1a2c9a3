"""huggingface_hub's progress as the stage's status line ("downloading org/model: 1,200/16,000 MB"), so a
download or an upload shows in the run's rich display (and drives its ETA, pipeline.console.Eta) instead of
a tqdm bar of its own, which `-q` and piped output would have to fight."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


# upload_folder's streamed (Xet) pipeline logs a summary of where the upload stands every 30 s when stderr
# is not a terminal ("Uploading... 3/5 files checked, 1/2 uploaded (1.2GB transferred), 0 committed in 0
# commit(s)"), as a stage worker's is not: that line, relayed, is the upload's status.
UPLOAD_LOGGER = "huggingface_hub._upload_pipeline"


class _Relay(logging.Handler):
    def __init__(self, status: Callable[[str], None], label: str) -> None:
        super().__init__(logging.INFO)
        self.status, self.label = status, label

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().removeprefix("Uploading... ")
        self.status(f"{self.label}: {message.splitlines()[0] if message else ''}")


@contextmanager
def upload_status(status: Callable[[str], None], label: str) -> Iterator[None]:
    """Relay huggingface_hub's upload summaries through `status` while the body uploads."""
    log = logging.getLogger(UPLOAD_LOGGER)
    relay, level = _Relay(status, label), log.level
    log.addHandler(relay)
    log.setLevel(logging.INFO)  # the pipeline only keeps its counts when its logger would print them
    try:
        yield
    finally:
        log.removeHandler(relay)
        log.setLevel(level)
