"""lm-eval tasks on an artifact: `lm_eval.simple_evaluate` with its HF backend for checkpoints, and
for GGUF with a llama.cpp model (lmeval_llamacpp.py: llama-cpp-python in process, exact logits).

Local task YAMLs in eval/tasks/ (and the recipe's evaluation.task_dirs) run offline; their relative `data_files` are
resolved against the
YAML's own directory (lm-eval would resolve them against the working directory)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import RecipeError
from pipeline.fingerprint import file_sha256
from pipeline.resources import data_file

TASKS_DIR = data_file("eval", "tasks")


def task_dirs(extra: list[Path] | None = None) -> list[Path]:
    """eval/tasks, then the recipe's evaluation.task_dirs (a task name found in a later dir wins)."""
    return [TASKS_DIR, *(extra or [])]


def local_tasks(dirs: list[Path] | None = None) -> dict[str, Path]:
    out = {}
    for d in dirs or [TASKS_DIR]:
        for f in sorted(d.glob("*.yaml")):
            doc = _yaml(f)
            if doc.get("task"):
                out[str(doc["task"])] = f
    return out


class Function(str):
    """lm-eval's `!function module.name` (a Python function beside the YAML): kept as the tag it is."""


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML plus lm-eval's one tag: a task dir holding `!function` YAMLs is valid, requested or not."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskLoader.add_constructor("!function", lambda loader, node: Function(loader.construct_scalar(node)))
_TaskDumper.add_representer(Function, lambda dumper, v: dumper.represent_scalar("!function", str(v)))


def _yaml(f: Path) -> dict[str, Any]:
    try:
        doc = yaml.load(f.read_text(encoding="utf-8"), Loader=_TaskLoader)  # a SafeLoader with one more tag
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecipeError(
            f"{f}: not a YAML task file ({str(e).splitlines()[0][:120]})", field=("evaluation", "task_dirs")
        ) from None
    return doc if isinstance(doc, dict) else {}


def _data_files(f: Path, doc: dict[str, Any]) -> dict[str, Path]:
    files = (doc.get("dataset_kwargs") or {}).get("data_files") or {}
    if isinstance(files, str):
        files = {"test": files}
    return {split: (f.parent / name).resolve() for split, name in files.items()}


def _inputs(f: Path, seen: set[Path] | None = None) -> list[Path]:
    """Every file a task YAML reads: itself, what it includes (followed), their data files and the
    Python modules their `!function`s name."""
    seen = set() if seen is None else seen
    if f in seen or not f.is_file():
        return []
    seen.add(f)
    doc = _yaml(f)
    files = [f, *_data_files(f, doc).values(), *_function_modules(f, doc)]
    for name in _includes(doc):
        files += _inputs((f.parent / name).resolve(), seen)
    return files


def _includes(doc: dict[str, Any]) -> list[str]:
    """What a task YAML includes: lm-eval takes one file name or a list of them."""
    given = doc.get("include") or []
    return [str(given)] if isinstance(given, str) else [str(x) for x in given]


def _function_modules(f: Path, doc: Any) -> list[Path]:
    if isinstance(doc, Function):
        return [f.parent / (str(doc).rpartition(".")[0].replace(".", "/") + ".py")]
    if isinstance(doc, dict):
        return [m for v in doc.values() for m in _function_modules(f, v)]
    if isinstance(doc, list):
        return [m for v in doc for m in _function_modules(f, v)]
    return []


def fingerprint(tasks: list[str], dirs: list[Path]) -> dict[str, Any]:
    """Content of every local task the recipe names: its YAML, the YAMLs it includes, their data files
    and `!function` modules. Editing any of them re-runs the evaluations (a Hub task is keyed by its
    name and lm-eval's version)."""
    local, out = local_tasks(dirs), {}
    for t in tasks:
        if t in local:
            f = local[t]
            out[t] = {
                str(p.relative_to(f.parent) if p.is_relative_to(f.parent) else p): file_sha256(p)
                for p in _inputs(f)
                if p.is_file()
            }
    return out


def prepare(out: Path, dirs: list[Path] | None = None) -> Path:
    """A copy of the task YAMLs with data file paths made absolute: the include_path handed to lm-eval."""
    include = out / "lm-eval-tasks"
    include.mkdir(parents=True, exist_ok=True)
    for d in dirs or [TASKS_DIR]:
        for f in d.glob("*.yaml"):
            doc = _yaml(f)
            files = (doc.get("dataset_kwargs") or {}).get("data_files")
            if files:
                doc["dataset_kwargs"]["data_files"] = {split: str(p) for split, p in _data_files(f, doc).items()}
            if doc.get("include"):
                found = [str((f.parent / name).resolve()) for name in _includes(doc)]
                doc["include"] = found[0] if isinstance(doc["include"], str) else found
            (include / f.name).write_text(yaml.dump(doc, Dumper=_TaskDumper, sort_keys=False))
        for module in d.glob("*.py"):  # what `!function` names, found beside the copied YAMLs
            shutil.copyfile(module, include / module.name)
    return include


def check(tasks: list[str], dirs: list[Path] | None = None) -> None:
    """Unknown task names and missing data files fail in plan; lm-eval's own catalogue is only indexed when a name is
    not local."""
    local = local_tasks(dirs)
    for t in tasks:
        if t in local:
            f = local[t]
            missing = [p for p in _data_files(f, _yaml(f)).values() if not p.is_file()]
            if missing:
                raise RecipeError(
                    f"task {t!r} ({f.name}) names a data file that does not exist: {missing[0]}",
                    field=("evaluation", "tasks", tasks.index(t)),
                )
    rest = [t for t in tasks if t not in local]
    if not rest:
        return
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise RecipeError(
            "lm-eval tasks need lm-eval: pip install 'llm-quant-pipeline[eval]'", field=("evaluation", "tasks")
        ) from None
    known = set(TaskManager().all_tasks)
    for t in rest:
        if t not in known:
            raise RecipeError(
                f"unknown lm-eval task {t!r} (local tasks: {', '.join(local) or 'none'})",
                field=("evaluation", "tasks", tasks.index(t)),
            )


def evaluate(
    model: Any, tasks: list[str], limit: int | None, work: Path, dirs: list[Path] | None = None
) -> dict[str, Any]:
    """{task: {metric: value}} for one artifact (or the base model), given an lm-eval model over an
    engine that is already loaded (Engine.lm_eval_model)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # lm-eval's own catalogue (thousands of YAMLs, seconds to index) only when a task is not local.
    local = local_tasks(dirs)
    manager = TaskManager(include_path=str(prepare(work, dirs)), include_defaults=not all(t in local for t in tasks))
    kwargs = {
        "tasks": tasks,
        "task_manager": manager,
        "limit": limit,
        "random_seed": 0,
        "numpy_random_seed": 0,
        "torch_random_seed": 0,
        "fewshot_random_seed": 0,
        "log_samples": False,
    }
    try:
        results = simple_evaluate(model=model, **kwargs)
    except Exception as e:
        if _offline(e):
            raise RecipeError(
                "an lm-eval task needs its dataset from the Hugging Face Hub, which is unreachable "
                f"here: {str(e).splitlines()[0][:200]}; "
                "offline, use a local task YAML in eval/tasks",
                field=("evaluation", "tasks"),
            ) from None
        raise
    shutil.rmtree(work / "lm-eval-tasks", ignore_errors=True)
    return {
        task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"}
        for task, metrics in results["results"].items()
    }


def _offline(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(
        s in text for s in ("offline", "connectionerror", "connection error", "couldn't reach", "name resolution")
    )
