"""Read a recipe file into a `Recipe`, turning every problem into one `RecipeError` line.

Errors name the field path and the YAML line it came from; an unknown key gets a "did you mean".
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.backends import FORMATS
from pipeline.errors import RecipeError, node_line
from pipeline.recipe import Recipe

MAX_BYTES = 1_000_000  # a recipe is a page of YAML; anything bigger is not one
MAX_NODES = 100_000  # after alias expansion: "billion laughs" recipes are refused before they expand
MAX_DEPTH = 64


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    shown = str(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_BYTES:
            raise RecipeError(f"recipe is {path.stat().st_size:,} bytes; a recipe is at most {MAX_BYTES:,}", file=shown)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError("recipe file not found", file=shown) from None
    except UnicodeDecodeError:
        raise RecipeError("not a text file (a recipe is UTF-8 YAML)", file=shown) from None
    except OSError as e:
        raise RecipeError(f"cannot read recipe: {e.strerror or e}", file=shown) from None
    try:
        _check_depth(text, shown)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_size(node, shown)
        data = yaml.safe_load(text)
    except RecursionError:
        raise RecipeError(f"YAML nested too deeply (more than {MAX_DEPTH} levels)", file=shown) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise RecipeError(f"YAML syntax error: {e.problem or e.context}", file=shown, line=line) from None
    except yaml.YAMLError as e:
        raise RecipeError(f"YAML error: {e}", file=shown) from None
    if node is None or data is None:
        raise RecipeError("recipe is empty", file=shown)
    if not isinstance(data, dict):
        raise RecipeError(
            "a recipe is a mapping of sections (name, model, formats, ...)", file=shown, line=node.start_mark.line + 1
        )
    _reject_duplicate_keys(node, shown)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise _to_recipe_error(e, node, shown) from None
    return _resolve_paths(recipe, path.parent)


def _check_depth(text: str, file: str) -> None:
    """Deep nesting is refused from the event stream, before the (recursive) composer sees it."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise RecipeError(
                    f"YAML nested too deeply (more than {MAX_DEPTH} levels)", file=file, line=event.start_mark.line + 1
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_size(node: yaml.Node | None, file: str) -> None:
    """Refuse alias bombs and deep nesting from the node graph, without expanding anything: aliases
    are shared nodes, so the expanded size is computed once per node (linear time)."""
    if node is None:
        return
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(node, 1, False)]
    while stack:  # iterative post-order: a deep document cannot exhaust the Python stack here
        n, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise RecipeError(
                f"YAML nested too deeply (more than {MAX_DEPTH} levels)", file=file, line=n.start_mark.line + 1
            )
        children = (
            [c for pair in n.value for c in pair]
            if isinstance(n, yaml.MappingNode)
            else list(n.value)
            if isinstance(n, yaml.SequenceNode)
            else []
        )
        if id(n) in sizes:
            continue
        if done or not children:
            sizes[id(n)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(n)] > MAX_NODES:
                raise RecipeError(
                    f"YAML expands to more than {MAX_NODES:,} values (aliases of aliases?); a recipe is much smaller",
                    file=file,
                    line=n.start_mark.line + 1,
                )
            continue
        stack.append((n, depth, True))
        stack += [(c, depth + 1, False) for c in children if id(c) not in sizes]


def _resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    """Local paths in a recipe are relative to the recipe file, not to the current directory."""
    m = recipe.model
    if m.path is not None and not m.path.is_absolute():
        m.path = (base / m.path).resolve()
    if isinstance(m.gguf, Path) and not m.gguf.is_absolute():
        m.gguf = (base / m.gguf).resolve()
    ev = recipe.evaluation
    ev.task_dirs = [d if d.is_absolute() else (base / d).resolve() for d in ev.task_dirs]
    for entry in recipe.formats:
        for name, value in entry:
            if isinstance(value, Path) and not value.is_absolute():
                setattr(entry, name, (base / value).resolve())
    return recipe


def _reject_duplicate_keys(node: yaml.Node, file: str, trail: tuple = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                raise RecipeError(f"duplicate key {key!r}", file=file, line=k.start_mark.line + 1, field=trail + (key,))
            seen.add(key)
            _reject_duplicate_keys(v, file, trail + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(item, file, trail + (i,))


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of `loc` (for "did you mean" suggestions)."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if loc[0] == "formats" and part in FORMATS:
            model = FORMATS[part].options  # the union tag pydantic puts in the path
            continue
        field = model.model_fields.get(part) if model else None
        model = _inner_model(field.annotation) if field else None
    return model


def _inner_model(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


_UNION_MISS = {"path_type", "model_type", "model_attributes_type", "dict_type", "is_instance_of", "string_type"}


def _to_recipe_error(exc: ValidationError, node: yaml.Node, file: str) -> RecipeError:
    # Unknown keys first (usually typos behind the rest), union members' type mismatches last.
    errors = sorted(
        exc.errors(include_url=False),
        key=lambda e: 0 if e["type"] == "extra_forbidden" else 2 if e["type"] in _UNION_MISS else 1,
    )
    err = errors[0]
    loc = tuple(err["loc"])
    kind, msg = err["type"], err["msg"]
    is_tag = len(loc) > 2 and loc[0] == "formats" and loc[2] in FORMATS
    visible = loc[:2] + loc[3:] if is_tag else loc
    # pydantic puts union member tags (class names, 'function-after[...]') in the path: not fields.
    visible = tuple(p for p in visible if isinstance(p, int) or re.match(r"^[a-z_][a-z0-9_]*$", p))
    if kind == "extra_forbidden":
        owner = _model_at(loc)
        known = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        msg = "unknown key" + (
            f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(known)}" if known else ""
        )
    elif kind == "union_tag_invalid":
        tag = str(err.get("input", {}).get("format", "")) if isinstance(err.get("input"), dict) else ""
        close = difflib.get_close_matches(tag, list(FORMATS), n=1)
        msg = (
            f"unknown format {tag!r}"
            + (f"; did you mean {close[0]!r}?" if close else "")
            + f" (known: {', '.join(FORMATS)})"
        )
        visible = visible + ("format",)
    elif kind == "union_tag_not_found":
        msg = f"each format entry needs a 'format' key (known: {', '.join(FORMATS)})"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "string_pattern_mismatch" and visible[-1:] in (("name",), ("source",)):
        msg = f"{err['input']!r} must be a plain name (letters, digits, '.', '_', '-'): it becomes a directory name"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = f" (+{len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    line = node_line(node, visible, want_key=kind in ("extra_forbidden", "union_tag_invalid"))
    return RecipeError(msg + more, file=file, line=line, field=visible or ("recipe",))
