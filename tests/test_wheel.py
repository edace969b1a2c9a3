"""A non-editable install works: the wheel carries every data file (calibration sources, corpora,
gates, lm-eval tasks), and `plan` and `api.plan` run from it, away from the source tree."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT


def test_wheel_install_plans_the_demo(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("llm_quant_pipeline-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("calibration/datasets.yaml", "calibration/data/embedded.jsonl", "eval/gates.yaml", "eval/corpora.yaml"):
        assert f"pipeline/_data/{f}" in names, f
    assert "pipeline/_data/eval/tasks/capitals.yaml" in names

    # A fresh venv holding only the wheel; its dependencies come from this one's site-packages, added
    # as a plain path (so the editable install's .pth there, which points at the source tree, is not read).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh = venv / "bin" / "python"
    fresh_site = Path(
        subprocess.run(
            [fresh, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    recipe = shutil.copy(ROOT / "recipes" / "smollm2-demo.yaml", work / "demo.yaml")
    where = subprocess.run(
        [
            fresh,
            "-c",
            "import pipeline, pipeline.resources as r\n"
            "print(pipeline.__file__, r.DATA.is_symlink(), (r.DATA / 'eval').is_symlink())",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(fresh_site)) and where[1:] == ["False", "False"], where

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"HF_HUB_OFFLINE": "1"}
    plan = subprocess.run(
        [fresh, "-m", "pipeline", "plan", str(recipe), "-w", "runs"], cwd=work, capture_output=True, text=True, env=env
    )
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    assert "calibration" in plan.stdout and "evaluate[awq]" in plan.stdout and "eval-corpus" in plan.stdout
    api = subprocess.run(
        [
            fresh,
            "-c",
            "from pipeline import api; p = api.plan('demo.yaml', 'runs'); print(len(p.stages), p.cost is not None)",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    assert api.returncode == 0, api.stderr[-2000:]
    count, priced = api.stdout.split()
    assert int(count) > 20 and priced == "True"
