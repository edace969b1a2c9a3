"""A GGUF file's header: its metadata values and tensor infos, walked in the layout of gguf-py's own
reader (KV pairs, tensor infos, aligned data) without building what we never read.

Why not gguf.GGUFReader: it makes a numpy array per vocabulary entry. For SmolLM2's 49k tokens that
is 160 MB of the runner's memory (kept by the allocator after the stage) and seconds for a 128k vocabulary,
where `plan` and `package` need a handful of values and the tensor list. Arrays are skipped here and
kept as their element type and count."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

# GGUFValueType -> struct format; 8 (string) and 9 (array) are read by hand
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


class GGUFArray(NamedTuple):
    element_type: int
    count: int


class GGUFTensor(NamedTuple):
    name: str
    type_name: str  # ggml's type: Q4_K, F16, ...
    n_elements: int
    n_bytes: int
    offset: int  # from the start of the data section


@dataclass(frozen=True)
class GGUFHeader:
    fields: dict[str, Any]  # numbers and strings as values, arrays as GGUFArray
    tensors: list[GGUFTensor]
    data_start: int

    @property
    def data_end(self) -> int:
        """Where the last tensor's data ends: a file shorter than this was cut short."""
        return self.data_start + max((t.offset + t.n_bytes for t in self.tensors), default=0)


def read(path: Path) -> GGUFHeader:
    """Raises ValueError, KeyError, IndexError or struct.error on a file that is not a readable GGUF."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ValueError("no GGUF magic number")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
        if version < 2 or n_tensors > 10**7 or n_kv > 10**7:
            raise ValueError(f"implausible header (version {version}, {n_tensors} tensors, {n_kv} keys)")
        walk = _Walk(m, 24)
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = walk.string()
            fields[key] = walk.value(walk.unpack("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = walk.string()
            dims = [walk.unpack("<Q") for _ in range(walk.unpack("<I"))]
            qtype = GGMLQuantizationType(walk.unpack("<I"))
            offset = walk.unpack("<Q")
            block, size = GGML_QUANT_SIZES[qtype]
            count = 1
            for d in dims:
                count *= d
            tensors.append(GGUFTensor(name, qtype.name, count, count // block * size, offset))
        alignment = fields.get("general.alignment")
        alignment = alignment if isinstance(alignment, int) and alignment > 0 else 32
        return GGUFHeader(fields, tensors, -(-walk.pos // alignment) * alignment)


class _Walk:
    def __init__(self, m: mmap.mmap, pos: int) -> None:
        self.m, self.pos = m, pos

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.m, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.m):
            raise ValueError("a string runs past the end of the file")
        self.pos += n
        return self.m[self.pos - n : self.pos].decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in SCALARS:
                self.pos += count * struct.calcsize("<" + SCALARS[etype])
            else:
                for _ in range(count):  # strings (a vocabulary) or nested arrays: stepped over one by one
                    self.skip(etype)
            return GGUFArray(etype, count)
        if vtype not in SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype}")
        return self.unpack("<" + SCALARS[vtype])

    def skip(self, vtype: int) -> None:
        if vtype == STRING:
            self.pos += 8 + struct.unpack_from("<Q", self.m, self.pos)[0]
            if self.pos > len(self.m):
                raise ValueError("a string runs past the end of the file")
        else:
            self.value(vtype)
