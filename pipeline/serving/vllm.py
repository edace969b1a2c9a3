"""vLLM: a `vllm serve --config` YAML (long option names as keys, checked against vLLM's own list) and
the command. Quantization is left to vLLM: it reads compressed-tensors and bitsandbytes settings from
config.json. GGUF in vLLM is experimental: single-file only, tokenizer best taken from the base model."""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.serving import Artifact, ServingTarget, argnames, register, shell_script

IMAGE = "vllm/vllm-openai:v0.33.0"  # the version whose option names data/vllm-serve-args.txt holds


def options(a: Artifact, model: str, host: str) -> dict[str, Any]:
    """`vllm serve` options as {long name: value}; shared by the YAML here and the Kubernetes target."""
    o = a.options
    cfg: dict[str, Any] = {"model": model, "served-model-name": a.served_model_name, "host": host, "port": o["port"],
                           "max-model-len": a.max_model_len, "gpu-memory-utilization": o["gpu_memory_utilization"],
                           "tensor-parallel-size": o["tensor_parallel_size"]}
    if a.kind == "gguf" and a.base_model:
        cfg["tokenizer"] = a.base_model  # vLLM's advice for GGUF: the base model's tokenizer, not the one rebuilt from the file
    cfg.update(o["vllm_args"])
    argnames.require("vllm", list(cfg))
    return cfg


@register
class Vllm(ServingTarget):
    name = "vllm"
    title = "vLLM"

    def serves(self, a: Artifact) -> bool:
        return a.kind != "gguf" or a.gguf_shards <= 1

    def experimental(self, a: Artifact) -> bool:
        return a.kind == "gguf"

    def files(self, a: Artifact) -> dict[str, str]:
        model = f"./{a.gguf_file}" if a.kind == "gguf" else "."
        note = "# vLLM's GGUF support is experimental.\n" if a.kind == "gguf" else ""
        head = (f"# vllm serve --config serving/vllm.yaml, from the package directory ({a.name}).\n{note}"
                "# Quantization is read from config.json; a model given on the command line overrides `model` here.\n")
        cmd = shell_script(f"vLLM's OpenAI-compatible server for {a.name} (needs an NVIDIA GPU and `pip install vllm`).\n"
                           "Health: GET /health; API: /v1. A command-line option overrides the YAML: ./vllm.sh --port 9000",
                           ["vllm", "serve", "--config", "serving/vllm.yaml", '"$@"'])
        return {"vllm.yaml": head + yaml.safe_dump(options(a, model, "127.0.0.1"), sort_keys=False), "vllm.sh": cmd}

    def usage(self, a: Artifact) -> str:
        hub = f"\nStraight from the Hub: `vllm serve {a.repo_id} --config serving/vllm.yaml` (the positional model wins over the YAML's).\n" if a.repo_id else ""
        gguf = "\nvLLM's GGUF loader is experimental; llama.cpp is the reference engine for this file.\n" if a.kind == "gguf" else ""
        return (f"```bash\npip install vllm  # option names checked against vLLM 0.33\ncd {a.name}  # this directory\n"
                f"vllm serve --config serving/vllm.yaml   # or: serving/vllm.sh\n```\n{hub}{gguf}")
