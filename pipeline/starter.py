"""`pipeline init MODEL`: a first recipe for a model that plans as written.

MODEL is a local HF checkpoint directory, a .gguf file or a Hub repo id. A Hub revision is pinned to
the commit `main` points at (asked of the Hub; offline, read from the HF cache's refs). The recipe is
planned before it is written: the options that must fit the model (group sizes; calibration samples a
small source cannot give) are written out as plan chose them, so the file says what will run. Nothing
is written when the plan refuses it."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import RecipeError

DEFAULT_FORMATS = "awq,gguf:Q4_K_M"


def parse_formats(spec: str) -> list[dict[str, Any]]:
    """`awq,gguf:Q4_K_M,w8a16` -> recipe format entries (a `:` names the GGUF type)."""
    from pipeline.backends import FORMATS

    out: list[dict[str, Any]] = []
    for item in (s.strip() for s in spec.split(",")):
        name, _, typ = item.partition(":")
        if name not in FORMATS:
            raise RecipeError(f"unknown format {name!r}; known: {', '.join(FORMATS)}", field="formats")
        out.append({"format": name, **({"type": typ} if typ else {})})
    if not out:
        raise RecipeError("no formats given", field="formats")
    return out


def model_section(model: str, revision: str | None) -> dict[str, Any]:
    path = Path(model).expanduser()
    if path.is_dir():
        return {"path": str(path.resolve())}
    if path.suffix == ".gguf" and path.is_file():
        return {"gguf": str(path.resolve())}
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        raise RecipeError(f"{model!r} is neither a local directory, a .gguf file nor a Hub repo id", field="model")
    return {"hub": model, "revision": revision or hub_commit(model)}


def hub_commit(repo: str) -> str:
    """The commit `main` points at: from the Hub, else (offline) from the HF cache's refs/main."""
    from huggingface_hub import HfApi, constants

    try:
        sha = HfApi().model_info(repo).sha
        if sha:
            return sha
    except Exception:  # offline, gated, unknown: try the cache, then say so
        pass
    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / "main"
    if ref.is_file():
        return ref.read_text().strip()
    raise RecipeError(
        f"cannot find the commit of {repo} (offline and not in the HF cache); pass --revision SHA", field="model"
    )


def starter(model: str, formats: str, revision: str | None, name: str | None) -> dict[str, Any]:
    source = model_section(model, revision)
    stem = (source.get("hub") or model).rstrip("/").split("/")[-1].removesuffix(".gguf")
    recipe: dict[str, Any] = {
        "name": name or re.sub(r"[^\w.-]+", "-", stem).lower(),
        "model": source,
        "formats": parse_formats(formats),
        "evaluation": {"enabled": True},
    }
    return recipe


def write(recipe: dict[str, Any], out: Path, model: str):
    """Plan the starter recipe; write it to `out` with what plan chose; return the plan."""
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / out.name
        draft.write_text(yaml.safe_dump(recipe, sort_keys=False))
        plan = build_plan(load_recipe(draft), draft, Path(tmp) / "runs")
    # what plan chose for the options that must fit the model: the file says what will run
    for entry, opts in zip(recipe["formats"], plan.recipe.formats, strict=True):
        if getattr(opts, "group_size", None) and "group_size" not in entry:
            entry["group_size"] = opts.group_size
    if any(s.kind == "calibration" for s in plan.stages) and isinstance(plan.recipe.calibration.source, str):
        calibration = {"calibration": {"source": plan.recipe.calibration.source}}
        recipe = (
            {k: recipe[k] for k in ("name", "model")} | calibration | {k: recipe[k] for k in ("formats", "evaluation")}
        )
    header = (
        f"# Written by `python -m pipeline init {_line(model)}`; plan it: python -m pipeline plan {_line(out)}\n"
        "# Every field: python -m pipeline schema. Notes from planning it:\n"
        + "".join(f"#   {_line(n)}\n" for n in plan.notes)
    )
    out.write_text(header + yaml.safe_dump(recipe, sort_keys=False))
    return plan


def _line(value: object) -> str:
    """One comment line: a path or note with a newline must not end the comment (and start YAML)."""
    return " ".join(str(value).split())
