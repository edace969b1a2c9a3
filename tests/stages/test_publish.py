"""Publishing GGUF types the way their users pull them: one `{model}-GGUF` repo, a file per type, one card
with every type's figures and the `llama-server -hf` / `ollama run hf.co/` lines; other formats a repo each."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import llama_cpp_or_skip, tiny_recipe, write_recipe

from tests.stages.test_package import FakeHub


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


def test_gguf_repo_upload_and_card(gguf_run, tmp_path):
    from huggingface_hub import ModelCard

    from pipeline.recipe import PublishSpec
    from pipeline.stages import publish
    from tests.helpers import stage_ctx

    run, _ = gguf_run
    packages = [run / "packages" / "gguf-q8_0", run / "packages" / "gguf-q4_0"]
    repo = "test-org/Tiny-Base-GGUF"
    folder = publish.stage_gguf_repo("Tiny-Base", repo, packages, tmp_path / "repo")
    hub = FakeHub(private=True)
    with stage_ctx("publish") as ctx:
        info = publish.push(PublishSpec(enabled=True, org="test-org"), repo, folder, tmp_path, ctx, api=hub)
    assert info["commit"] == "c" * 40 and hub.uploads == 1
    assert set(hub.files) == {
        "Tiny-Base-Q8_0.gguf",
        "Tiny-Base-Q4_0.gguf",
        "README.md",
        "manifests/gguf-q8_0.json",
        "manifests/gguf-q4_0.json",
    }
    for name, package in (("Tiny-Base-Q8_0.gguf", packages[0]), ("Tiny-Base-Q4_0.gguf", packages[1])):
        assert os.path.samefile(hub.files[name], next(package.glob("*.gguf")))  # linked, not copied
    card = ModelCard(hub.files["README.md"].read_text())
    assert card.data.base_model == "org/Tiny-Base" and card.data.library_name == "gguf" and "gguf" in card.data.tags
    for tag in ("Q8_0", "Q4_0"):
        assert f"llama-server -hf {repo}:{tag}" in card.text and f"ollama run hf.co/{repo}:{tag}" in card.text
    assert not any(".cache" in f for f in hub.files)
    assert not list(packages[0].rglob(".cache")), "the upload's state never lands in a package"


def test_each_package_card_pulls_from_its_repo(gguf_run):
    run, _ = gguf_run
    gguf_card = (run / "packages" / "gguf-q8_0" / "README.md").read_text()
    assert "llama-server -hf test-org/Tiny-Base-GGUF:Q8_0" in gguf_card
    w8a16_card = (run / "packages" / "w8a16" / "README.md").read_text()
    assert 'AutoModelForCausalLM.from_pretrained("test-org/Tiny-Base-w8a16"' in w8a16_card
    assert "vllm serve test-org/Tiny-Base-w8a16" in w8a16_card
