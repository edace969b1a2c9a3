"""The sensitivity stage's row sample of a GGUF (backends/gguf_rows.py): every tensor and key kept, wide
tensors cut to evenly spaced whole rows (per expert for stacked experts), small ones untouched. That the
sample's quantization error estimates the whole tensor's is checked on real llama.cpp output in
tests/backends/test_moe.py."""

from __future__ import annotations

import numpy as np

from pipeline.backends import gguf_rows


def _gguf(path, tensors):
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_string("tokenizer.ggml.pre", "line\nbreak")
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_wide_tensors_are_cut_to_evenly_spaced_rows_and_everything_else_is_kept(tmp_path):
    from gguf import GGUFReader

    rng = np.random.default_rng(0)
    tensors = {
        "token_embd.weight": rng.standard_normal((4096, 2048)).astype(np.float16),  # 8.4 M: cut
        "blk.0.ffn_up_exps.weight": rng.standard_normal((16, 768, 512)).astype(np.float16),  # 6.3 M: cut per expert
        "blk.0.attn_k.weight": rng.standard_normal((256, 512)).astype(np.float16),  # small: kept whole
        "blk.0.attn_norm.weight": rng.standard_normal(512).astype(np.float32),
    }
    source = _gguf(tmp_path / "f16.gguf", tensors)
    cut = gguf_rows.write(source, tmp_path / "sample.gguf")

    keep_embd = gguf_rows.sample_rows(4096, 2048, 1)
    keep_exps = gguf_rows.sample_rows(768, 512, 16)
    assert cut == {"token_embd.weight": (4096, keep_embd), "blk.0.ffn_up_exps.weight": (768, keep_exps)}
    assert keep_embd * 2048 <= 2 * gguf_rows.MAX_ELEMENTS and keep_exps >= gguf_rows.MIN_ROWS
    sample = GGUFReader(tmp_path / "sample.gguf")
    assert sample.get_field("tokenizer.ggml.pre").contents() == "line\nbreak"
    assert sample.get_field("llama.block_count").contents() == 1
    got = {t.name: np.asarray(t.data) for t in sample.tensors}
    assert list(got) == list(tensors)
    rows = np.linspace(0, 4095, keep_embd).round().astype(int)
    np.testing.assert_array_equal(got["token_embd.weight"], tensors["token_embd.weight"][rows])
    rows = np.linspace(0, 767, keep_exps).round().astype(int)
    np.testing.assert_array_equal(got["blk.0.ffn_up_exps.weight"], tensors["blk.0.ffn_up_exps.weight"][:, rows])
    np.testing.assert_array_equal(got["blk.0.attn_k.weight"], tensors["blk.0.attn_k.weight"])
    np.testing.assert_array_equal(got["blk.0.attn_norm.weight"], tensors["blk.0.attn_norm.weight"])


def test_a_model_with_no_wide_tensor_is_its_own_sample(tmp_path):
    source = _gguf(tmp_path / "f16.gguf", {"blk.0.attn_k.weight": np.ones((64, 576), np.float16)})
    assert gguf_rows.write(source, tmp_path / "sample.gguf") is None
    assert not (tmp_path / "sample.gguf").exists()
