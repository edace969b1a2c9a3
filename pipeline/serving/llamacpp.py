"""llama.cpp: the `llama-server` command and the equivalent `python -m llama_cpp.server` command, both
OpenAI-compatible, using the chat template stored in the GGUF. HOST, PORT and the binaries can be
overridden from the environment; everything else is what the recipe asked for.

Mixture-of-experts GGUFs get a third script, the set-up llama.cpp users reach for when the experts do not
fit on the GPU: every layer offloaded, the routed experts of the first N_CPU_MOE layers kept in RAM
(`--n-cpu-moe`; all of them is `--cpu-moe`, the same as `--override-tensor exps=CPU`). The card gives the
GPU and RAM each N needs, from the tensor sizes in the file."""

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
            [ShellVar('"${LLAMA_SERVER:-llama-server}"')]
            + server_args(a, a.gguf_file or "", host, port)
            + [ShellVar('"$@"')],
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
        scripts = {"llama-server.sh": server, "llama-cpp-python.sh": python}
        if a.experts:
            layers = max(a.experts.bytes_per_layer, default=-1) + 1
            args = server_args(a, a.gguf_file or "", host, port)
            args[args.index("--n-gpu-layers") + 1] = "999"
            scripts["llama-server-moe.sh"] = shell_script(
                f"llama-server for {a.name}, a mixture of experts: every layer on the GPU but the routed experts of\n"
                f"the first N_CPU_MOE layers, which stay in RAM (default {layers}: all of them, like --cpu-moe).\n"
                "The model card's table gives the GPU and RAM each N_CPU_MOE needs.",
                [ShellVar('"${LLAMA_SERVER:-llama-server}"')]
                + args
                + ["--n-cpu-moe", ShellVar(f'"${{N_CPU_MOE:-{layers}}}"'), ShellVar('"$@"')],
            )
        return scripts

    def usage(self, a: Artifact) -> str:
        return (
            f"```bash\ncd {a.name}  # this directory\nserving/llama-server.sh        # llama-server "
            f"--model {a.gguf_file} --jinja ...\n"
            f"serving/llama-cpp-python.sh    # python -m llama_cpp.server --model {a.gguf_file} ...\n```\n"
            "Both listen on 127.0.0.1 unless `HOST` is set; `PORT` overrides the port; options after "
            "`llama-server.sh` go to llama-server.\n" + (_offload(a) if a.experts else "")
        )


def _offload(a: Artifact) -> str:
    """The card's table: GPU and RAM for the weights at each number of layers whose experts stay in RAM."""
    assert a.experts is not None
    per_layer, other = a.experts.bytes_per_layer, a.experts.other_bytes
    layers = max(per_layer, default=-1) + 1
    steps = sorted({0, layers // 4, layers // 2, 3 * layers // 4, layers})
    gib = 1 << 30
    rows = []
    for n in steps:
        ram = sum(b for i, b in per_layer.items() if i < n)
        rows.append(f"| {n} | {(other + a.experts.bytes - ram) / gib:,.2f} | {ram / gib:,.2f} |")
    return (
        "\n**Experts in RAM** (a mixture of experts: the routed experts are "
        f"{a.experts.bytes / gib:,.2f} GiB of the weights, the rest {other / gib:,.2f} GiB). "
        "`serving/llama-server-moe.sh` puts every layer on the GPU except the routed experts of the first "
        "`N_CPU_MOE` layers (`--n-cpu-moe N`); `N_CPU_MOE="
        f"{layers}` (its default) is `--cpu-moe`, the same as `--override-tensor exps=CPU`. Weights only, "
        "read from the file's tensor sizes; the KV cache and compute buffers come on top, on the GPU:\n\n"
        "| N_CPU_MOE | GPU GiB | RAM GiB |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )
