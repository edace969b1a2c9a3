"""The package's import graph: layers point one way, no cycles, no function-level import that dodges one.

The layers, top to bottom (pipeline/README.md draws them); a module may import its own layer's
siblings and anything below, never above, except the arrows listed in ALLOWED_UP with their reason.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
LAYERS = [
    ("pipeline.__main__", "pipeline.cli", "pipeline.api", "pipeline.starter", "pipeline.integrations"),
    ("pipeline.run", "pipeline.cost"),
    ("pipeline.graph", "pipeline.recipe_loader"),
    ("pipeline.stages",),
    ("pipeline.backends", "pipeline.engines", "pipeline.serving", "pipeline.evaluation", "pipeline.report"),
    ("pipeline.data", "pipeline.tools", "pipeline.checkpoints", "pipeline.devtools"),
    (
        "pipeline.recipe",
        "pipeline.errors",
        "pipeline.fingerprint",
        "pipeline.files",
        "pipeline.stage_id",
        "pipeline.console",
        "pipeline.versions",
        "pipeline",
    ),
]
# (importer, imported): why it must point up. At most two.
ALLOWED_UP: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> pipeline modules imported at module level, module -> those imported inside functions).
    `if TYPE_CHECKING:` blocks are not imports at run time and are skipped."""
    mods = modules()
    top: dict[str, set[str]] = defaultdict(set)
    inner: dict[str, set[str]] = defaultdict(set)

    def visit(name: str, node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                targets = [f"{child.module}.{a.name}" for a in child.names]
            for t in targets:
                found = _resolve(t, mods) if t.startswith("pipeline") else None
                if found and found != name:
                    (inner if in_function else top)[name].add(found)
            visit(name, child, nested)

    for name, path in mods.items():
        visit(name, ast.parse(path.read_text()), False)
    return top, inner


def layer(module: str) -> int:
    best = max(
        ((len(p), i) for i, group in enumerate(LAYERS) for p in group if module == p or module.startswith(p + ".")),
        default=None,
    )
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and pipeline/README.md)"
    return best[1]


def package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return False


def test_every_module_has_a_layer_and_no_arrow_points_up_unexplained():
    top, inner = imports()
    up = sorted((a, b) for edges in (top, inner) for a, bs in edges.items() for b in bs if layer(b) < layer(a))
    assert [e for e in up if e not in ALLOWED_UP] == []
    assert len(ALLOWED_UP) <= 2


def test_no_import_cycle_between_packages():
    top, inner = imports()
    graph: dict[str, set[str]] = defaultdict(set)
    for edges in (top, inner):
        for a, bs in edges.items():
            graph[package(a)] |= {package(b) for b in bs if package(b) != package(a)}
    cycles = [(a, b) for a in list(graph) for b in graph[a] if _reaches(graph, b, a)]
    assert cycles == []


def test_no_function_level_import_dodges_a_cycle():
    """An import inside a function is fine for a heavy or optional library; one whose module-level form
    would close a cycle of pipeline modules is a cycle dodged, and the structure should change instead."""
    top, inner = imports()
    dodges = [(a, b) for a, bs in inner.items() for b in bs if _reaches(top, b, a)]
    assert dodges == []


def test_the_layer_check_sees_a_real_upward_import(tmp_path):
    """The checks above can fail: the graph does see the runner importing the recipe schema."""
    top, _ = imports()
    assert "pipeline.recipe" in {b for a, bs in top.items() if a.startswith("pipeline.graph") for b in bs}
    assert (
        layer("pipeline.run.runner")
        < layer("pipeline.graph.plan")
        < layer("pipeline.stages.source")
        < layer("pipeline.recipe")
    )


def test_the_recipe_schema_imports_nothing_heavier_than_pydantic():
    code = (
        "import sys, pipeline.recipe; "
        "print(sorted(m for m in sys.modules if m.startswith('pipeline') or m.split('.')[0] in "
        "('yaml', 'numpy', 'torch', 'transformers', 'rich', 'huggingface_hub')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['pipeline', 'pipeline.recipe', 'pipeline.stage_id']"  # stage kinds: an enum
