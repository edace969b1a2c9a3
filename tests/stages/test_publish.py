"""Publishing GGUF types the way their users pull them: one `{model}-GGUF` repo, a file per type, one card
with every type's figures and the `llama-server -hf` / `ollama run hf.co/` lines; other formats a repo each."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from conftest import cli, llama_cpp_or_skip, tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory, tiny_smol_model):
    llama_cpp_or_skip()
    tmp = tmp_path_factory.mktemp("gguf-repo")
    formats = [
        {"format": "gguf", "type": "Q8_0", "imatrix": "off"},
        {"format": "gguf", "type": "Q4_0", "imatrix": "off"},
    ]
    recipe = write_recipe(
        tmp / "r.yaml",
        tiny_recipe(
            tiny_smol_model,
            [*formats, {"format": "w8a16"}],
            package={"base_model": "org/Tiny-Base"},
            publish={"enabled": False, "org": "test-org"},
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | {"HF_HOME": str(tmp / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "publish", str(recipe), "-w", str(tmp / "runs"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "runs" / "tiny", proc.stdout


def test_dry_run_lists_one_gguf_repo_with_a_file_per_type(gguf_run):
    _, printed = gguf_run
    assert "test-org/Tiny-Base-GGUF (private): 2 files" in printed, printed
    assert "Tiny-Base-Q8_0.gguf" in printed and "Tiny-Base-Q4_0.gguf" in printed
    assert "test-org/Tiny-Base-w8a16 (private)" in printed
    assert "test-org/Tiny-Base-gguf-q8_0" not in printed  # no repo per GGUF type


def test_gguf_repo_upload_and_card(gguf_run, hub, tmp_path):
    from huggingface_hub import HfApi, ModelCard

    from pipeline.console import StageContext
    from pipeline.recipe import PublishSpec
    from pipeline.stages import publish

    run, _ = gguf_run
    packages = [run / "packages" / "gguf-q8_0", run / "packages" / "gguf-q4_0"]
    repo = "test-org/Tiny-Base-GGUF"
    folder = publish.stage_gguf_repo("Tiny-Base", repo, packages, tmp_path / "repo")
    lines: list[str] = []
    api = HfApi(endpoint=hub.url, token="hf_stand_in_token")
    ctx = StageContext("publish", report=lines.append)
    info = publish.push(PublishSpec(enabled=True, org="test-org"), repo, folder, tmp_path, ctx, api=api)
    stored = hub.repos[repo]
    assert info["commit"] == stored.sha and info["private"] is True and stored.private
    assert set(stored.files) == {
        "Tiny-Base-Q8_0.gguf",
        "Tiny-Base-Q4_0.gguf",
        "README.md",
        "manifests/gguf-q8_0.json",
        "manifests/gguf-q4_0.json",
    }
    weights = {"Tiny-Base-Q8_0.gguf": packages[0], "Tiny-Base-Q4_0.gguf": packages[1]}
    for name, package in weights.items():
        gguf = next(package.glob("*.gguf"))
        assert stored.files[name] == gguf.read_bytes()  # byte for byte, through the LFS batch API
        assert os.path.samefile(folder / name, gguf)  # staged as a link, not a copy
    assert hub.put_bytes == sum(len(stored.files[n]) for n in weights)  # weights by LFS, the rest inline
    assert lines[:2] == [f"creating {repo} (private)", f"uploading 5 files (10 MB) to {repo}"]
    card = ModelCard(stored.files["README.md"].decode())
    assert card.data.base_model == "org/Tiny-Base" and card.data.library_name == "gguf" and "gguf" in card.data.tags
    for tag in ("Q8_0", "Q4_0"):
        assert f"llama-server -hf {repo}:{tag}" in card.text and f"ollama run hf.co/{repo}:{tag}" in card.text
    assert not any(".cache" in f for f in stored.files)
    assert not list(packages[0].rglob(".cache")), "the upload's state never lands in a package"


def test_each_package_card_pulls_from_its_repo(gguf_run):
    run, _ = gguf_run
    gguf_card = (run / "packages" / "gguf-q8_0" / "README.md").read_text()
    assert "llama-server -hf test-org/Tiny-Base-GGUF:Q8_0" in gguf_card
    w8a16_card = (run / "packages" / "w8a16" / "README.md").read_text()
    assert 'AutoModelForCausalLM.from_pretrained("test-org/Tiny-Base-w8a16"' in w8a16_card
    assert "vllm serve test-org/Tiny-Base-w8a16" in w8a16_card


def test_publish_pushes_every_repo_and_resumes_after_a_failed_commit(gguf_run, tmp_path):
    """`pipeline publish` end to end through the stage workers and the real client: the first push has its
    commits refused after the weights went up; the rerun commits without sending a weight byte again."""
    from tests.hub_stand_in import HubStandIn, running

    run, _ = gguf_run
    recipe, workdir = run.parents[1] / "r.yaml", run.parent
    token = "hf_stand_in_token_4242"
    with running(HubStandIn()) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": token, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
        env["HF_HOME"] = str(tmp_path / "hf")
        hub.refuse_commits = True
        failed = cli("-q", "publish", str(recipe), "-w", str(workdir), env=env)
        assert failed.returncode == 1 and "commit refused by the stand-in" in failed.stdout + failed.stderr
        sent = hub.put_bytes
        assert sent > 0 and all(not r.files for r in hub.repos.values())
        hub.refuse_commits = False
        done = cli("-q", "publish", str(recipe), "-w", str(workdir), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert hub.put_bytes == sent  # the Hub had every weight already: nothing went up twice
        gguf, w8a16 = hub.repos["test-org/Tiny-Base-GGUF"], hub.repos["test-org/Tiny-Base-w8a16"]
    assert {"Tiny-Base-Q8_0.gguf", "Tiny-Base-Q4_0.gguf", "README.md"} <= set(gguf.files) and gguf.private
    assert w8a16.files["model.safetensors"] == (run / "packages" / "w8a16" / "model.safetensors").read_bytes()
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("gguf_repo", ["{org}/{model}-GGUF", None], ids=["one-gguf-repo", "repo-per-type"])
def test_a_mix_s_card_pulls_the_file_its_repo_holds(tiny_model, tmp_path, gguf_repo):
    """A `type: auto` mix's name holds another type's tag, so its card names the file whole: the name the
    model's GGUF repo gives it (what publish stages), or the package's own in a repo of its own."""
    from pipeline.fingerprint import ARGS
    from pipeline.graph.plan import build_plan
    from pipeline.recipe_loader import load_recipe
    from pipeline.report import card
    from pipeline.serving import Artifact
    from pipeline.stages import package

    formats = [{"format": "gguf", "type": "auto", "like": "Q4_K_M"}]
    publish_spec = {"org": "test-org", "gguf_repo": gguf_repo}
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, formats, publish=publish_spec))
    plan = build_plan(load_recipe(recipe), recipe, tmp_path / "runs", with_publish=True)
    stage = next(s for s in plan.stages if s.kind == "package")
    job = package.PackageJob.from_json(stage.config[ARGS]["job"])
    local = "model-AUTO-Q4_K_M.gguf"
    repo_file = package._repo_file(job, local)
    assert repo_file == ("tiny-AUTO-Q4_K_M.gguf" if gguf_repo else local)
    options = job.spec.serving.model_dump(mode="json")
    artifact = Artifact(job.artifact, "gguf", "", "m", 2048, 1, gguf_file=local, repo_id=job.repo_id, options=options)
    usage = card._usage(dataclasses.replace(artifact, repo_file=repo_file), [])
    assert f"--hf-repo {job.repo_id} --hf-file {repo_file}" in usage and f"{job.repo_id}:" not in usage
