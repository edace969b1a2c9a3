"""Stage ids: one formatter, one parser, the parts read from the value (not from the string)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from pipeline.stage_id import StageId


@pytest.mark.parametrize(
    "text, parts, label",
    [
        ("source", ("source", None, None), "source"),
        ("eval-corpus", ("eval-corpus", None, None), "eval-corpus"),
        ("quantize[gguf-auto-q4_k_m]", ("quantize", "gguf-auto-q4_k_m", None), "quantize-gguf-auto-q4_k_m"),
        ("floor[llama.cpp]", ("floor", "llama.cpp", None), "floor-llama.cpp"),
        ("evaluate[awq@vllm]", ("evaluate", "awq", "vllm"), "evaluate-awq-vllm"),
        ("imatrix[my.imatrix.gguf]", ("imatrix", "my.imatrix.gguf", None), "imatrix-my.imatrix.gguf"),
        ("imatrix[m.gguf#3fa2b1c0d4e5]", ("imatrix", "m.gguf#3fa2b1c0d4e5", None), "imatrix-m.gguf#3fa2b1c0d4e5"),
    ],
)
def test_parse_and_format_round_trip(text, parts, label):
    sid = StageId.parse(text)
    assert (sid.kind, sid.arg, sid.engine) == parts and sid.label == label
    assert StageId(*parts) == text and str(StageId(*parts)) == text
    assert {text: 1}[sid] == 1 and hash(sid) == hash(text)  # the plain id (manifests, JSON jobs) finds it


def test_survives_json_pickle_and_copy():
    sid = StageId("evaluate", "fp8", "vllm")
    assert json.loads(json.dumps({sid: sid})) == {"evaluate[fp8@vllm]": "evaluate[fp8@vllm]"}
    for twin in (pickle.loads(pickle.dumps(sid)), copy.deepcopy(sid)):
        assert twin == sid and (twin.kind, twin.arg, twin.engine) == ("evaluate", "fp8", "vllm")


@pytest.mark.parametrize("text", ["", "Quantize[x]", "quantize[]", "quantize[a[b]]", "quantize[x", "x y"])
def test_what_is_not_an_id_is_refused(text):
    with pytest.raises(ValueError, match="not a stage id"):
        StageId.parse(text)


def test_every_stage_kind_has_a_module_that_runs_it_and_a_cost():
    """A kind is a constant; each one is run by exactly one module (pipeline.registry.STAGES) and priced by
    one cost function, so a new kind without either fails here instead of falling through to another's."""
    from pipeline import stages
    from pipeline.cost.stage_costs import COSTS
    from pipeline.registry import STAGES
    from pipeline.stage_id import Kind

    assert set(STAGES) == set(Kind) == set(COSTS)
    for kind in Kind:
        module, func = stages.module_of(kind)
        assert callable(getattr(module, func)), kind


def test_every_format_family_declares_its_own_quantize_cost():
    """Backend.cost: each registered family overrides it (the base raises), so a new family without a cost fails
    here, and a family's estimate never comes from another family's formula."""
    from pipeline.backends import FORMATS, Backend

    families = {type(info.backend) for info in FORMATS.values()}
    assert families and all(cls.cost is not Backend.cost for cls in families), [
        cls.__name__ for cls in families if cls.cost is Backend.cost
    ]

    class Unpriced(Backend):
        name = "unpriced"

    with pytest.raises(NotImplementedError, match="unpriced declares no cost"):
        Unpriced().cost(None, None)


def test_an_unknown_stage_kind_fails_at_plan_time():
    from pipeline.graph.stage import Stage

    with pytest.raises(ValueError):
        Stage(id=StageId("convert", "x"), kind="convert", describe="", config={}, deps=[], versions={})
