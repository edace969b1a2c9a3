"""Package stage, one per artifact: what a user ships. The artifact's files (hard-linked, not copied),
README.md (model card with Hub metadata), serving/ (one set of files per serving target) and
manifest.json (sha256 and size of every file, recipe excerpt, versions, seeds, timings)."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline import serving
from pipeline.backends import ct_auto, gguf_auto
from pipeline.checkpoints import moe, tensors
from pipeline.checkpoints.sources import gguf_metadata
from pipeline.files import MARKER, link_or_copy
from pipeline.fingerprint import ARGS, file_sha256
from pipeline.recipe import PackageSpec
from pipeline.report import card, hub_usage

# bump when the package's files change for the same inputs (2: Kubernetes object names; 3: licenses, context default; 4:
# vllm-cpu.yaml, serve check)
VERSION = 8  # 5: only weights hard-linked; 6: unquantized tensors and MoE offload in the card, llama-server "$@";
# 7: Hub usage and `datasets:` in the card, evaluation and datasets in manifest.json (the GGUF repo card reads them);
# 8: a GGUF card pulls its file by the name the model's GGUF repo gives it; how calibration reached the experts
# Not linked from the artifact: bookkeeping, llmcompressor's recipe.yaml (it does not load back: the card holds ours),
# and the
# files this stage writes itself (a linked README.md would be written through, into the quantize output).
# Large files a package shares with the cached artifact (hard links, read by engines, never written):
# weights of every format (safetensors, GGUF, OpenVINO IR). Everything else is copied.
WEIGHTS = (".safetensors", ".gguf", ".bin")
SKIP = {MARKER, "stage_info.json", "recipe.yaml", "README.md", "manifest.json"}
LICENSES = (
    "LICENSE*",
    "USE_POLICY*",
    "NOTICE*",
)  # the source's: licenses such as Llama's require a copy with every redistribution
DEFAULT_CONTEXT = (
    8192  # served context when the recipe names none: a 131072-token KV cache rarely fits next to the weights
)
MANIFEST = "manifest.json"
SERVE_CHECK = "serve_check.json"  # the serve-check stage's result (pipeline.stages.serve_check)


@dataclass
class PackageJob:
    """Everything the stage knows at plan time (part of its cache key through `config()`)."""

    recipe_name: str
    artifact: str
    format: str
    kind: str  # Backend.kind: what the artifact is on disk
    description: str
    tags: list[str]
    spec: PackageSpec
    recipe_excerpt: str  # the recipe's model, calibration and format entry, as YAML
    quantize_id: str
    versions: dict[str, str]
    repo_id: str | None = None
    evaluate_id: str | None = None
    floor_id: str | None = None  # the engine floor's evaluation, when the artifact's engine has one
    serve_check_id: str | None = None  # the artifact's vLLM serve check, when there is one
    bnb_quantize: str | None = None
    seeds: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)  # the calibration set's Hub dataset (card metadata)
    gguf_repo_model: str | None = None  # set when the artifact goes to the model's GGUF repo, which renames by it

    def config(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "recipe": self.recipe_name,
            "artifact": self.artifact,
            "kind": self.kind,
            "tags": self.tags,
            "spec": self.spec.model_dump(mode="json", exclude={"enabled"}),
            "excerpt": self.recipe_excerpt,
            "repo": self.repo_id,
            "datasets": self.datasets,
            "gguf_repo_model": self.gguf_repo_model,
        }

    def to_json(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "spec": self.spec.model_dump(mode="json")}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PackageJob:
        return cls(**{**value, "spec": PackageSpec.model_validate(value["spec"])})


def config(job: PackageJob) -> dict[str, Any]:
    """What shapes the package (PackageJob.config) and, unkeyed, the whole job."""
    return {**job.config(), ARGS: {"job": job.to_json()}}


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    return build(PackageJob.from_json(config[ARGS]["job"]), inputs, out, ctx)


def build(job: PackageJob, inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    artifact, targets, facts = assemble(job, inputs, out, ctx)
    evaluation = _evaluation(inputs, job)
    calibration = _json(inputs["calibration"] / "stats.json") if "calibration" in inputs else None
    serve_check = _json(inputs[job.serve_check_id] / SERVE_CHECK) if job.serve_check_id in inputs else None
    files = _hash_files(out, ctx)  # the weights and serving files; the card and this manifest come after
    license_ = job.spec.license or facts.get("license")
    # what type: auto chose, from the file the package carries (GGUF: types per tensor; compressed-tensors: schemes)
    chosen = next((out / f for f in (gguf_auto.CHOICE_FILE, ct_auto.CHOICE_FILE) if (out / f).is_file()), None)
    auto = {**_json(chosen), "file": chosen.name} if chosen else None
    (out / "README.md").write_text(
        card.render(
            job, artifact, targets, files, evaluation, calibration, license_, serve_check, auto, facts["weights"]
        )
    )
    files["README.md"] = {"size": (out / "README.md").stat().st_size, "sha256": file_sha256(out / "README.md")}
    manifest = {
        "artifact": job.artifact,
        "format": job.format,
        "description": job.description,
        "base_model": artifact.base_model,
        "license": license_,
        "repo_id": job.repo_id,
        "recipe": job.recipe_excerpt,
        "seeds": job.seeds,
        "versions": job.versions,
        "quantize_seconds": _json(inputs[job.quantize_id] / "stage_info.json").get("seconds"),
        "serving": targets,
        "serve_check": serve_check,
        "evaluation": evaluation,
        "datasets": job.datasets,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return {
        "files": len(files) + 1,
        "size_bytes": sum(f["size"] for f in files.values()),
        "serving": targets,
        "base_model": artifact.base_model,
        "license": license_,
        "repo_id": job.repo_id,
        "vllm": None if serve_check is None else serve_check.get("status"),
    }


def assemble(
    job: PackageJob, inputs: dict[str, Path], out: Path, ctx: Any, targets: list[str] | None = None
) -> tuple[serving.Artifact, list[str], dict[str, Any]]:
    """The package minus its card and manifest: the artifact's files (hard links), the source's licenses
    and serving/. Also what the serve check starts, so it starts exactly what the package says.
    Returns (what the serving configs were made from, the targets written, the source's facts)."""
    src, art = inputs["source"], inputs[job.quantize_id]
    ctx.status("linking the artifact's files")
    for p in sorted(art.rglob("*")):
        if p.is_file() and p.name not in SKIP:
            target = out / p.relative_to(art)
            if p.name.endswith(WEIGHTS):  # hard links: no second copy of the weights
                link_or_copy(p, target)
            else:  # a copy: editing a package's config or tokenizer must not rewrite the cached artifact
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, target)
    for pattern in LICENSES:
        for p in sorted(src.glob(pattern)):
            if p.is_file() and not (out / p.name).exists():
                shutil.copyfile(p, out / p.name)
    info = _json(art / "stage_info.json")
    facts = source_facts(src)
    base_model = job.spec.base_model or facts.get("base_model")
    config = _json(src / "config.json")
    ctx.status("reading tensor headers")
    stored, params = tensors.read(art), sum(t.numel for t in tensors.weights(tensors.read(src)))
    facts["weights"] = (
        {"params": params, "unquantized": tensors.grouped(tensors.unquantized(stored))} if stored else None
    )
    artifact = serving.Artifact(
        name=job.artifact,
        kind=job.kind,
        description=job.description,
        served_model_name=job.spec.serving.served_model_name or f"{job.recipe_name}-{job.artifact}",
        max_model_len=job.spec.serving.max_model_len
        or min(config.get("max_position_embeddings") or DEFAULT_CONTEXT, DEFAULT_CONTEXT),
        size_bytes=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        gguf_file=(info.get("files") or [None])[0] if job.kind == "gguf" else None,
        gguf_shards=len(info.get("files") or []),
        bnb_quantize=job.bnb_quantize,
        base_model=base_model,
        repo_id=job.repo_id,
        repo_file=_repo_file(job, (info.get("files") or [None])[0]),
        chat_template=facts.get("chat_template"),
        special_tokens=facts.get("special_tokens", {}),
        options=job.spec.serving.model_dump(mode="json"),
        experts=_experts(config, params, stored, info.get("experts")) if moe.is_moe(config) else None,
        kv_cache_dtype=_kv_cache_dtype(_json(art / "config.json")) if job.kind == "compressed-tensors" else None,
    )
    ctx.status("writing serving configs")
    return artifact, serving.write(artifact, out, job.spec.serving.targets if targets is None else targets), facts


def _kv_cache_dtype(config: dict[str, Any]) -> str | None:
    """ "fp8" when the checkpoint holds calibrated FP8 KV-cache scales (compressed-tensors' kv_cache_scheme)."""
    kv = (config.get("quantization_config") or {}).get("kv_cache_scheme") or {}
    return "fp8" if kv.get("type") == "float" and kv.get("num_bits") == 8 else None


def _experts(
    config: dict[str, Any], params: int, stored: list[tensors.Tensor], calibration: dict[str, Any] | None
) -> serving.Experts:
    per_layer = tensors.expert_bytes_per_layer(stored)
    return serving.Experts(
        total_params=params,
        active_params=moe.active_params(config, params),
        count=moe.experts(config),
        per_token=moe.per_token(config),
        bytes_per_layer=per_layer,
        other_bytes=sum(t.nbytes for t in stored) - sum(per_layer.values()),
        calibration=calibration,
    )


def publish_files(package: Path) -> list[Path]:
    """The files a package consists of (what goes to the Hub): everything but the stage's bookkeeping."""
    return sorted(p for p in package.rglob("*") if p.is_file() and p.name not in (MARKER, "stage_info.json"))


def _repo_file(job: PackageJob, gguf_file: str | None) -> str | None:
    """Where a GGUF package's file lies in its repo: renamed in the model's GGUF repo, as is in its own."""
    if job.kind != "gguf" or not gguf_file:
        return None
    return (
        hub_usage.gguf_repo_names(job.gguf_repo_model, job.artifact, [gguf_file])[0]
        if job.gguf_repo_model
        else gguf_file
    )


def source_facts(source: Path) -> dict[str, Any]:
    """License, base model and chat template of the source: its README front matter (Hub and local
    sources), or the metadata of the GGUF it came from."""
    info, tok = _json(source / "stage_info.json"), _json(source / "tokenizer_config.json")
    license_, base_model = _readme_license(source / "README.md"), info.get("repo")
    if info.get("gguf") and Path(info["gguf"]).is_file():
        meta = gguf_metadata(
            Path(info["gguf"]), ("general.license", "general.base_model.0.repo_url", "general.source.repo_url")
        )
        license_ = license_ or meta["general.license"]
        for url in (meta["general.base_model.0.repo_url"], meta["general.source.repo_url"]):
            found = re.match(r"https://huggingface\.co/([\w.-]+/[\w.-]+)/?$", url or "")
            base_model = base_model or (found.group(1) if found else None)
    template = source / "chat_template.jinja"
    return {
        "license": license_,
        "base_model": base_model,
        "chat_template": template.read_text() if template.is_file() else tok.get("chat_template"),
        "special_tokens": {k: _token(tok[k]) for k in ("bos_token", "eos_token") if tok.get(k)},
    }


def _readme_license(readme: Path) -> str | None:
    if not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard(readme.read_text()).data.to_dict().get("license")
    except Exception:
        return None


def _token(t: Any) -> str:
    return t.get("content", "") if isinstance(t, dict) else str(t)


def _evaluation(inputs: dict[str, Path], job: PackageJob) -> dict[str, Any] | None:
    if not job.evaluate_id or job.evaluate_id not in inputs:
        return None
    floor = _json(inputs[job.floor_id] / "metrics.json") if job.floor_id in inputs else None
    return {
        "artifact": _json(inputs[job.evaluate_id] / "metrics.json"),
        "base": _json(inputs["reference"] / "metrics.json"),
        "floor": floor,
    }


def _hash_files(out: Path, ctx: Any) -> dict[str, dict[str, Any]]:
    files = {}
    for p in publish_files(out):
        rel = str(p.relative_to(out))
        ctx.status(f"sha256 {rel}")
        files[rel] = {
            "size": p.stat().st_size,
            "sha256": file_sha256(p),
        }  # the weights are hard links to immutable outputs: remembered
    return files


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
