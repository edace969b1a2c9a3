"""Every plug-in module, in one place: the four registries import the modules listed here, and each
module registers itself (`@register`) when imported. Adding a format family with its own engine is a
backend module, an engine module, optionally a serving target, and its names on these lines.

The order is meaningful where it shows: formats are listed (`list-formats`, the recipe's union) in
backend order; serving targets write their model-card sections in this order, the recommended first."""

BACKENDS = ("bitsandbytes", "gguf", "llmcompressor", "openvino")  # pipeline/backends/<name>.py
ENGINES = ("hf", "llamacpp", "openvino", "vllm")  # pipeline/engines/<name>.py
TARGETS = ("vllm", "tgi", "llamacpp", "ollama", "openvino", "kubernetes")  # pipeline/serving/<name>.py
TOOL_ENVIRONMENTS = ("optimum_intel", "vllm_server")  # pipeline/tools/<name>.py: tools with their own venv

# Stage kind (pipeline.stage_id.Kind) -> the module whose `run(config, inputs, out, ctx)` does it (or
# `module:function`). A stage
# is data (kind, config, input keys, key): a worker, an orchestrator task or another machine runs it from
# this line and the stage's JSON, without the recipe or the plan.
STAGES = {
    "source": "pipeline.stages.source",
    "calibration": "pipeline.stages.calibration",
    "quantize": "pipeline.stages.quantize",
    "eval-corpus": "pipeline.stages.eval_corpus",
    "reference": "pipeline.stages.reference",
    "floor": "pipeline.stages.evaluate",
    "evaluate": "pipeline.stages.evaluate",
    "evaluate-engine": "pipeline.stages.evaluate",
    "serve-check": "pipeline.stages.serve_check",
    "package": "pipeline.stages.package",
    "publish": "pipeline.stages.publish",
    "gguf-convert": "pipeline.backends.gguf_convert",
    "imatrix": "pipeline.backends.gguf_imatrix",
    "gguf-sensitivity": "pipeline.backends.gguf_sensitivity",
    "ct-sensitivity": "pipeline.backends.ct_sensitivity",
    "openvino-export": "pipeline.backends.openvino:export",
}
