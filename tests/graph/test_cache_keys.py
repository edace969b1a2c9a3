"""Cache keys see every input: changing one input of one stage gives new keys to exactly that stage
and the stages built from it (the expected sets are written out here, not derived from the plan)."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.graph.plan import build_plan
from pipeline.recipe_loader import load_recipe
from tests.conftest import llama_cpp_or_skip, write_recipe

ALL_EVAL = {
    "eval-corpus",
    "reference",
    "floor[llama.cpp]",
    "evaluate[gptq]",
    "evaluate[fp8]",
    "evaluate[lcr]",
    "evaluate[gguf-q4_k_m]",
}
PACKAGES = {"package[gptq]", "package[fp8]", "package[lcr]", "package[gguf-q4_k_m]"}


@pytest.fixture
def setup(tmp_path, tiny_model):
    llama_cpp_or_skip()
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (tmp_path / "calib.jsonl").write_text(
        "\n".join(json.dumps({"text": f"calibration text number {i} " * 30}) for i in range(8))
    )
    (tmp_path / "heldout.jsonl").write_text(
        "\n".join(json.dumps({"text": f"held out words {i} " * 40}) for i in range(8))
    )
    (tmp_path / "lc.yaml").write_text(
        "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      ignore: [lm_head]\n      scheme: W8A16\n"
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(
        "task: tiny_task\ndataset_path: json\ndataset_kwargs: {data_files: {test: tiny.jsonl}}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: c\ndoc_to_target: a\n"
    )
    (tasks / "tiny.jsonl").write_text(json.dumps({"q": "Two?", "c": ["2", "3"], "a": 0}) + "\n")
    recipe = {
        "name": "keys",
        "model": {"path": "model"},
        "calibration": {
            "source": {"kind": "local", "files": ["calib.jsonl"], "text_field": "text"},
            "samples": 2,
            "seq_len": 32,
        },
        "formats": [
            {"format": "gptq", "group_size": 32},
            {"format": "fp8"},
            {"format": "llmcompressor-recipe", "recipe": "lc.yaml", "calibration": False, "name": "lcr"},
            {"format": "gguf", "type": "Q4_K_M"},
        ],
        "evaluation": {
            "enabled": True,
            "corpus": {"kind": "local", "files": ["heldout.jsonl"], "text_field": "text"},
            "windows": 2,
            "context": 32,
            "tasks": ["tiny_task"],
            "task_dirs": ["tasks"],
            "speed": {"prompt_tokens": 16},
            "vllm": False,
        },
    }
    return tmp_path, recipe


def _keys(tmp_path, recipe) -> dict[str, str]:
    path = write_recipe(tmp_path / "r.yaml", recipe)
    return {s.id: s.key for s in build_plan(load_recipe(path), path, tmp_path / "runs").stages}


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


CHANGES = [  # (what changes, how, the stages that must get new keys)
    ("the source checkpoint", lambda t, r: _append(t / "model" / "generation_config.json", " "), "ALL"),
    (
        "calibration data",
        lambda t, r: _append(t / "calib.jsonl", "\n" + json.dumps({"text": "more " * 40})),
        {
            "calibration",
            "quantize[gptq]",
            "imatrix[f16]",
            "quantize[gguf-q4_k_m]",
            "evaluate[gptq]",
            "evaluate[gguf-q4_k_m]",
            "package[gptq]",
            "package[gguf-q4_k_m]",
        },
    ),
    (
        "calibration seed",
        lambda t, r: r["calibration"].update(seed=7),
        {
            "calibration",
            "quantize[gptq]",
            "imatrix[f16]",
            "quantize[gguf-q4_k_m]",
            "evaluate[gptq]",
            "evaluate[gguf-q4_k_m]",
            "package[gptq]",
            "package[gguf-q4_k_m]",
        },
    ),
    (
        "a format option",
        lambda t, r: r["formats"][0].update(dampening=0.05),
        {"quantize[gptq]", "evaluate[gptq]", "package[gptq]"},
    ),
    (
        "the llm-compressor recipe file",
        lambda t, r: _append(t / "lc.yaml", "# edited\n"),
        {"quantize[lcr]", "evaluate[lcr]", "package[lcr]"},
    ),
    (
        "the evaluation corpus",
        lambda t, r: _append(t / "heldout.jsonl", "\n" + json.dumps({"text": "new " * 40})),
        ALL_EVAL | PACKAGES,
    ),
    (
        "a local lm-eval task YAML",
        lambda t, r: _append(t / "tasks" / "tiny.yaml", "metadata: {version: 2}\n"),
        ALL_EVAL - {"eval-corpus"} | PACKAGES,
    ),
    (
        "a local lm-eval task's data",
        lambda t, r: _append(t / "tasks" / "tiny.jsonl", json.dumps({"q": "3?", "c": ["2", "3"], "a": 1}) + "\n"),
        ALL_EVAL - {"eval-corpus"} | PACKAGES,
    ),
    (
        "speed settings",
        lambda t, r: r["evaluation"]["speed"].update(decode_tokens=9),
        ALL_EVAL - {"eval-corpus"} | PACKAGES,
    ),
    (
        "the scoring convention",
        lambda t, r: r["evaluation"].update(score="second-half"),
        ALL_EVAL - {"eval-corpus"} | PACKAGES,
    ),
    ("packaging metadata", lambda t, r: r.setdefault("package", {}).update(quantized_by="someone"), PACKAGES),
    (
        "a quality gate",
        lambda t, r: r["evaluation"].update(gates={"max_kld": 0.5}),
        set(),
    ),  # gates judge cached metrics
]


@pytest.mark.parametrize("what,change,expected", CHANGES, ids=[c[0] for c in CHANGES])
def test_changing_one_input_rekeys_exactly_its_dependents(setup, what, change, expected):
    tmp_path, recipe = setup
    before = _keys(tmp_path, recipe)
    change(tmp_path, recipe)
    after = _keys(tmp_path, recipe)
    assert before.keys() == after.keys()
    changed = {s for s in before if before[s] != after[s]}
    assert changed == (set(before) if expected == "ALL" else expected), what


def test_a_given_importance_matrix_is_keyed_by_content(setup):
    tmp_path, recipe = setup
    (tmp_path / "m.dat").write_bytes(b"\0" * 64)
    recipe["formats"][3]["imatrix"] = "m.dat"
    before = _keys(tmp_path, recipe)
    _append(tmp_path / "m.dat", "x")
    after = _keys(tmp_path, recipe)
    # The matrix stage is named by its content (two files with one name are two stages) ...
    [old] = [s for s in before if s.startswith("imatrix[m.dat#")]
    [new] = [s for s in after if s.startswith("imatrix[m.dat#")]
    assert old != new
    # ... and exactly the stages built from it get new keys.
    shared = set(before) & set(after)
    assert {s for s in shared if before[s] != after[s]} == {
        "quantize[gguf-q4_k_m]",
        "evaluate[gguf-q4_k_m]",
        "package[gguf-q4_k_m]",
    }
