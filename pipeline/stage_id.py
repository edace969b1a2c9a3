"""A stage's id: a small typed value with one formatter and one parser.

    source            calibration          reference            eval-corpus
    quantize[awq]     gguf-convert[f16]    floor[llama.cpp]     evaluate[awq@vllm]

`kind` is what the stage does, `arg` tells stages of one kind apart (an artifact name, a dtype, an
engine), `engine` names the other engine an artifact is measured in. A StageId *is* its text (a str
subclass), so manifests, JSON jobs, `--force` and orchestrator task names keep using the plain id, and
code that needs the parts reads them from the value instead of parsing strings itself.
"""

from __future__ import annotations

import re
from enum import StrEnum

# arg: anything without brackets (artifact names are plain names; a dtype; a file name); engine: a registry name
_ID = re.compile(r"(?P<kind>[a-z][a-z0-9-]*)(?:\[(?P<arg>[^\[\]@]+)(?:@(?P<engine>[a-z][a-z0-9.-]*))?\])?")


class StageId(str):
    kind: str
    arg: str | None
    engine: str | None

    def __new__(cls, kind: str, arg: str | None = None, engine: str | None = None) -> StageId:
        text = kind if arg is None else f"{kind}[{arg}{'@' + engine if engine else ''}]"
        self = super().__new__(cls, text)
        self.kind, self.arg, self.engine = kind, arg, engine
        return self

    def __getnewargs__(self) -> tuple[str, str | None, str | None]:  # pickle and copy rebuild it from its parts
        return self.kind, self.arg, self.engine

    @classmethod
    def parse(cls, text: str) -> StageId:
        m = _ID.fullmatch(text)
        if m is None:
            raise ValueError(f"{text!r} is not a stage id (kind, or kind[arg], or kind[arg@engine])")
        return cls(m["kind"], m["arg"], m["engine"])

    @property
    def label(self) -> str:
        """The prefix of the stage's output directory: `quantize-awq`, `evaluate-awq-vllm`."""
        return "-".join(p for p in (self.kind, self.arg, self.engine) if p)


class Kind(StrEnum):
    """What a stage does: one constant per stage kind, each run by one module (pipeline.registry.STAGES).

    A kind is part of every cache key and names the cost function that prices it (pipeline.cost), so a
    kind nobody registered fails a test instead of falling through to another kind's code."""

    SOURCE = "source"
    CALIBRATION = "calibration"
    QUANTIZE = "quantize"
    EVAL_CORPUS = "eval-corpus"
    REFERENCE = "reference"
    FLOOR = "floor"  # the unquantized model in an artifact engine: that engine's own floor
    EVALUATE = "evaluate"
    EVALUATE_ENGINE = "evaluate-engine"  # an artifact measured in another engine (vLLM) than its own
    SERVE_CHECK = "serve-check"
    PACKAGE = "package"
    PUBLISH = "publish"
    # steps that format backends declare (pipeline.backends.SharedStep)
    GGUF_CONVERT = "gguf-convert"
    IMATRIX = "imatrix"
    GGUF_SENSITIVITY = "gguf-sensitivity"
    CT_SENSITIVITY = "ct-sensitivity"
    OPENVINO_EXPORT = "openvino-export"


SOURCE = StageId(Kind.SOURCE)
CALIBRATION = StageId(Kind.CALIBRATION)
EVAL_CORPUS = StageId(Kind.EVAL_CORPUS)
REFERENCE = StageId(Kind.REFERENCE)
