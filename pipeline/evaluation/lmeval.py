"""lm-eval tasks on an artifact: `lm_eval.simple_evaluate` with its HF backend for checkpoints, and
for GGUF with a llama.cpp model (lmeval_llamacpp.py: llama-cpp-python in process, exact logits).

Local task YAMLs in eval/tasks/ run offline; their relative `data_files` are resolved against the
YAML's own directory (lm-eval would resolve them against the working directory)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import RecipeError

TASKS_DIR = Path(__file__).resolve().parents[2] / "eval" / "tasks"


def local_tasks() -> dict[str, Path]:
    out = {}
    for f in sorted(TASKS_DIR.glob("*.yaml")):
        task = (yaml.safe_load(f.read_text()) or {}).get("task")
        if task:
            out[task] = f
    return out


def prepare(out: Path) -> Path:
    """A copy of eval/tasks with data file paths made absolute: the include_path handed to lm-eval."""
    include = out / "lm-eval-tasks"
    include.mkdir(parents=True, exist_ok=True)
    for f in TASKS_DIR.glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        files = (doc.get("dataset_kwargs") or {}).get("data_files") or {}
        for split, name in list(files.items()):
            files[split] = str((f.parent / name).resolve())
        (include / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return include


def check(tasks: list[str]) -> None:
    """Unknown task names fail in plan; lm-eval's own catalogue is only indexed when a name is not local."""
    local = local_tasks()
    rest = [t for t in tasks if t not in local]
    if not rest:
        return
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise RecipeError("lm-eval tasks need lm-eval: pip install 'llm-quant-pipeline[eval]'", field=("evaluation", "tasks")) from None
    known = set(TaskManager().all_tasks)
    for t in rest:
        if t not in known:
            raise RecipeError(f"unknown lm-eval task {t!r} (local tasks: {', '.join(local) or 'none'})", field=("evaluation", "tasks", tasks.index(t)))


def evaluate(engine: str, path: Path, tasks: list[str], limit: int | None, work: Path, trust_remote_code: bool) -> dict[str, Any]:
    """{task: {metric: value}} for one artifact (or the base model)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(prepare(work)))
    kwargs = {"tasks": tasks, "task_manager": manager, "limit": limit, "batch_size": 1, "random_seed": 0, "numpy_random_seed": 0,
              "torch_random_seed": 0, "fewshot_random_seed": 0, "log_samples": False}
    try:
        if engine == "llama.cpp":
            from pipeline.evaluation.lmeval_llamacpp import LlamaCppLM

            results = simple_evaluate(model=LlamaCppLM(path), **kwargs)
        else:
            results = simple_evaluate(model="hf", model_args=hf_model_args(path, trust_remote_code), device="cpu", **kwargs)
    except Exception as e:  # noqa: BLE001 - offline Hub datasets surface as many exception types
        if _offline(e):
            raise RecipeError(f"an lm-eval task needs its dataset from the Hugging Face Hub, which is unreachable here: {str(e).splitlines()[0][:200]}; "
                              "offline, use a local task YAML in eval/tasks", field=("evaluation", "tasks")) from None
        raise
    shutil.rmtree(work / "lm-eval-tasks", ignore_errors=True)
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"} for task, metrics in results["results"].items()}


def hf_model_args(path: Path, trust_remote_code: bool) -> str:
    return f"pretrained={path},dtype=float32,trust_remote_code={trust_remote_code}"


def _offline(e: Exception) -> bool:
    text = f"{type(e).__name__} {e}".lower()
    return any(s in text for s in ("offline", "connectionerror", "connection error", "couldn't reach", "name resolution"))
