"""huggingface_hub's upload progress reaches the stage's status line: its streamed upload pipeline keeps
and logs its counts only when its logger is enabled for INFO (a stage worker's stderr is no terminal)."""

from __future__ import annotations

import logging
import time

from pipeline.tools.hub_progress import UPLOAD_LOGGER, upload_status


def test_the_upload_pipeline_s_own_summaries_become_status_lines():
    from huggingface_hub import _upload_pipeline

    assert _upload_pipeline.logger.name == UPLOAD_LOGGER
    assert not _upload_pipeline._LiveDisplay(total_files=2, enabled=False)._active  # silent by default
    lines: list[str] = []
    with upload_status(lines.append, "uploading to org/m"):
        display = _upload_pipeline._LiveDisplay(total_files=2, enabled=False)
        assert display._active
        display.start()
        display.notify_prepared(2)
        time.sleep(1.2)  # its renderer logs a summary on its first tick off a terminal
        display.close()
    assert lines[0] == "uploading to org/m: Found 2 files to upload"
    assert any(line.startswith("uploading to org/m: 2/2 files checked") for line in lines), lines
    assert all(type(h).__name__ != "_Relay" for h in logging.getLogger(UPLOAD_LOGGER).handlers)
    assert not _upload_pipeline._LiveDisplay(total_files=2, enabled=False)._active  # restored
