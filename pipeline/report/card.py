"""The model card (README.md) of one packaged artifact: Hub metadata that `huggingface_hub.ModelCard`
parses, the evaluation against the base model, copy-paste usage per serving target, and how it was made."""

from __future__ import annotations

import re
from typing import Any

from pipeline import serving
from pipeline.backends import FORMATS
from pipeline.evaluation import results
from pipeline.report import hub_usage
from pipeline.serving import vllm
from pipeline.serving.tgi import MAINTENANCE
from pipeline.tools import vllm_server

PROJECT = "llm-quant-pipeline"


def metadata(job: Any, artifact: serving.Artifact, license_: str | None, data: list[str] | None = None) -> Any:
    from huggingface_hub import ModelCardData

    extra = {"quantized_by": job.spec.quantized_by} if job.spec.quantized_by else {}
    extra |= {"datasets": data} if data else {}
    base = {"base_model": artifact.base_model, "base_model_relation": "quantized"} if artifact.base_model else {}
    tags = list(dict.fromkeys([*job.tags, "quantized", PROJECT, *job.spec.tags]))
    return ModelCardData(
        license=license_,
        library_name=FORMATS[job.format].backend.library_name if job.format in FORMATS else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        **base,
        **extra,
    )


def render(
    job: Any,
    artifact: serving.Artifact,
    targets: list[str],
    files: dict[str, dict[str, Any]],
    evaluation: dict[str, Any] | None,
    calibration: dict[str, Any] | None,
    license_: str | None,
    serve_check: dict[str, Any] | None = None,
    gguf_types: dict[str, Any] | None = None,
    weights: dict[str, Any] | None = None,
) -> str:
    data = metadata(job, artifact, license_, job.datasets)
    base = (
        f"[{artifact.base_model}](https://huggingface.co/{artifact.base_model})"
        if artifact.base_model
        else "its base model (not named: set package.base_model)"
    )
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {artifact.served_model_name}\n",
        f"{artifact.description}: a quantized {base}, made with {PROJECT} (`python -m pipeline "
        "run`) from the recipe below.\n",
        _evaluation(evaluation, job.artifact),
        _types(gguf_types),
        _experts(artifact),
        _unquantized(weights),
        _serve_check(serve_check, artifact),
        _usage(artifact, targets),
        _made(job, calibration),
        _files(files),
    ]
    return "\n".join(p for p in parts if p)


def _evaluation(evaluation: dict[str, Any] | None, name: str) -> str:
    if not evaluation:
        return "## Evaluation\n\nNot evaluated: the recipe's `evaluation.enabled` was false.\n"
    table = [results.row("base", "unquantized", evaluation["base"], "-")]
    if evaluation.get("floor"):
        table.append(
            results.row(
                f"floor: {evaluation['floor']['engine']}", "unquantized, in this engine", evaluation["floor"], "-"
            )
        )
    table.append(results.row(name, name, evaluation["artifact"], "passed"))
    return (
        "## Evaluation\n\nAgainst the unquantized model on the same held-out token ids (KLD "
        "and top-1 agreement of next-token "
        "distributions), in the engine that serves the format on the machine that made it. "
        "A `floor` row is the unquantized "
        "model in that engine: what the format itself adds is read against it.\n\n" + results.markdown(table)
    )


def _types(choice: dict[str, Any] | None) -> str:
    """What `type: auto` chose (backends/gguf_auto.py, backends/ct_auto.py), read from the file the package
    carries (`file`: which of the two)."""
    if not choice:
        return ""
    mib = 1024 * 1024
    add = choice.get("additivity") or {}
    rows = "\n".join(
        f"| {kind} | {', '.join(f'{t} x{n}' for t, n in types.items())} |" for kind, types in choice["by_kind"].items()
    )
    gguf = choice.get("file") != "ct-schemes.json"
    what = (
        ("Tensor types", "One llama.cpp type per tensor", "tensors", "per-tensor", "llama-perplexity")
        if gguf
        else (
            "Weight schemes",
            "One compressed-tensors scheme per group of Linears (q/k/v and gate/up, which vLLM fuses, share one)",
            "weights",
            "per-group",
            "transformers",
        )
    )
    how = (
        "importance-weighted error, scaled by llama-perplexity KLD probes per tensor kind and layer band"
        if gguf
        else "importance-weighted round-to-nearest error, scaled by a KLD probe per kind of Linear"
    )
    holds = (
        "`tensor-types.txt` holds every tensor's type as `llama-quantize --tensor-type-file` reads it."
        if gguf
        else "`ct-schemes.json` holds every group's scheme; config.json's `quantization_config` names the W8A16 "
        "Linears (a second config group) and the bf16 ones (`ignore`)."
    )
    return (
        f"## {what[0]}\n\n{what[1]}, chosen by `type: auto` to minimise the expected KLD at the size budget "
        f"({choice['budget_bytes'] / mib:,.2f} MiB of {what[2]}; used {choice['weights_bytes'] / mib:,.2f} MiB, "
        f"{choice['bpw']:.2f} bits per quantized weight). Expected KLD {choice['expected_kld']:.4f}: the sum of "
        f"{what[3]} costs measured on calibration text ({how}); with every one at {add.get('probe')} at once, "
        f"{what[4]} measured {add.get('measured', float('nan')):.4f} where the costs summed to "
        f"{add.get('predicted', float('nan')):.4f}. The measured KLD is under Evaluation. {holds}\n\n"
        "| kind | chosen (count) |\n|---|---|\n" + rows + "\n"
    )


def _experts(a: serving.Artifact) -> str:
    e = a.experts
    if e is None:
        return ""
    stored = (
        f" In this artifact the routed experts take {e.bytes / 2**30:,.2f} GiB and everything else "
        f"{e.other_bytes / 2**30:,.2f} GiB"
        + (" (*Use it* says how much of it to keep in RAM)." if a.kind == "gguf" else ".")
        if e.bytes_per_layer
        else ""
    )
    return (
        f"## Mixture of experts\n\n{e.total_params / 1e9:,.2f} B parameters, {e.active_params / 1e9:,.2f} B active "
        f"per token: {e.count} routed experts per layer, {e.per_token} per token.{stored}\n"
        + _expert_calibration(e.calibration)
    )


def _expert_calibration(c: dict[str, Any] | None) -> str:
    """How the calibration reached the experts (pipeline.backends.expert_counts): what each expert's
    quantization statistics saw, and what the router sent it."""
    if not c:
        return ""
    routed = [n for layer in (c.get("routed_tokens") or {}).values() for n in layer]
    line = (
        f"\nCalibration: every expert's projections saw at least {c['min_calibrated_rows']:,} token rows "
        "(llm-compressor runs every expert on every calibration token)"
    )
    if routed:
        ordered = sorted(routed)
        line += (
            f"; the router sent each expert {ordered[0]:,} to {ordered[-1]:,} tokens "
            f"(median {ordered[len(ordered) // 2]:,})"
        )
        never = c.get("experts_never_routed") or 0
        line += (
            f"; {never} of {len(routed)} experts were never routed a calibration token: their scales come "
            "from every token all the same, but their share of the output was not exercised"
            if never
            else "; every expert was routed tokens"
        )
    return line + ".\n"


def _unquantized(weights: dict[str, Any] | None) -> str:
    """Which weights this artifact stores as plain floats, read from its file headers (checkpoints.tensors)."""
    if not weights:
        return ""
    groups, params = weights["unquantized"], weights["params"] or 1
    if not groups:
        return "## Tensors left unquantized\n\nNone: every weight tensor of the files is quantized.\n"
    share = sum(g.numel for g in groups) / params
    rows = "\n".join(
        f"| `{g.pattern}` | {g.role} | {g.dtype} | {g.count} | {g.numel / 1e6:,.2f} | {100 * g.numel / params:.2f} % |"
        for g in groups
    )
    return (
        "## Tensors left unquantized\n\nStored as plain floats, as read from the files' headers "
        f"({100 * share:.2f} % of the model's {params / 1e9:,.3f} B parameters); every other weight is quantized."
        + (
            " Routers stay unquantized on purpose: a quantized router changes which experts a token reaches."
            if any(g.role == "router" for g in groups)
            else ""
        )
        + "\n\n"
        "| tensors | role | type | count | M parameters | share |\n|---|---|---|---|---|---|\n" + rows + "\n"
    )


def _serve_check(check: dict[str, Any] | None, a: serving.Artifact) -> str:
    """What happened when this package was started in vLLM on the machine that made it."""
    if a.kind not in vllm.KINDS:
        return ""
    if check is None:
        return (
            "## Started in vLLM\n\nNot checked: vLLM's environment was not set up where this was made "
            "(`python -m pipeline setup vllm`), or the recipe's `evaluation.vllm` was false.\n"
        )
    engine, config = check["engine"], check["config"]
    if check["status"] != "ok":
        return (
            f"## Started in vLLM\n\n**{engine} refused it** (`vllm serve --config {config}`): "
            f"`{_one_line(check.get('reason'))}`. "
            "This is what that build loads on the machine that made it; vLLM's GPU build (`serving/vllm.yaml`) "
            "is not shown by this.\n"
        )
    return (
        f"## Started in vLLM\n\n{engine} served it from `{config}` exactly as packaged: healthy "
        f"after {check['load_seconds']} s; "
        f'asked "{vllm_server.QUESTION[0]["content"]}" (greedy, 24 tokens) it answered: '
        f'"{_one_line(check.get("answer"))}" '
        f"(streaming: {check.get('stream_chunks')} chunks).\n"
    )


def _one_line(text: Any) -> str:
    # a server's words end up in Markdown: one line, no backticks that could close the code span
    return " ".join(str(text or "").split()).replace("`", "'")[:300]


def _usage(a: serving.Artifact, targets: list[str]) -> str:
    out = ["## Use it\n"]
    if a.kind in vllm.KINDS:
        out.append("vLLM is the recommended server. " + MAINTENANCE.split(";")[0] + ".\n")
    if a.repo_id and a.kind == "gguf" and a.repo_file:
        tag = gguf_tag(a.repo_file)
        out.append("### From the Hub\n\n" + hub_usage.gguf(a.repo_id, tag, a.repo_file, tag is not None))
    elif a.repo_id:
        out.append(hub_usage.transformers_and_vllm(a.repo_id, a.kind))
    for name in targets:
        t = serving.TARGETS[name]
        out.append(f"### {t.title}{' (experimental)' if t.experimental(a) else ''}\n\n{t.usage(a)}")
    api = serving.TARGETS[targets[0]].api_path if targets else "/v1"
    out.append(
        "### Query it\n\nEvery server above speaks the OpenAI API:\n\n```python\nfrom openai import OpenAI\n\n"
        f'client = OpenAI(base_url="http://127.0.0.1:{a.options["port"]}{api}", api_key="none")\n'
        f'reply = client.chat.completions.create(model="{a.served_model_name}", messages=[{{"role": '
        '"user", "content": "Hello!"}])\n'
        "print(reply.choices[0].message.content)\n```\n"
    )
    return "\n".join(out)


def _made(job: Any, calibration: dict[str, Any] | None) -> str:
    fence = "`" * max(
        3, 1 + max((len(r) for r in re.findall(r"`+", job.recipe_excerpt)), default=0)
    )  # no value can close it
    out = [
        "## How it was made\n",
        f"Recipe `{job.recipe_name}` (the parts that made this artifact):\n",
        f"{fence}yaml\n{job.recipe_excerpt}{fence}\n",
    ]
    if calibration:
        keys = ("source", "samples", "seq_len", "tokens", "seed", "chat_template", "packing")
        out.append("Calibration: " + ", ".join(f"{k} {calibration[k]}" for k in keys if k in calibration) + ".\n")
    else:
        out.append("Calibration: none (a data-free scheme).\n")
    if job.seeds:
        out.append("Seeds: " + ", ".join(f"{k} {v}" for k, v in job.seeds.items()) + ".\n")
    out.append(
        "| library | version |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in job.versions.items()) + "\n"
    )
    return "\n".join(out)


def _files(files: dict[str, dict[str, Any]]) -> str:
    rows = "\n".join(f"| {rel} | {f['size'] / 1e6:.1f} | `{f['sha256'][:16]}` |" for rel, f in files.items())
    return (
        "## Files\n\n`manifest.json` holds the full sha256 of every file.\n\n| file | MB "
        "| sha256 (first 16) |\n|---|---|---|\n" + rows + "\n"
    )


def gguf_tag(file: str) -> str | None:
    """The llama.cpp type a GGUF file name ends with (model-Q4_K_M.gguf -> Q4_K_M), None when the name is
    not one type alone (a per-tensor `type: auto` mix: model-auto-Q4_K_M.gguf)."""
    found = re.fullmatch(r"(?:.*?)-((?:I?Q\d\w*|F16|BF16|F32|TQ\d_\d))(?:-\d{5}-of-\d{5})?\.gguf", file)
    return None if not found or "-auto-" in file.lower() else found.group(1)
