"""A row sample of an F16/BF16 GGUF, so that the sensitivity stage's eleven `llama-quantize --pure` passes
cost a fraction of eleven full quantizations on wide models.

llama.cpp quantizes every row of a matrix on its own (blocks run along a row; the importance matrix is per
input channel, i.e. per column), so a tensor's squared error summed over a sample of its rows, times
rows / sampled rows, estimates the error of the whole tensor without bias, and a row's quantized bytes are
the same in every row: the full tensor's bytes are exact. The sample keeps every column, every expert and
every tensor name, so llama-quantize applies the same importance matrix entries and the same per-shape
fallback types as it would to the full file. Rows are taken at an even stride, which samples every
attention head and every part of the vocabulary alike. gguf-py writes the file (the library's writer,
with the source's metadata copied the way its own gguf_new_metadata script does)."""

from __future__ import annotations

import math
from pathlib import Path

# per sampled tensor: 1.05 M weights, e.g. 256 of an 8B model's 4096 attention rows (4.2 M until VERSION 5 of the
# sensitivity stage: the ladder was 40 % of its time at 8B; the stage records each estimate's standard error)
MAX_ELEMENTS = 1 << 20
MIN_ROWS = 32  # per expert: a stacked tensor of many experts keeps at least this many rows of each


def sample_rows(n_rows: int, n_cols: int, n_experts: int) -> int:
    """Rows per expert kept for a tensor of this shape (all of them for a tensor under MAX_ELEMENTS)."""
    return min(n_rows, max(MIN_ROWS, math.ceil(MAX_ELEMENTS / (n_cols * n_experts))))


def write(source: Path, target: Path) -> dict[str, tuple[int, int]] | None:
    """Write the row sample of `source` to `target`: {tensor: (rows, sampled rows)} of the tensors cut,
    or None (and nothing written) when no tensor is big enough to cut: then the source itself is the sample."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys

    reader = GGUFReader(source)
    cut: dict[str, tuple[int, int]] = {}
    arrays = {}
    for t in reader.tensors:
        data = t.data
        if len(t.shape) >= 2:  # GGUF shape [n_in, n_out, (n_expert)]; numpy's is reversed, rows on axis -2
            n_rows, n_experts = int(t.shape[1]), int(t.shape[2]) if len(t.shape) > 2 else 1
            keep = sample_rows(n_rows, int(t.shape[0]), n_experts)
            if keep < n_rows:
                rows = np.unique(np.linspace(0, n_rows - 1, keep).round().astype(np.int64))
                data = np.ascontiguousarray(np.take(data, rows, axis=-2))
                cut[t.name] = (n_rows, len(rows))
        arrays[t.name] = data
    if not cut:
        return None
    arch = reader.get_field(Keys.General.ARCHITECTURE).contents()
    writer = GGUFWriter(target, arch)
    alignment = reader.get_field(Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    for field in reader.fields.values():
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        a = arrays[t.name]
        writer.add_tensor_info(t.name, a.shape, a.dtype, a.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(arrays[t.name], tensor_endianess=reader.endianess)
    writer.close()
    return cut
