"""A stage is data: its job (kind, config, input keys, key) runs in another process without the recipe
or the plan, and the mid-run guard re-hashes only the files that stage reads itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.graph.plan import build_plan
from pipeline.recipe_loader import load_recipe
from pipeline.run import single
from tests.conftest import ROOT, cli, tiny_recipe, write_recipe

RUN_JOBS = (
    "import json, sys; from pipeline.run.single import run_job; "
    "print(json.dumps([run_job(j) for j in json.load(sys.stdin)]))"
)


def _plan(tmp_path, recipe: dict):
    path = write_recipe(tmp_path / "r.yaml", recipe)
    return build_plan(load_recipe(path), path, tmp_path / "runs")


def test_jobs_run_in_a_fresh_process_without_the_recipe_and_a_cli_run_reuses_them(tiny_model, tmp_path):
    plan = _plan(tmp_path, tiny_recipe(tiny_model, [{"format": "w8a16"}]))
    jobs = [plan.job(plan.stage(s)) for s in ("source", "quantize[w8a16]", "package[w8a16]")]
    sent = json.dumps(jobs)  # the jobs as they travel to another process or machine
    (tmp_path / "r.yaml").unlink()  # nothing but the jobs and the workdir remain
    proc = subprocess.run(
        [sys.executable, "-c", RUN_JOBS],
        input=sent,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["status"] for r in records] == ["done", "done", "done"], records
    assert (tmp_path / "runs" / "tiny" / "packages" / "w8a16" / "README.md").exists()  # its link, made by the job
    # The same plan again, from the recipe: every stage the jobs built counts as finished.
    write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}]))
    run = cli("-q", "run", str(tmp_path / "r.yaml"), "-w", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr
    statuses = {s["id"]: s["status"] for s in json.loads((tmp_path / "runs/tiny/manifest.json").read_text())["stages"]}
    assert set(statuses.values()) == {"cached"}, statuses


def test_the_guard_rehashes_only_what_the_stage_reads(tiny_model, tmp_path):
    model, data = tmp_path / "model", tmp_path / "calib.jsonl"
    shutil.copytree(tiny_model, model)
    data.write_text("\n".join(json.dumps({"text": f"calibration text number {i} " * 30}) for i in range(8)))
    calibration = {"source": {"kind": "local", "files": [str(data)], "text_field": "text"}, "samples": 2, "seq_len": 32}
    plan = _plan(
        tmp_path,
        tiny_recipe(model, [{"format": "w8a16"}, {"format": "gptq", "group_size": 32}], calibration=calibration),
    )
    job = {s: plan.job(plan.stage(s)) for s in ("source", "calibration", "quantize[w8a16]")}
    assert single.run_job(job["source"])["status"] == "done"
    # After the plan: the user's checkpoint and the calibration data both change.
    with open(data, "a") as f:
        f.write(json.dumps({"text": "a new record " * 30}) + "\n")
    with open(model / "generation_config.json", "a") as f:
        f.write(" ")
    # quantize[w8a16] reads the source stage's output, not the user's files: it is not held up by them.
    assert single.run_job(job["quantize[w8a16]"])["status"] == "done"
    # The stages that read them are.
    for stage in ("calibration", "source"):
        record = single.run_job(job[stage], force=True)
        assert record["status"] == "failed" and "inputs changed since the run was planned" in record["error"], record
    assert not plan.cached(plan.stage("calibration"))


def test_a_job_edited_after_planning_is_refused(tiny_model, tmp_path):
    plan = _plan(tmp_path, tiny_recipe(tiny_model, [{"format": "w8a16"}, {"format": "fp8"}]))
    job = plan.job(plan.stage("quantize[w8a16]"))
    job["config"]["options"]["format"] = "fp8"  # the key no longer describes the config
    from pipeline import stages
    from pipeline.errors import StageError

    with pytest.raises(StageError, match="the job's key is not its config's"):
        stages.check_job(job)
