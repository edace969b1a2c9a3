from __future__ import annotations

import pytest

from pipeline.files import MARKER, is_finished, stage_dir
from pipeline.fingerprint import stable_hash, tree_digest
from pipeline.run.cache import atomic_stage, clean_stale_tmp


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_atomic_stage_publishes_only_on_success(tmp_path):
    with atomic_stage(tmp_path, "quantize-x", "k" * 64, {}) as tmp:
        (tmp / "weights").write_text("w")
    final = stage_dir(tmp_path, "quantize-x", "k" * 64)
    assert is_finished(final, "k" * 64) and (final / "weights").read_text() == "w"
    assert not is_finished(final, "j" * 64)

    with pytest.raises(RuntimeError):
        with atomic_stage(tmp_path, "quantize-y", "y" * 64, {}) as tmp:
            (tmp / "half").write_text("written")
            raise RuntimeError("crash mid-stage")
    assert not stage_dir(tmp_path, "quantize-y", "y" * 64).exists()
    assert not any((tmp_path / ".tmp").iterdir())


def test_unmarked_directory_is_not_finished_and_gets_replaced(tmp_path):
    final = stage_dir(tmp_path, "source", "a" * 64)
    final.mkdir(parents=True)
    (final / "junk").write_text("left by something else")
    assert not is_finished(final, "a" * 64)
    with atomic_stage(tmp_path, "source", "a" * 64, {}) as tmp:
        (tmp / "model").write_text("m")
    assert is_finished(final, "a" * 64) and not (final / "junk").exists() and (final / MARKER).exists()


def test_clean_stale_tmp(tmp_path):
    (tmp_path / ".tmp" / "source-abc.12345").mkdir(parents=True)
    assert clean_stale_tmp(tmp_path) == ["source-abc.12345"]
    assert not (tmp_path / ".tmp").exists()


def test_tree_hash_follows_content(tmp_path):
    (tmp_path / "a.json").write_text("1")
    h1 = tree_digest(tmp_path)
    (tmp_path / "a.json").write_text("2")
    assert tree_digest(tmp_path) != h1
