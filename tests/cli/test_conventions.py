"""CLI conventions a shell user relies on: usage errors are click's usage message with exit 2,
`--version`, flags shown without a type, `plan --json` for programs, `run --formats` for a subset."""

from __future__ import annotations

import json

import pytest
from conftest import cli, tiny_recipe, write_recipe


def test_version():
    from importlib.metadata import version

    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"llm-quant-pipeline {version('llm-quant-pipeline')}"


@pytest.mark.parametrize(
    ("args", "message", "usage"),
    [
        (["run"], "Missing argument 'RECIPE'.", True),
        (["run", "--bogus", "r.yaml"], "No such option: --bogus", True),
        (["nonsense"], "No such command 'nonsense'.", True),
        # click stops at the argument list itself here, before it has a command to show the usage of
        (["plan", "r.yaml", "--workdir"], "Option '--workdir' requires an argument.", False),
    ],
)
def test_usage_errors_exit_2_with_clicks_message(args, message, usage):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Usage: python -m pipeline") is usage, proc.stderr
    assert f"Error: {message}" in proc.stderr and "Traceback" not in proc.stderr


def test_help_shows_flags_without_a_bool_type():
    for command in ("plan", "run", "gc", "publish"):
        text = cli(command, "--help").stdout
        assert "<bool>" not in text and "--help" in text, text
    assert "--dry-run " in cli("gc", "--help").stdout


def test_plan_json_and_run_formats(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}, {"format": "w8a16"}]))
    full = json.loads(cli("plan", str(recipe), "-w", str(tmp_path / "runs"), "--json").stdout)
    ids = {s["id"]: s for s in full["stages"]}
    assert {"quantize[fp8]", "quantize[w8a16]", "package[w8a16]"} <= set(ids)
    assert all(s["estimate"]["seconds"] > 0 and not s["cached"] for s in full["stages"])
    assert full["estimate"]["peak_rss_mb"] == max(s["estimate"]["peak_rss_mb"] for s in full["stages"])

    only = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"), "--formats", "w8a16")
    assert only.returncode == 0, only.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "manifests" / "only-w8a16.json").is_file() and not (run_dir / "manifest.json").exists()
    assert not (run_dir / "report.md").exists(), "a partial run leaves the run's report alone"

    after = json.loads(cli("plan", str(recipe), "-w", str(tmp_path / "runs"), "--json").stdout)
    cached = {s["id"] for s in after["stages"] if s["cached"]}
    assert {"source", "quantize[w8a16]", "package[w8a16]"} <= cached and "quantize[fp8]" not in cached
    assert [s["key"] for s in after["stages"]] == [s["key"] for s in full["stages"]]

    bad = cli("run", str(recipe), "-w", str(tmp_path / "runs"), "--formats", "awq")
    assert bad.returncode == 2 and "'awq' is not an artifact of this recipe" in bad.stdout + bad.stderr
