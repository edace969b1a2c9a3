"""GGUF through llama.cpp: options checked before work, and a tiny model converted, importance-matrixed,
quantized to Q8_0 and Q4_K_M, loaded by llama.cpp (llama-cpp-python) and generating."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.backends.gguf import GgufOptions
from pipeline.recipe import Recipe
from pipeline.tools import cpus
from tests.conftest import cli, llama_cpp_or_skip, tiny_recipe, write_recipe

FILE_TYPES = {"Q8_0": 7, "Q4_K_M": 15, "Q2_K": 10}  # llama_ftype values llama.cpp writes to general.file_type


def _formats(entries: list[dict]) -> list:
    return Recipe.model_validate({"name": "t", "model": {"path": "/x"}, "formats": entries}).formats


def test_options_defaults_and_names():
    q4, q8 = _formats([{"format": "gguf", "type": "Q4_K_M"}, {"format": "gguf", "type": "Q8_0", "imatrix": False}])
    assert isinstance(q4, GgufOptions) and q4.imatrix == "auto" and q4.convert_dtype == "f16"
    assert (q4.artifact, q8.artifact) == ("gguf-q4_k_m", "gguf-q8_0")
    assert q8.imatrix == "off"  # YAML's bare `off` arrives as False


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"format": "gguf", "type": "Q4_K_X"}, "formats[0].type"),
        ({"format": "gguf", "type": "Q4_K_M", "split_max_size": "2 GB"}, "formats[0].split_max_size"),
    ],
)
def test_bad_options_name_the_field(tmp_path, tiny_model, entry, message):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, [entry]))
    proc = cli("plan", str(recipe))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_iq2_without_imatrix_rejected_in_plan(tmp_path, tiny_smol_model):
    llama_cpp_or_skip()
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_smol_model, [{"format": "gguf", "type": "IQ2_XS", "imatrix": "off"}])
    )
    proc = cli("plan", str(recipe))
    assert (
        proc.returncode == 2
        and "formats[0].imatrix: llama.cpp refuses IQ2_XS without an importance matrix" in proc.stderr
    )


def test_unconvertible_architecture_rejected_in_plan(tmp_path, tiny_smol_model):
    llama_cpp_or_skip()
    import shutil

    model = tmp_path / "odd"
    shutil.copytree(tiny_smol_model, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["TotallyNewForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model, [{"format": "gguf", "type": "Q8_0"}]))
    proc = cli("plan", str(recipe))
    assert proc.returncode == 2 and "cannot convert TotallyNewForCausalLM" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory, tiny_smol_model) -> Path:
    llama_cpp_or_skip()
    tmp = tmp_path_factory.mktemp("gguf")
    formats = [
        {"format": "gguf", "type": "Q8_0", "imatrix": "off"},
        {"format": "gguf", "type": "Q4_K_M"},
        {"format": "gguf", "type": "Q2_K", "split_max_size": "1M"},
        {"format": "gguf", "type": "auto", "target_bpw": 6},
    ]
    recipe = write_recipe(
        tmp / "r.yaml", tiny_recipe(tiny_smol_model, formats, calibration={"samples": 4, "seq_len": 64})
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "runs" / "tiny"


def test_one_conversion_and_one_imatrix_shared(gguf_run):
    stages = {s["id"]: s for s in json.loads((gguf_run / "manifest.json").read_text())["stages"]}
    assert [k for k in stages if k.startswith(("gguf-convert", "imatrix"))] == ["gguf-convert[f16]", "imatrix[f16]"]
    assert stages["imatrix[f16]"]["info"]["chunks"] == 4
    assert stages["quantize[gguf-q4_k_m]"]["info"]["imatrix"] == "imatrix.gguf"
    assert stages["quantize[gguf-q2_k]"]["info"]["imatrix"] == "imatrix.gguf"
    assert stages["quantize[gguf-q8_0]"]["info"]["imatrix"] is None


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M"])
def test_gguf_metadata_and_generation(gguf_run, tiny_smol_model, qtype):
    from llama_cpp import Llama

    art = gguf_run / "artifacts" / f"gguf-{qtype.lower()}"
    [path] = art.glob("*.gguf")
    assert path.name.endswith(f"-{qtype}.gguf")
    info = json.loads((art / "stage_info.json").read_text())
    assert info["file_type"] == FILE_TYPES[qtype] and info["has_chat_template"] and info["tokenizer_model"] == "gpt2"
    llm = Llama(model_path=str(path), n_ctx=256, n_threads=cpus.count(), verbose=False)
    template = (
        json.loads((tiny_smol_model / "tokenizer_config.json").read_text()).get("chat_template")
        or (tiny_smol_model / "chat_template.jinja").read_text()
    )
    assert llm.metadata["tokenizer.chat_template"] == template
    assert int(llm.metadata["general.file_type"]) == FILE_TYPES[qtype]
    assert llm.metadata["general.name"] == tiny_smol_model.name  # from the source, not the stage directory
    reply = llm.create_chat_completion([{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0, seed=0)
    assert reply["usage"]["completion_tokens"] > 0  # random weights: the text is noise, but llama.cpp ran the model


def test_gguf_files_record_no_local_path(gguf_run):
    """llama-imatrix records its text file and llama-quantize the matrix file in the GGUF: bare names,
    so an artifact is the same bytes in any workdir and a published one reveals no directory layout."""
    from gguf import GGUFReader

    [path] = (gguf_run / "artifacts" / "gguf-q4_k_m").glob("*.gguf")
    fields = GGUFReader(path).fields
    strings = {}
    for name, field in fields.items():
        if field.types and field.types[0].name == "STRING":
            strings[name] = bytes(field.parts[field.data[0]]).decode(errors="replace")
    assert strings["quantize.imatrix.file"] == "imatrix.gguf"
    assert strings["quantize.imatrix.dataset"] == "calibration.txt"
    assert not [k for k, v in strings.items() if str(gguf_run.parent) in v or v.startswith("/")]


def test_two_given_matrices_with_one_file_name_are_two_stages(gguf_run, tmp_path, tiny_smol_model):
    from pipeline import api

    matrix = (gguf_run / "artifacts" / "gguf-q4_k_m").resolve()
    made = next(p for p in gguf_run.iterdir() if p.name.startswith("imatrix-f16-")) / "imatrix.gguf"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "imatrix.gguf").write_bytes(made.read_bytes())
    (tmp_path / "b" / "imatrix.gguf").write_bytes(made.read_bytes() + b"\0")  # another matrix, same name
    formats = [
        {"format": "gguf", "type": "Q4_K_M", "name": "qa", "imatrix": str(tmp_path / "a" / "imatrix.gguf")},
        {"format": "gguf", "type": "Q4_K_M", "name": "qb", "imatrix": str(tmp_path / "b" / "imatrix.gguf")},
    ]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_smol_model, formats))
    plan = api.plan(recipe, workdir=tmp_path / "runs")
    matrices = [s for s in plan.stages if s.kind == "imatrix"]
    assert len(matrices) == 2 and len({s.path for s in matrices}) == 2 and matrix.exists()
    qa, qb = plan.stage("quantize[qa]"), plan.stage("quantize[qb]")
    assert set(qa.deps) & {m.id for m in matrices} != set(qb.deps) & {m.id for m in matrices}


def test_packages_get_the_servers_that_load_them(gguf_run):
    from tests.helpers import check_serving

    whole, split = gguf_run / "packages" / "gguf-q4_k_m", gguf_run / "packages" / "gguf-q2_k"
    # vLLM 0.32/0.33 core loads no GGUF (vllm-gguf-plugin): no vLLM config
    assert sorted(check_serving(whole / "serving")) == [
        "Modelfile",
        "k8s-llama-cpp.yaml",
        "llama-cpp-python.sh",
        "llama-server.sh",
    ]
    assert sorted(check_serving(split / "serving")) == [
        "k8s-llama-cpp.yaml",
        "llama-cpp-python.sh",
        "llama-server.sh",
    ]  # no split GGUF in Ollama
    assert (
        "--model model-Q2_K-00001-of-" in (split / "serving" / "llama-server.sh").read_text()
    )  # llama.cpp finds the other shards
    files = json.loads((split / "manifest.json").read_text())["files"]
    assert len([f for f in files if f.endswith(".gguf")]) == len(
        list((gguf_run / "artifacts" / "gguf-q2_k").glob("*.gguf"))
    )


def test_auto_writes_the_chosen_type_of_every_tensor(gguf_run):
    """type: auto: one shared sensitivity stage; llama-quantize wrote exactly the chosen type per tensor, within
    the budget; the file loads and generates in llama.cpp. (Random weights: what the choice is worth is measured on
    the real model, tests/test_demo_recipe.py.)"""
    from gguf import GGUFReader
    from llama_cpp import Llama

    stages = {s["id"]: s for s in json.loads((gguf_run / "manifest.json").read_text())["stages"]}
    assert [k for k in stages if "sensitivity" in k] == ["gguf-sensitivity[f16]"]
    sens = json.loads((gguf_run / stages["gguf-sensitivity[f16]"]["path"] / "sensitivity.json").read_text())
    for name, t in sens["tensors"].items():  # more bits, less weighted error, for every tensor
        errors = [t["types"][q]["error"] for q in ("q4_0", "q5_0", "q8_0") if q in t["types"]]
        assert len(errors) == 3 and errors[0] > errors[1] > errors[2] >= 0, (name, errors)
    art = gguf_run / "artifacts" / "gguf-auto-6bpw"
    choice = json.loads((art / "gguf-types.json").read_text())
    assert choice["bpw"] <= 6 and choice["weights_bytes"] <= choice["budget_bytes"]
    written = {t.name: t.tensor_type.name.lower() for t in GGUFReader(art / "model-AUTO.gguf").tensors}
    assert {n: written[n] for n in choice["types"]} == {n: t.lower() for n, t in choice["types"].items()}
    assert stages["quantize[gguf-auto-6bpw]"]["info"]["auto"]["expected_kld"] == choice["expected_kld"]
    llm = Llama(model_path=str(art / "model-AUTO.gguf"), n_ctx=128, n_threads=cpus.count(), verbose=False)
    assert llm("Hello", max_tokens=4, temperature=0)["usage"]["completion_tokens"] > 0


def test_split_output_shards_load(gguf_run):
    from llama_cpp import Llama

    art = gguf_run / "artifacts" / "gguf-q2_k"
    shards = sorted(art.glob("*.gguf"))
    assert len(shards) >= 2 and shards[0].name.endswith(f"-00001-of-{len(shards):05d}.gguf")
    # llama.cpp finds the other shards
    llm = Llama(model_path=str(shards[0]), n_ctx=128, n_threads=cpus.count(), verbose=False)
    assert int(llm.metadata["general.file_type"]) == FILE_TYPES["Q2_K"]
    assert llm("Hello", max_tokens=4, temperature=0)["usage"]["completion_tokens"] > 0


def test_rerun_is_cached(gguf_run):
    recipe = gguf_run.parent.parent / "r.yaml"
    proc = cli("-q", "run", str(recipe), "-w", str(gguf_run.parent))
    assert proc.returncode == 0
    manifest = json.loads((gguf_run / "manifest.json").read_text())
    assert {s["status"] for s in manifest["stages"]} == {"cached"}
    assert yaml.safe_load(manifest["recipe_text"])["formats"][1]["type"] == "Q4_K_M"
