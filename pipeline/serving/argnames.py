"""The option names vLLM and TGI accept, kept as data (data/*.txt) so generated serving configs and
recipe overrides are checked against the tools' own argument lists without installing either.

`python -m pipeline.serving.argnames vllm WHEEL` regenerates the vLLM list from a vllm wheel."""

from __future__ import annotations

import ast
import difflib
import sys
import zipfile
from functools import cache
from pathlib import Path

DATA = Path(__file__).parent / "data"
FILES = {"vllm": "vllm-serve-args.txt", "tgi": "tgi-launcher-args.txt"}
TOOL_NAMES = {"vllm": "vllm serve", "tgi": "text-generation-launcher"}


@cache
def names(tool: str) -> frozenset[str]:
    lines = (DATA / FILES[tool]).read_text().splitlines()
    return frozenset(s.strip() for s in lines if s.strip() and not s.startswith("#"))


def unknown(tool: str, keys: list[str]) -> list[str]:
    """One message per key that is not a long option name of `tool`, with the closest real one."""
    known = names(tool)
    out = []
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"{key!r} is not a `{TOOL_NAMES[tool]}` option{hint}")
    return out


def require(tool: str, keys: list[str]) -> None:
    """Raise ValueError naming every key the tool would reject (a generated config must never hold one)."""
    problems = unknown(tool, keys)
    if problems:
        raise ValueError("; ".join(problems))


def env_to_option(env: str) -> str:
    """TGI reads every launcher option from an environment variable of the same name: MAX_TOTAL_TOKENS."""
    return env.lower().replace("_", "-")


def vllm_options_from_wheel(wheel: Path) -> list[str]:
    """Every literal --name given to add_argument in vLLM's arg modules, plus its FrontendArgs fields."""
    sources = ("vllm/engine/arg_utils.py", "vllm/entrypoints/common/cli_args.py")
    found: set[str] = set()
    with zipfile.ZipFile(wheel) as zf:
        for name in sources:
            tree = ast.parse(zf.read(name))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                    found |= {
                        a.value[2:] for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")
                    }
                if isinstance(node, ast.ClassDef) and node.name.endswith("FrontendArgs"):
                    found |= {
                        s.target.id.replace("_", "-")
                        for s in node.body
                        if isinstance(s, ast.AnnAssign)
                        and isinstance(s.target, ast.Name)
                        and not s.target.id.startswith("_")
                    }
    return sorted(found)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "vllm":
        sys.exit("usage: python -m pipeline.serving.argnames vllm path/to/vllm-X.whl")
    print("\n".join(vllm_options_from_wheel(Path(sys.argv[2]))))
