"""llama.cpp: the `llama-server` command and the equivalent `python -m llama_cpp.server` command, both
OpenAI-compatible, using the chat template stored in the GGUF. HOST, PORT and the binaries can be
overridden from the environment; everything else is what the recipe asked for."""

from __future__ import annotations

from pipeline.serving import Artifact, ServingTarget, ShellVar, register, shell_script

IMAGE = "ghcr.io/ggml-org/llama.cpp:server"  # CPU image; the server-cuda variant offloads --n-gpu-layers to a GPU


def server_args(a: Artifact, model: str, host: str, port: str) -> list[str]:
    """llama-server options; shared with the Kubernetes target."""
    o = a.options
    args = [
        "--model",
        model,
        "--host",
        host,
        "--port",
        port,
        "--ctx-size",
        str(a.max_model_len),
        "--n-gpu-layers",
        str(o["gpu_layers"]),
        "--alias",
        a.served_model_name,
        "--jinja",
    ]  # --jinja: the GGUF's chat template
    return args + (["--threads", str(o["threads"])] if o.get("threads") else [])


@register
class LlamaCpp(ServingTarget):
    name = "llama-cpp"
    title = "llama.cpp"

    def serves(self, a: Artifact) -> bool:
        return a.kind == "gguf"

    def files(self, a: Artifact) -> dict[str, str]:
        o = a.options
        host, port = ShellVar('"${HOST:-127.0.0.1}"'), ShellVar(f'"${{PORT:-{o["port"]}}}"')
        server = shell_script(
            f"llama.cpp's server for {a.name}: OpenAI-compatible API at http://$HOST:$PORT/v1, health at /health.\n"
            "LLAMA_SERVER: the llama-server binary (default: the one on PATH). --n-gpu-layers "
            "is ignored by CPU-only builds.",
            [ShellVar('"${LLAMA_SERVER:-llama-server}"')] + server_args(a, a.gguf_file or "", host, port),
        )
        py = [
            "--model",
            a.gguf_file or "",
            "--host",
            host,
            "--port",
            port,
            "--n_ctx",
            str(a.max_model_len),
            "--n_gpu_layers",
            str(o["gpu_layers"]),
            "--model_alias",
            a.served_model_name,
        ]
        py += ["--n_threads", str(o["threads"])] if o.get("threads") else []
        python = shell_script(
            f"The same server through llama-cpp-python (pip install 'llama-cpp-python[server]'), for {a.name}.\n"
            "It applies the chat template stored in the GGUF. PYTHON: the interpreter that has llama-cpp-python.",
            [ShellVar('"${PYTHON:-python3}"'), "-m", "llama_cpp.server"] + py,
        )
        return {"llama-server.sh": server, "llama-cpp-python.sh": python}

    def usage(self, a: Artifact) -> str:
        return (
            f"```bash\ncd {a.name}  # this directory\nserving/llama-server.sh        # llama-server "
            f"--model {a.gguf_file} --jinja ...\n"
            f"serving/llama-cpp-python.sh    # python -m llama_cpp.server --model {a.gguf_file} ...\n```\n"
            "Both listen on 127.0.0.1 unless `HOST` is set; `PORT` overrides the port.\n"
        )
