"""Package and publish stages on the tiny model: per artifact a model card whose front matter is Hub
metadata, manifest.json with the sha256 of every file, serving/ that parses; the run report; publish
dry-run lists the files; a push without a token or without network fails with exit 1 and one line,
and leaves the packages as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.fingerprint import file_sha256
from tests.conftest import cli, tiny_recipe, write_recipe
from tests.helpers import check_serving

EVAL = {
    "enabled": True,
    "vllm": False,
    "corpus": "embedded",
    "windows": 2,
    "context": 64,
    "speed": {"prompt_tokens": 32, "decode_tokens": 4, "repeats": 1, "warmup": 0},
}
PACKAGE = {"base_model": "org/tiny-base", "license": "mit", "quantized_by": "pytest", "tags": ["test"]}
PUBLISH = {"org": "test-org", "private": True}
FAKE_TOKEN = "hf_" + "pytestFakeTokenThatMustNeverBeLogged0"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, tiny_model):
    pytest.importorskip("bitsandbytes")
    tmp = tmp_path_factory.mktemp("package")
    recipe = write_recipe(
        tmp / "r.yaml",
        tiny_recipe(
            tiny_model, [{"format": "w8a16"}, {"format": "bnb-nf4"}], evaluation=EVAL, package=PACKAGE, publish=PUBLISH
        ),
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, tmp / "runs" / "tiny", proc


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


@pytest.mark.parametrize(
    "artifact, tags, library",
    [("w8a16", {"compressed-tensors", "int8"}, "transformers"), ("bnb-nf4", {"bitsandbytes", "nf4"}, "transformers")],
)
def test_card_front_matter_is_hub_metadata(packaged, artifact, tags, library):
    from huggingface_hub import ModelCard

    card = ModelCard.load(packaged[1] / "packages" / artifact / "README.md")
    data = card.data.to_dict()
    assert (
        data["base_model"] == "org/tiny-base"
        and data["base_model_relation"] == "quantized"
        and data["license"] == "mit"
    )
    assert (
        data["quantized_by"] == "pytest"
        and data["library_name"] == library
        and data["pipeline_tag"] == "text-generation"
    )
    assert tags | {"quantized", "test"} <= set(data["tags"])
    text = card.text
    assert f"| {artifact} |" in text and "| base |" in text and "KLD" in text  # the evaluation table
    assert "### Text Generation Inference (TGI)" in text and "maintenance mode" in text
    assert "format: " + artifact in text and "| transformers |" in text  # recipe excerpt and library versions
    vllm = "vllm serve --config serving/vllm.yaml" in text and "vllm serve --config serving/vllm-cpu.yaml" in text
    assert vllm == (artifact == "w8a16") and ("### vLLM" in text) == vllm  # vLLM's core loads no bitsandbytes
    assert ("## Started in vLLM" in text) == vllm


def test_manifest_hashes_every_file_and_links_the_weights(packaged):
    run = packaged[1]
    for artifact in ("w8a16", "bnb-nf4"):
        pkg = run / "packages" / artifact
        files = _manifest(pkg)["files"]
        on_disk = {str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file()} - {
            "manifest.json",
            "stage_info.json",
            ".stage.json",
        }
        assert set(files) == on_disk and {"README.md", "model.safetensors", "config.json", "serving/tgi.env"} <= on_disk
        assert ("serving/vllm-cpu.yaml" in on_disk) == (artifact == "w8a16")
        assert all(
            file_sha256(pkg / rel) == f["sha256"] and (pkg / rel).stat().st_size == f["size"]
            for rel, f in files.items()
        )
        weights = pkg / "model.safetensors"
        assert (
            weights.stat().st_ino == (run / "artifacts" / artifact / "model.safetensors").stat().st_ino
        )  # a hard link, not a copy
        assert check_serving(pkg / "serving")["tgi.env"]["MAX_TOTAL_TOKENS"] == str(
            json.loads((pkg / "config.json").read_text())["max_position_embeddings"]
        )


def test_run_report_shows_every_artifact(packaged):
    run = packaged[1]
    for f in ("report.md", "report.html"):
        (run / f).unlink()
    proc = cli("report", str(run))
    assert proc.returncode == 0, proc.stderr
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    for name in ("base", "w8a16", "bnb-nf4"):
        assert f"| {name} |" in md and f"<td>{name}</td>" in page
    assert "![quality vs size](results.png)" in md and "data:image/png;base64," in page and "packages/bnb-nf4" in md
    assert (run / "results.png").stat().st_size > 10_000


def test_publish_dry_run_lists_files_sizes_and_repo(packaged):
    recipe, run, _ = packaged
    proc = cli("publish", str(recipe), "-w", str(run.parent), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    for artifact in ("w8a16", "bnb-nf4"):
        pkg = run / "packages" / artifact
        assert f"test-org/tiny-base-{artifact} (private)" in proc.stdout
        assert f"{(pkg / 'model.safetensors').stat().st_size:,}" in proc.stdout
    assert "serving/vllm.yaml" in proc.stdout and "README.md" in proc.stdout and "stage_info.json" not in proc.stdout
    assert "nothing was uploaded" in proc.stdout


def _publish(recipe: Path, workdir: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "-q", "publish", str(recipe), "-w", str(workdir)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_push_without_token_fails_with_one_line(packaged, tmp_path):
    recipe, run, _ = packaged
    proc = _publish(recipe, run.parent, HF_HOME=str(tmp_path))  # no HF_TOKEN and no stored login
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)"
    ]


def test_push_without_network_fails_cleanly_and_keeps_everything(packaged, tmp_path):
    recipe, run, _ = packaged
    before = {a: _manifest(run / "packages" / a)["files"] for a in ("w8a16", "bnb-nf4")}
    proc = _publish(
        recipe,
        run.parent,
        HF_HOME=str(tmp_path),
        HF_TOKEN=FAKE_TOKEN,
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and all("push to test-org/tiny-base-" in e and "failed:" in e for e in errors), proc.stderr
    assert "Traceback" not in proc.stderr and FAKE_TOKEN not in proc.stdout + proc.stderr
    leaked = [
        p
        for p in run.rglob("*")
        if p.is_file() and p.stat().st_size < 5_000_000 and FAKE_TOKEN.encode() in p.read_bytes()
    ]
    assert not leaked
    for artifact, files in before.items():  # nothing local lost or changed
        pkg = run / "packages" / artifact
        assert all(file_sha256(pkg / rel) == f["sha256"] for rel, f in files.items())
    stages = {s["id"]: s["status"] for s in json.loads((run / "publish-manifest.json").read_text())["stages"]}
    assert stages["publish[w8a16]"] == "failed" and stages["package[w8a16]"] == "cached"


def test_package_copies_small_files_and_publishes_no_local_path(packaged, tiny_model):
    """Editing a package's config must not rewrite the cached artifact (only weights are hard links), and
    nothing a push would upload names a directory of this machine."""
    from pipeline.stages.publish import listing

    run = packaged[1]
    for artifact in ("w8a16", "bnb-nf4"):
        pkg, art = run / "packages" / artifact, (run / "artifacts" / artifact).resolve()
        assert (pkg / "config.json").stat().st_ino != (art / "config.json").stat().st_ino
        assert (pkg / "config.json").stat().st_nlink == 1
        for rel, _ in listing(pkg):
            if not rel.endswith((".safetensors", ".gguf")):
                text = (pkg / rel).read_text(errors="replace")
                for local in (str(tiny_model), str(run), str(Path.home())):
                    assert local not in text, f"{artifact}/{rel} names {local}"


@pytest.mark.parametrize("recipe_private, repo_private", [(True, False), (False, True)])
def test_push_refuses_a_repo_whose_visibility_differs_from_the_recipe(
    packaged, hub, tmp_path, recipe_private, repo_private
):
    from huggingface_hub import HfApi

    from pipeline.errors import StageError
    from pipeline.recipe import PublishSpec
    from pipeline.stages import publish
    from tests.helpers import stage_ctx
    from tests.hub_stand_in import Repo

    api = HfApi(endpoint=hub.url, token="hf_stand_in_token")
    hub.repos["o/r"] = Repo(private=repo_private)  # made before, by hand: create_repo answers 409 and keeps it
    spec = PublishSpec(enabled=True, org="o", private=recipe_private)
    package = packaged[1] / "packages" / "w8a16"
    with stage_ctx("publish") as ctx, pytest.raises(StageError, match="already exists and is"):
        publish.push(spec, "o/r", package, tmp_path / "1", ctx, api=api)
    assert hub.repos["o/r"].files == {} and hub.put_bytes == 0
    hub.repos["o/r"].private = recipe_private
    with stage_ctx("publish") as ctx:
        info = publish.push(spec, "o/r", package, tmp_path / "2", ctx, api=api)
    assert info["private"] is recipe_private and info["commit"] == hub.repos["o/r"].sha
    assert hub.repos["o/r"].files["model.safetensors"] == (package / "model.safetensors").read_bytes()


def test_source_facts_read_license_and_base_model(tmp_path):
    from pipeline.stages.package import source_facts

    (tmp_path / "README.md").write_text("---\nlicense: llama3.1\nlibrary_name: transformers\n---\n# Model\n")
    (tmp_path / "stage_info.json").write_text(json.dumps({"repo": "meta-llama/Llama-3.1-8B-Instruct"}))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": {"content": "<|begin_of_text|>"}, "chat_template": "{{ x }}"})
    )
    facts = source_facts(tmp_path)
    assert (facts["license"], facts["base_model"], facts["chat_template"]) == (
        "llama3.1",
        "meta-llama/Llama-3.1-8B-Instruct",
        "{{ x }}",
    )
    assert facts["special_tokens"] == {"bos_token": "<|begin_of_text|>"}
    (tmp_path / "README.md").write_text("---\n: not yaml [\n---\n")
    assert source_facts(tmp_path)["license"] is None  # a broken README names no license; packaging goes on


def test_publish_without_org_is_bad_input(tmp_path, tiny_model):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "w8a16"}]))
    proc = cli("publish", str(recipe), "-w", str(tmp_path / "runs"), "--dry-run")
    assert (
        proc.returncode == 2
        and "publish.org: publishing needs publish.org" in proc.stderr
        and not (tmp_path / "runs").exists()
    )
