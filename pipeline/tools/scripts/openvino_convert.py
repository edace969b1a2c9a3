"""Runs in the openvino environment: optimum-intel's own export and NNCF weight compression.

    python openvino_convert.py SPEC.json

SPEC: {"op": "export", "source": DIR, "out": DIR, "dtype": "fp16"|"fp32", "trust_remote_code": bool}
      {"op": "compress", "ir": DIR, "out": DIR, "config": {OVWeightQuantizationConfig fields}, "texts": [...]}
"export" writes an OpenVINO IR (stateful, KV cache inside) with the tokenizer and detokenizer converted
to OpenVINO models, so openvino-genai loads the directory as is; "compress" reads such a directory and
writes it again with compressed weights (the tokenizer files copied over)."""

import json
import shutil
import sys
from pathlib import Path

MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")


def export(spec: dict) -> dict:
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    # An explicit dtype also stops optimum-intel compressing models over 1B parameters to INT8 on its own.
    main_export(
        spec["source"],
        spec["out"],
        task="text-generation-with-past",
        ov_config=OVConfig(dtype=spec["dtype"]),
        convert_tokenizer=True,
        trust_remote_code=spec["trust_remote_code"],
        local_files_only=True,
    )
    return {}


def compress(spec: dict) -> dict:
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    ir, out, config = Path(spec["ir"]), Path(spec["out"]), dict(spec["config"])
    if spec.get("texts"):
        config.update(dataset=spec["texts"], num_samples=len(spec["texts"]), tokenizer=str(ir))
    model = OVModelForCausalLM.from_pretrained(
        ir, quantization_config=OVWeightQuantizationConfig(**config), compile=False
    )
    model.save_pretrained(out)
    for f in ir.iterdir():  # tokenizer, detokenizer, HF tokenizer files, generation config
        if f.is_file() and f.name not in MODEL_FILES and not (out / f.name).exists():
            shutil.copyfile(f, out / f.name)
    return {}


if __name__ == "__main__":
    order = json.loads(Path(sys.argv[1]).read_text())
    result = {"export": export, "compress": compress}[order["op"]](order)
    print(json.dumps(result))
