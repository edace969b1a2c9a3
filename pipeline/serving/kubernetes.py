"""Kubernetes: a Deployment + Service per server that can run the artifact (vLLM on GPU for HF-format
artifacts, llama.cpp on CPU for GGUF), with startup/readiness/liveness probes on /health, resource
requests and limits (GPUs for GPU formats) and the model on a read-only volume."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

from pipeline.serving import Artifact, ServingTarget, llamacpp, register, vllm

GIB = 1 << 30


def _cli(options: dict[str, Any]) -> list[str]:
    """{long name: value} -> argv; True is a bare flag, dicts/lists are JSON (vLLM parses them)."""
    out: list[str] = []
    for key, value in options.items():
        if value is True:
            out.append(f"--{key}")
        elif value is not False and value is not None:
            out += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return out


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures}


def manifests(a: Artifact, server: str, container: dict[str, Any], port: int, gpus: int, memory_gib: int) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", f"{a.served_model_name}-{server}".lower())[-63:].strip("-")  # a DNS-1123 label

    def labels() -> dict[str, str]:  # a fresh dict per use: shared ones become YAML anchors
        return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": server}

    limits: dict[str, Any] = {"memory": f"{memory_gib}Gi"} | ({"nvidia.com/gpu": gpus} if gpus else {})
    container |= {
        "ports": [{"name": "http", "containerPort": port}],
        "startupProbe": _probe("/health", 10, 90),  # up to 15 minutes to load weights
        "readinessProbe": _probe("/health", 5, 3),
        "livenessProbe": _probe("/health", 15, 4),
        "resources": {
            "requests": {"cpu": str(a.options.get("threads") or 2), "memory": f"{memory_gib}Gi"},
            "limits": limits,
        },
        "volumeMounts": [{"name": "model", "mountPath": f"/models/{a.name}", "readOnly": True}]
        + ([{"name": "dshm", "mountPath": "/dev/shm"}] if gpus else []),
        "env": [
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}}
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "model", "persistentVolumeClaim": {"claimName": f"{name}-model", "readOnly": True}}
    ]
    if gpus:  # tensor-parallel workers talk through shared memory
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels()},
            "template": {"metadata": {"labels": labels()}, "spec": {"containers": [container], "volumes": volumes}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels()},
        "spec": {"selector": labels(), "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    head = (
        f"# {server} for {a.name}: kubectl apply -f this file. The model is read from the PersistentVolumeClaim\n"
        f"# {name}-model, which must hold this package directory (weights, config, tokenizer) at its root.\n"
        "# The Service exposes the OpenAI-compatible API on port 80 (/v1); HF_TOKEN comes "
        "from the optional secret hf-token.\n"
    )
    return head + yaml.safe_dump_all([deployment, service], sort_keys=False)


@register
class Kubernetes(ServingTarget):
    name = "kubernetes"
    title = "Kubernetes"

    def serves(self, a: Artifact) -> bool:
        # GGUF runs in llama.cpp's server, compressed-tensors in vLLM; neither loads bitsandbytes files.
        return a.kind in ("compressed-tensors", "gguf")

    def files(self, a: Artifact) -> dict[str, str]:
        size_gib = a.size_bytes / GIB
        if a.kind == "gguf":
            c = {
                "name": "llama-cpp",
                "image": llamacpp.IMAGE,
                "args": llamacpp.server_args(a, f"/models/{a.name}/{a.gguf_file}", "0.0.0.0", "8080"),
            }
            return {"k8s-llama-cpp.yaml": manifests(a, "llama-cpp", c, 8080, 0, math.ceil(size_gib * 1.25) + 1)}
        opts = vllm.options(a, f"/models/{a.name}", "0.0.0.0") | {"port": 8000}
        c = {"name": "vllm", "image": vllm.IMAGE, "command": ["vllm", "serve"], "args": _cli(opts)}
        return {
            "k8s-vllm.yaml": manifests(
                a, "vllm", c, 8000, a.options["tensor_parallel_size"], math.ceil(size_gib * 1.5) + 8
            )
        }

    def usage(self, a: Artifact) -> str:
        f = "k8s-llama-cpp.yaml" if a.kind == "gguf" else "k8s-vllm.yaml"
        return (
            f"```bash\nkubectl apply -f serving/{f}   # Deployment + Service; the model comes "
            "from a PVC (see the file's header)\n```\n"
        )
