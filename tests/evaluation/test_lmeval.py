"""Local lm-eval task dirs: a `!function` YAML does not break `plan`, and every file a task reads is in its key."""

from __future__ import annotations

import json

from pipeline.evaluation import lmeval

BASE = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
"""


def test_function_tags_includes_and_their_data_files(tmp_path):
    (tmp_path / "base.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    (tmp_path / "base.yaml").write_text(BASE.format(task="base_task", data="base.jsonl"))
    (tmp_path / "utils.py").write_text("def process(docs):\n    return docs\n")
    (tmp_path / "child.yaml").write_text("include: base.yaml\ntask: child\nprocess_docs: !function utils.process\n")
    (tmp_path / "other.yaml").write_text("task: other\nprocess_results: !function utils.process\n")

    tasks = lmeval.local_tasks([tmp_path])  # a dir of !function YAMLs is readable, requested or not
    assert {"base_task", "child", "other"} <= set(tasks)
    keyed = lmeval.fingerprint(["child"], [tmp_path])["child"]
    assert set(keyed) == {"child.yaml", "base.yaml", "base.jsonl", "utils.py"}

    before = keyed
    (tmp_path / "base.jsonl").write_text(json.dumps({"question": "q2", "answer": "b"}) + "\n")
    assert lmeval.fingerprint(["child"], [tmp_path])["child"] != before, "the included YAML's data is in the key"
    (tmp_path / "utils.py").write_text("def process(docs):\n    return docs[:1]\n")
    assert lmeval.fingerprint(["child"], [tmp_path])["child"]["utils.py"] != before["utils.py"]

    prepared = lmeval.prepare(tmp_path / "out", [tmp_path])
    text = (prepared / "child.yaml").read_text()
    assert "!function 'utils.process'" in text or "!function utils.process" in text
    assert (prepared / "utils.py").is_file()


def test_a_list_of_includes_is_keyed_and_prepared(tmp_path):
    """lm-eval takes `include:` as one file or a list: every listed file (and its data) is in the key, and the
    prepared copy names each by its absolute path."""
    (tmp_path / "a.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    (tmp_path / "a.yaml").write_text(BASE.format(task="a_task", data="a.jsonl"))
    (tmp_path / "b.yaml").write_text("output_type: generate_until\ngeneration_kwargs: {max_gen_toks: 4}\n")
    (tmp_path / "both.yaml").write_text("include: [a.yaml, b.yaml]\ntask: both\n")
    keyed = lmeval.fingerprint(["both"], [tmp_path])["both"]
    assert set(keyed) == {"both.yaml", "a.yaml", "a.jsonl", "b.yaml"}
    (tmp_path / "b.yaml").write_text("output_type: generate_until\ngeneration_kwargs: {max_gen_toks: 8}\n")
    assert lmeval.fingerprint(["both"], [tmp_path])["both"]["b.yaml"] != keyed["b.yaml"]
    prepared = lmeval.prepare(tmp_path / "out", [tmp_path])
    assert lmeval._yaml(prepared / "both.yaml")["include"] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]


def test_the_shipped_task_is_keyed_by_relative_names():
    """The shipped tasks are reached through pipeline/_data (a link in a source tree): their key names
    files relative to the task, so it is the same wherever the project or the wheel lies."""
    from pipeline.evaluation import lmeval

    found = lmeval.fingerprint(["capitals"], lmeval.task_dirs([]))["capitals"]
    assert set(found) == {"capitals.yaml", "capitals.jsonl"}, found
