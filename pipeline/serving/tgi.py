"""Text Generation Inference: launcher options as an env file, the launcher command and `docker run`.
TGI reads compressed-tensors settings from config.json; `--quantize` is given only for bitsandbytes,
which TGI applies at load time to unquantized weights (it does not read pre-quantized bnb files).
TGI is in maintenance mode upstream: vLLM is the recommended server."""

from __future__ import annotations

from pipeline.serving import Artifact, ServingTarget, ShellVar, argnames, register, shell_script

IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.4"
MAINTENANCE = (
    "TGI is in maintenance mode upstream (Hugging Face recommends vLLM); vLLM is the "
    "recommended server for this artifact."
)
# vLLM's core no longer loads bitsandbytes (out-of-tree vllm-bnb-plugin): for those, TGI is the server we generate.
MAINTENANCE_BNB = (
    "TGI is in maintenance mode upstream; it is the server generated here because vLLM's "
    "core no longer loads bitsandbytes."
)


def _maintenance(a: Artifact) -> str:
    return MAINTENANCE_BNB if a.kind == "bitsandbytes" else MAINTENANCE


def env(a: Artifact) -> dict[str, str]:
    """Launcher options as environment variables (each is also a --long-option)."""
    n = a.max_model_len
    out = {
        "MODEL_ID": f"/data/{a.name}",
        "MAX_TOTAL_TOKENS": str(n),
        "MAX_INPUT_TOKENS": str(n - 1),
        "MAX_BATCH_PREFILL_TOKENS": str(n),
        "NUM_SHARD": str(a.options["tensor_parallel_size"]),
        "PORT": "80",
    }
    if a.kind == "bitsandbytes":
        # TGI quantizes at load: it serves the unquantized model with the same bitsandbytes scheme.
        out["MODEL_ID"] = a.base_model or "/data/base-model"
        out["QUANTIZE"] = a.bnb_quantize or "bitsandbytes-nf4"
    out.update({k.upper().replace("-", "_"): str(v) for k, v in a.options["tgi_args"].items()})
    argnames.require("tgi", [argnames.env_to_option(k) for k in out])
    return out


@register
class Tgi(ServingTarget):
    name = "tgi"
    title = "Text Generation Inference (TGI)"

    def serves(self, a: Artifact) -> bool:
        return a.kind in ("compressed-tensors", "bitsandbytes")

    def files(self, a: Artifact) -> dict[str, str]:
        e = env(a)
        maintenance = _maintenance(a)
        head = [f"# TGI launcher options for {a.name} (docker run --env-file serving/tgi.env ...). {maintenance}"]
        if a.kind == "bitsandbytes":
            head.append(f"# MODEL_ID is the unquantized model: TGI applies {e['QUANTIZE']} itself when it loads it.")
        env_file = "\n".join(head + [f"{k}={v}" for k, v in e.items()]) + "\n"
        docker = shell_script(
            f"TGI in Docker for {a.name}: OpenAI-compatible API at http://127.0.0.1:${{PORT:-{a.options['port']}}}/v1, "
            f"health at /health.\n{maintenance}",
            [
                "docker",
                "run",
                "--rm",
                "--gpus",
                "all",
                "--shm-size",
                "1g",
                "-p",
                ShellVar(f'"127.0.0.1:${{PORT:-{a.options["port"]}}}:80"'),
                "-v",
                ShellVar(f'"$PWD:/data/{a.name}:ro"'),  # a.name: a plain name (NAME_RE)
                "-e",
                "HF_TOKEN",
                "--env-file",
                "serving/tgi.env",
                IMAGE,
            ],
        )
        flags = [
            x for k, v in e.items() if k not in ("MODEL_ID", "PORT") for x in (f"--{argnames.env_to_option(k)}", v)
        ]
        model = e["MODEL_ID"] if a.kind == "bitsandbytes" else ShellVar('"$PWD"')
        launcher = shell_script(
            f"TGI's launcher without Docker (text-generation-launcher on PATH), for {a.name}.\n{maintenance}",
            ["text-generation-launcher", "--model-id", model]
            + flags
            + ["--port", ShellVar(f'"${{PORT:-{a.options["port"]}}}"'), "--hostname", "127.0.0.1"],
        )
        return {"tgi.env": env_file, "tgi-docker.sh": docker, "tgi-launcher.sh": launcher}

    def usage(self, a: Artifact) -> str:
        bnb = (
            (
                "\nTGI does not load pre-quantized bitsandbytes files: `tgi.env` points it at the "
                "unquantized model with "
                f"`QUANTIZE={a.bnb_quantize}`, the same scheme applied at load time.\n"
            )
            if a.kind == "bitsandbytes"
            else ""
        )
        return (
            f"> {_maintenance(a)}\n\n```bash\ncd {a.name}  # this directory\nserving/tgi-docker.sh "
            "  # docker run ... --env-file serving/tgi.env\n"
            f"# or, with text-generation-launcher installed: serving/tgi-launcher.sh\n```\n{bnb}"
        )
