"""Thread counts follow the CPUs this process may use (its affinity mask: a cpuset, taskset, a pinned test
worker), not the machine's core count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.tools import cpus


@pytest.mark.parametrize("mask,expected", [({0}, "0"), ({1}, "1"), ({0, 1, 2, 3}, "0-3"), ({0, 2, 3, 7}, "0,2-3,7")])
def test_cpu_list_in_the_form_vllm_and_taskset_read(monkeypatch, mask, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(mask))
    assert cpus.count() == len(mask) and cpus.id_list() == expected
    assert cpus.id_list(1) == str(min(mask))


def test_a_process_pinned_to_one_cpu_gives_every_engine_one_thread():
    """A child pinned to one CPU of its mask: our count, the id list vLLM is bound to, and torch's own default
    (OpenMP reads the same mask) all say one."""
    one = max(os.sched_getaffinity(0))
    script = (
        f"import os; os.sched_setaffinity(0, {{{one}}}); import torch; from pipeline.tools import cpus;"
        "print(cpus.count(), cpus.id_list(), torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", str(one), "1"]


def test_flags_are_whole_cpuinfo_words():
    """Every machine this runs on (CI's and ours: AVX2 or AVX-512) has AVX2; a flag is a whole word of
    /proc/cpuinfo's flags line (avx512f, never a prefix of avx512fp16)."""
    text = open("/proc/cpuinfo").read()
    line = next(x for x in text.splitlines() if x.startswith("flags")).split()
    assert "avx2" in cpus.flags() and set(cpus.flags()) <= set(cpus.FLAGS)
    assert all(f in line for f in cpus.flags())
