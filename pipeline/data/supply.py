"""Plan-time look at a local or package data source: does the named field exist, and can it give the
samples asked for? Found here, such problems cost a second instead of a source conversion.

Per file and field, the UTF-8 size of each usable record is remembered (pipeline.fingerprint), so a
125 MB ShareGPT file is read once per machine. Token counts need the model's tokenizer, which plan
does not load: a byte-level tokenizer makes at most one token per byte (plus a BOS/EOS per record),
so a source whose usable bytes cannot fill samples x seq_len is refused now; the exact count is
checked again when the calibration set is built."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pipeline.data.render import to_messages
from pipeline.data.sources import read_json_records
from pipeline.errors import RecipeError
from pipeline.fingerprint import remembered

SPECIALS_PER_RECORD = 2


def record_sizes(path: Path, field: str, chat: bool) -> dict[str, Any]:
    """{"sizes": UTF-8 bytes of each record's field (0 when unusable), "fields": field names seen}."""
    return remembered(path, f"record-sizes:{field}:{chat}", lambda p: _sizes(p, field, chat))


def _sizes(path: Path, field: str, chat: bool) -> dict[str, Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=None)
        names = table.column_names
        values = table.column(field).to_pylist() if field in names else [None] * table.num_rows
        return {"sizes": [_size(v, chat) for v in values], "fields": names}
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return {
            "sizes": [_size(line, chat) for line in lines] if field == "text" else [0] * len(lines),
            "fields": ["text"],
        }
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows = list(csv.DictReader(f))
    else:
        rows, _ = read_json_records(path)
    fields = sorted({k for r in rows[:1000] if isinstance(r, dict) for k in r})
    return {"sizes": [_size(r.get(field) if isinstance(r, dict) else None, chat) for r in rows], "fields": fields}


def _size(value: Any, chat: bool) -> int:
    if chat:
        messages = to_messages(value)
        return sum(len(m["content"].encode()) for m in messages) if messages else 0
    return len(value.encode()) if isinstance(value, str) and value.strip() else 0


def check_supply(
    files: list[Path],
    field: str,
    which: str,
    chat: bool,
    records: str | None,
    samples: int,
    seq_len: int,
    packing: bool,
    where: tuple,
) -> int:
    """Raise when the source cannot give `samples`; return how many it can give at most (by its size)."""
    sizes: list[int] = []
    fields: set[str] = set()
    for f in files:
        try:
            found = record_sizes(f, field, chat)
        except (OSError, ValueError, KeyError) as e:
            raise RecipeError(
                f"cannot read {f.name}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}",
                field=(*where, "files"),
            ) from None
        sizes += found["sizes"]
        fields |= set(found["fields"])
    if field not in fields:
        raise RecipeError(
            f"{which} {field!r} is not in the data; fields: {', '.join(sorted(fields)) or 'none'}",
            field=(*where, which),
        )
    if records:
        start, stop = (int(x) if x else None for x in records.split(":"))
        sizes = sizes[start:stop]
    usable = [s for s in sizes if s]
    if packing:
        most = sum(usable) + SPECIALS_PER_RECORD * len(usable)
        if most < samples * seq_len:
            raise RecipeError(
                f"the source holds at most {most:,} tokens ({len(usable)} usable records), fewer than "
                "samples x seq_len = "
                f"{samples * seq_len:,}; lower samples or seq_len, or use a larger source",
                field=(where[0], "samples"),
            )
        return most // seq_len
    if len(usable) < samples:
        raise RecipeError(
            f"the source has {len(usable)} usable records, fewer than samples: {samples}; lower "
            "samples or use a larger source",
            field=(where[0], "samples"),
        )
    return len(usable)
