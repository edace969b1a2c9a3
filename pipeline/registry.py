"""Every plug-in module, in one place: the four registries import the modules listed here, and each
module registers itself (`@register`) when imported. Adding a format family with its own engine is a
backend module, an engine module, optionally a serving target, and its names on these lines.

The order is meaningful where it shows: formats are listed (`list-formats`, the recipe's union) in
backend order; serving targets write their model-card sections in this order, the recommended first."""

BACKENDS = ("bitsandbytes", "gguf", "llmcompressor", "openvino")  # pipeline/backends/<name>.py
ENGINES = ("hf", "llamacpp", "openvino", "vllm")  # pipeline/engines/<name>.py
TARGETS = ("vllm", "tgi", "llamacpp", "ollama", "openvino", "kubernetes")  # pipeline/serving/<name>.py
TOOL_ENVIRONMENTS = ("optimum_intel", "vllm_server")  # pipeline/tools/<name>.py: tools with their own venv
