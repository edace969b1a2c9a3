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


SOURCE = StageId("source")
CALIBRATION = StageId("calibration")
EVAL_CORPUS = StageId("eval-corpus")
REFERENCE = StageId("reference")
