"""Defaults that fit each other: a recipe of only `model` and `formats` plans and runs. Options the
recipe leaves unset are chosen to fit the model, with a note; options it writes are never changed."""

from __future__ import annotations

import json
import shutil

from conftest import cli, tiny_recipe, write_recipe

from pipeline import api


def test_unset_group_size_is_fitted_and_said(tiny_model, tmp_path):
    """The tiny model's layers are 64 and 128 wide: AWQ's default 128 does not divide 64."""
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "awq"}, {"format": "gptq"}]))
    plan = api.plan(recipe, tmp_path / "runs")
    assert [o.group_size for o in plan.recipe.formats] == [64, 64]
    assert any(n.startswith("formats[0] awq: group_size 64, the largest that divides every layer") for n in plan.notes)
    keyed = {s.id: s.config for s in plan.stages}["quantize[awq]"]
    assert '"group_size": 64' in json.dumps(keyed), "the fitted value is what the stage is keyed and run with"

    written = write_recipe(tmp_path / "w.yaml", tiny_recipe(tiny_model, [{"format": "awq", "group_size": 128}]))
    proc = cli("plan", str(written), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "formats[0].group_size: 128 does not divide" in proc.stderr


def test_a_chat_model_calibrates_on_chat_data(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "gptq", "group_size": 64}]))
    plan = api.plan(recipe, tmp_path / "runs")
    assert plan.recipe.calibration.source == "sharegpt"
    assert any("calibration.source is not set: 'sharegpt'" in n for n in plan.notes)
    explicit = tiny_recipe(tiny_model, [{"format": "gptq", "group_size": 64}], calibration={"source": "default"})
    assert (
        api.plan(write_recipe(tmp_path / "e.yaml", explicit), tmp_path / "runs").recipe.calibration.source == "default"
    )


def test_unset_samples_take_what_a_small_source_gives(tiny_model, tmp_path):
    """A model without a chat template calibrates on the small embedded set: it holds fewer than the default
    64 windows of 512 tokens, so plan says so and the set holds what the source gives."""
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(plain, [{"format": "gptq", "group_size": 64}]))
    plan = api.plan(recipe, tmp_path / "runs")
    assert plan.recipe.calibration.source == "default" and plan.recipe.calibration.samples is None
    assert any("calibration.samples is not set: source 'default' holds at most" in n for n in plan.notes), plan.notes

    proc = cli("-q", "calib", "show", str(recipe), "-w", str(tmp_path / "runs"), "-n", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads(next((tmp_path / "runs" / "tiny").glob("calibration-*/stats.json")).read_text())
    assert 8 <= stats["samples"] < 64, stats


def test_group_sizes_fit_the_experts_and_the_low_rank_attention_too():
    """Every quantized Linear's input width counts: a mixture-of-experts model's experts are narrower than
    its dense MLP, DeepSeek's MLA projections take their low ranks, and an attention output takes heads x
    head_dim (configs from transformers' own classes)."""
    from transformers import DeepseekV3Config, Qwen2MoeConfig, Qwen3Config

    from pipeline.backends import group_size_problems, layer_widths
    from pipeline.graph.fitting import fit_group_sizes
    from pipeline.recipe import Recipe

    moe = Qwen2MoeConfig(hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1440).to_dict()
    (field, message), *_ = group_size_problems(128, moe)
    assert field == "group_size" and "experts' down_proj (input width 1440)" in message
    assert "group sizes that fit every layer: 32" in message
    recipe = Recipe.model_validate({"name": "m", "model": {"path": "."}, "formats": [{"format": "awq"}]})
    fitted, notes = fit_group_sizes(recipe, moe)
    assert fitted.formats[0].group_size == 32 and "experts' down_proj (1440)" in notes[0]

    mla = layer_widths(DeepseekV3Config(q_lora_rank=1536, kv_lora_rank=512, num_attention_heads=128).to_dict())
    assert mla["q_b_proj"] == 1536 and mla["kv_b_proj"] == 512 and mla["o_proj"] == 128 * 128
    qwen3 = Qwen3Config(hidden_size=1000, intermediate_size=2048, num_attention_heads=8, head_dim=128).to_dict()
    assert layer_widths(qwen3)["o_proj"] == 1024
    (_, message), *_ = group_size_problems(128, qwen3)
    assert "q_proj" in message and "o_proj" not in message  # o_proj takes 8 x 128, not the hidden 1000


def test_only_model_and_formats_fit_every_twin_architecture():
    """What plan checks against the model's config for a recipe of only `model` and `formats`, on the
    full-size config of every shape twin (real widths): each format's default either fits or is fitted."""
    from pipeline.backends import FORMATS
    from pipeline.devtools import twins
    from pipeline.graph.fitting import fit_group_sizes
    from pipeline.recipe import Recipe

    formats = [{"format": f} for f in ("awq", "gptq", "autoround", "w8a16", "fp8", "openvino-int4")]
    formats.append({"format": "gguf", "type": "Q4_K_M"})
    for arch in twins.ARCHS:
        cfg = twins.config(arch, twins.ARCHS[arch]["num_hidden_layers"])
        recipe = Recipe.model_validate({"name": "m", "model": {"path": "."}, "formats": formats})
        fitted, _ = fit_group_sizes(recipe, cfg)
        for opts in fitted.formats:
            assert FORMATS[opts.format].backend.problems(opts, cfg) == [], (arch, opts.format)
