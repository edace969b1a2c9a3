"""The two kinds of failure the CLI tells apart: bad input (exit 2) and a stage that failed (exit 1),
and where in a recipe (or catalogue) file a bad field is."""

from __future__ import annotations

from pathlib import Path

import yaml


class RecipeError(Exception):
    """Bad input: a malformed or infeasible recipe. Shown as one line, exit code 2, nothing written."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | tuple = ()):
        self.file, self.line, self.message = file, line, message
        self.loc = tuple(field.split(".")) if isinstance(field, str) else tuple(field)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{dotted(self.loc)}: " if self.loc else ""
        return f"{where}{field}{self.message}"


def dotted(loc: tuple) -> str:
    """('formats', 0, 'group_size') -> 'formats[0].group_size'"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class StageError(Exception):
    """A stage failed for a reason we can state in one line (the log file has the details)."""


def one_line(e: BaseException) -> str:
    """A failure as the one line the user sees; the stage log has the traceback."""
    text = " ".join(str(e).split())
    text = text if len(text) <= 400 else text[:400] + "..."
    return text if isinstance(e, (StageError, RecipeError)) else f"{type(e).__name__}: {text}"


def line_of(path: str | Path, loc: tuple) -> int | None:
    """Line in the recipe file of the field at `loc` (for errors found after parsing, e.g. by plan)."""
    try:
        node = yaml.compose(Path(path).read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None
    return node_line(node, loc, want_key=False) if node is not None and loc else None


def node_line(node: yaml.Node, loc: tuple, want_key: bool) -> int | None:
    """Line of the YAML node at `loc`; for an unknown key, the key's own line."""
    line = node.start_mark.line + 1
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == part), None)
            if hit is None:
                continue  # a pydantic-only step (a union tag): stay on this node
            if want_key and i == len(loc) - 1:
                return hit[0].start_mark.line + 1
            node = hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line
