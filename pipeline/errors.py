"""The two kinds of failure the CLI tells apart: bad input (exit 2) and a stage that failed (exit 1)."""


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
