"""Quality metrics on the tiny model, each checked against a second, independent computation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.engines.hf import HFEngine
from pipeline.evaluation.metrics import Reference, TopLogprobs, score, scored


@pytest.fixture(scope="module")
def windows(tiny_model):
    from transformers import AutoTokenizer

    from tests.conftest import CORPUS

    ids = AutoTokenizer.from_pretrained(tiny_model)(CORPUS)["input_ids"]
    return [ids[i * 48 : (i + 1) * 48] for i in range(4)]


@pytest.fixture(scope="module")
def base(tiny_model):
    return HFEngine(tiny_model)


def _reference(engine, windows, full=True, k=16, convention="all"):
    import tempfile
    from pathlib import Path

    out = Path(tempfile.mkdtemp())
    vocab = engine.model.config.vocab_size
    return Reference.build(
        out, (engine.logprobs(w) for w in windows), windows, "full" if full else "top-k", k, convention, vocab
    )


def damaged(tiny_model, tmp_path, noise: float):
    """A copy of the tiny model with Gaussian noise added to every linear weight."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"noise-{noise}"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.add_(noise * p.std() * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out)
    for f in tiny_model.glob("tokenizer*"):
        shutil.copy(f, out)
    return out


def test_base_against_itself(base, windows):
    m = score(base, windows, _reference(base, windows))
    assert m["kld"] == pytest.approx(0, abs=1e-6) and m["top1_pct"] == 100.0  # float16 reference, renormalized
    assert m["ppl"] == pytest.approx(m["base_ppl"], rel=1e-6) and m["tokens"] == 4 * 47


def test_perplexity_matches_transformers_loss(base, windows):
    """Our perplexity = exp of the mean of transformers' own cross-entropy loss over the same windows."""
    ref = _reference(base, windows)
    with torch.no_grad():
        losses = [base.model(torch.tensor([w]), labels=torch.tensor([w])).loss.item() for w in windows]
    assert np.exp(-np.mean(ref.target_lp)) == pytest.approx(np.exp(np.mean(losses)), rel=1e-4)


def test_kld_matches_torch_kl_div_and_damage_ranks(base, windows, tiny_model, tmp_path):
    ref = _reference(base, windows)
    mild, bad = HFEngine(damaged(tiny_model, tmp_path, 0.05)), HFEngine(damaged(tiny_model, tmp_path, 0.5))
    m_mild, m_bad = score(mild, windows, ref), score(bad, windows, ref)
    p = torch.cat([torch.from_numpy(base.logprobs(w)[:-1]) for w in windows])
    q = torch.cat([torch.from_numpy(bad.logprobs(w)[:-1]) for w in windows])
    direct = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    assert m_bad["kld"] == pytest.approx(direct.mean().item(), rel=1e-3)  # float16 base log-probs vs float32
    assert m_bad["kld_p99"] == pytest.approx(np.percentile(direct.numpy(), 99), rel=1e-3)
    assert 0 < m_mild["kld"] < m_bad["kld"]
    assert m_bad["top1_pct"] < m_mild["top1_pct"] <= 100
    assert abs(m_bad["ppl_increase_pct"]) > abs(m_mild["ppl_increase_pct"])


def test_top_k_is_a_lower_bound_and_exact_at_full_vocab(base, windows, tiny_model, tmp_path):
    bad = HFEngine(damaged(tiny_model, tmp_path, 0.5))
    full = score(bad, windows, _reference(base, windows))
    vocab = base.model.config.vocab_size
    approx = score(bad, windows, _reference(base, windows, full=False, k=64))
    exact = score(bad, windows, _reference(base, windows, full=False, k=vocab))
    assert approx["kld"] <= full["kld"] + 1e-6 and approx["kld_method"] == "top-64"
    assert exact["kld"] == pytest.approx(full["kld"], rel=1e-3)
    assert approx["top1_pct"] == full["top1_pct"] and approx["ppl"] == pytest.approx(full["ppl"])


class TopOnly:
    """What vLLM gives per position, made from an engine's full log-probs: its top-k, and the token that
    follows when it is not among them (pipeline.engines.vllm.VllmEngine.logprobs)."""

    def __init__(self, engine, k):
        self.engine, self.k = engine, k

    def logprobs(self, ids):
        lp = self.engine.logprobs(ids)
        idx = np.argsort(-lp, -1)[:, : self.k]
        nxt = np.array(ids[1:] + [ids[-1]])[:, None]
        idx = np.concatenate([idx, np.where((idx == nxt).any(-1, keepdims=True), -1, nxt)], -1)
        vals = np.where(idx >= 0, np.take_along_axis(lp, np.maximum(idx, 0), -1), -np.inf).astype(np.float32)
        return TopLogprobs(idx, vals)


def test_engine_top_k_is_a_lower_bound_exact_at_full_vocab_with_exact_ppl_and_top1(base, windows, tiny_model, tmp_path):
    bad, ref = HFEngine(damaged(tiny_model, tmp_path, 0.5)), _reference(base, windows)
    full = score(bad, windows, ref)
    few, more = score(TopOnly(bad, 8), windows, ref), score(TopOnly(bad, 64), windows, ref)
    whole = score(TopOnly(bad, base.model.config.vocab_size), windows, ref)
    assert few["kld"] < more["kld"] < full["kld"] and few["kld_method"] == "engine top-8"
    assert whole["kld"] == pytest.approx(full["kld"], rel=1e-3)
    for m in (few, more):  # the scored token's log-prob and the argmax are always reported: exact
        assert m["ppl"] == pytest.approx(full["ppl"], rel=1e-5) and m["top1_pct"] == full["top1_pct"]


def test_reference_roundtrip(base, windows):
    ref = _reference(base, windows, full=False, k=8)
    again = Reference.load(Path(ref.top_idx.filename).parent)
    assert again.method == "top-8" and np.array_equal(again.top_idx, ref.top_idx) and again.full is None


def test_full_reference_is_float16_on_disk_and_memory_mapped(base, windows):
    ref = _reference(base, windows)
    assert isinstance(ref.full, np.memmap) and ref.full.dtype == np.float16
    assert ref.full.shape == (4 * 47, base.model.config.vocab_size)


def test_second_half_convention_scores_what_llama_perplexity_scores(base, windows, tiny_model, tmp_path):
    """Positions C/2 .. C-2 of each C-token window predict tokens C/2+1 .. C-1; nothing else is scored."""
    assert list(scored(48, "second-half")) == list(range(24, 47)) and list(scored(48, "all")) == list(range(0, 47))
    bad = HFEngine(damaged(tiny_model, tmp_path, 0.5))
    m = score(bad, windows, _reference(base, windows, convention="second-half"))
    assert m["tokens"] == 4 * 23 and m["score"] == "second-half"
    p = torch.cat([torch.from_numpy(base.logprobs(w)[24:47]) for w in windows])
    q = torch.cat([torch.from_numpy(bad.logprobs(w)[24:47]) for w in windows])
    direct = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    assert m["kld"] == pytest.approx(direct.mean().item(), rel=1e-3)
    nll = torch.cat(
        [-torch.from_numpy(bad.logprobs(w)[24:47])[torch.arange(23), torch.tensor(w[25:48])] for w in windows]
    )
    assert m["ppl"] == pytest.approx(float(torch.exp(nll.mean())), rel=1e-5)
