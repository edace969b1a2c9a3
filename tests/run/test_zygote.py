"""A stage worker gives the memory its libraries free back to the system (glibc keeps it otherwise), so its
RSS, its peak and what the machine has left follow what the stage holds."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

# 600 blocks of 1 MB freed while the last one stays: glibc keeps the hole in its heap (freeing an 8 MB mmap'd
# block first raises its mmap threshold, as torch's big tensors do), unless something trims it.
SCRIPT = """
import sys, time
from pipeline.run.zygote import _give_back_freed_memory
if sys.argv[1] == "trim":
    _give_back_freed_memory(0.2)
big = bytearray(8 << 20)
del big
blocks = [bytearray(1 << 20) for _ in range(600)]
keep = blocks[-1]
del blocks
time.sleep(1.0)
print(int(open("/proc/self/statm").read().split()[1]) * 4096 // 10**6)
"""


def _rss_mb_after_freeing(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_worker_gives_freed_heap_memory_back():
    kept, trimmed = _rss_mb_after_freeing("keep"), _rss_mb_after_freeing("trim")
    assert kept > 500 and trimmed < kept - 400, (kept, trimmed)
