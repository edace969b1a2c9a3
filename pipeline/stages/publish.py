"""Publish stage: create the Hub repo (private unless the recipe says otherwise) and upload with
huggingface_hub's upload_folder: with hf_xet (the default) a streamed upload in as many commits as the
folder needs, which a rerun resumes (committed files are skipped, uploaded data deduplicated). It replaces
upload_large_folder, which huggingface_hub 1.33 deprecates. One stage per artifact uploads its package;
one stage for all GGUF artifacts uploads the model's GGUF repo, a file per type under `{model}-{TYPE}.gguf`
with one card for them all (publish.gguf_repo). What goes up is staged in the stage's own output as hard
links. The token is whatever huggingface_hub finds (HF_TOKEN or the stored login); it is never read into
our logs, manifests or cards.

A failed push changes nothing local: the package stays as it was and the stage can be rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.files import link_or_copy
from pipeline.fingerprint import ARGS
from pipeline.recipe import PublishSpec
from pipeline.report import gguf_card, hub_usage
from pipeline.stages.package import publish_files
from pipeline.tools import hub_progress

VERSION = 3  # 2: upload_large_folder from a staged folder; the GGUF repo; 3: upload_folder
NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)"


def repo_id(spec: PublishSpec, recipe_name: str, model: str, artifact: str, gguf: bool = False) -> str:
    """The artifact's Hub repo; a GGUF artifact's is the model's one GGUF repo unless gguf_repo is null."""
    template = spec.gguf_repo if gguf and spec.gguf_repo else spec.repo_template
    return template.format(org=spec.org or "", model=model.split("/")[-1], format=artifact, name=recipe_name)


def listing(package: Path) -> list[tuple[str, int]]:
    """(path in the repo, size in bytes) of every file a push would upload."""
    return [(str(p.relative_to(package)), p.stat().st_size) for p in publish_files(package)]


def has_token() -> bool:
    from huggingface_hub import get_token

    return bool(get_token())


def gguf_config(spec: PublishSpec, repo: str, model: str, packages: list[Any]) -> dict[str, Any]:
    """`packages`: the ids of the GGUF package stages whose weights go up, a file each."""
    return {
        "version": VERSION,
        "repo": repo,
        "private": spec.private,
        "model": model,
        ARGS: {"publish": spec.model_dump(mode="json"), "packages": [str(p) for p in packages]},
    }


def _gguf_weights(model: str, package: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A GGUF package's manifest and its weights as (file in the package, name in the GGUF repo)."""
    manifest = json.loads((package / "manifest.json").read_text())
    weights = sorted(f for f in manifest["files"] if f.endswith(".gguf"))
    return manifest, list(zip(weights, hub_usage.gguf_repo_names(model, manifest["artifact"], weights), strict=True))


def gguf_listing(model: str, packages: list[Path]) -> list[tuple[str, int]]:
    """(path in the GGUF repo, size) of every weight file a push of the GGUF repo would upload."""
    out = []
    for package in packages:
        manifest, weights = _gguf_weights(model, package)
        out += [(name, manifest["files"][f]["size"]) for f, name in weights]
    return out


def stage_gguf_repo(model: str, repo: str, packages: list[Path], folder: Path) -> Path:
    """The GGUF repo's files in `folder`: weights linked under their repo names, each package's manifest
    under manifests/, and the one card."""
    entries = []
    for package in packages:
        manifest, weights = _gguf_weights(model, package)
        for f, name in weights:
            link_or_copy(package / f, folder / name)
        link_or_copy(package / "manifest.json", folder / "manifests" / f"{manifest['artifact']}.json")
        entries.append((manifest, [name for _, name in weights]))
    (folder / "README.md").write_text(gguf_card.render(repo, model, entries))
    return folder


def config(spec: PublishSpec, repo: str, package: str) -> dict[str, Any]:
    """`package`: the id of the package stage whose output goes up."""
    return {
        "version": VERSION,
        "repo": repo,
        "private": spec.private,
        ARGS: {"publish": spec.model_dump(mode="json"), "package": package},
    }


def run(config: dict[str, Any], inputs: dict[str, Path], out: Path, ctx: Any) -> dict[str, Any]:
    a = config[ARGS]
    spec = PublishSpec.model_validate(a["publish"])
    if "packages" in a:  # the model's GGUF repo
        folder = stage_gguf_repo(config["model"], config["repo"], [inputs[p] for p in a["packages"]], out / "repo")
        return push(spec, config["repo"], folder, out, ctx)
    return push(spec, config["repo"], inputs[a["package"]], out, ctx)


def push(spec: PublishSpec, repo: str, package: Path, out: Path, ctx: Any, api: Any = None) -> dict[str, Any]:
    """`api`: an HfApi (default: one that reads HF_TOKEN or the login itself)."""
    if api is None:
        from huggingface_hub import HfApi

        if not has_token():
            raise StageError(NO_TOKEN)
        api = HfApi()
    files = listing(package)
    try:
        ctx.status(f"creating {repo} ({'private' if spec.private else 'public'})")
        url = api.create_repo(repo, private=spec.private, exist_ok=True, repo_type="model")
        # exist_ok keeps an existing repo as it is: a public one stays public under `private: true`.
        private = bool(api.repo_info(repo, repo_type="model").private)
    except Exception as e:
        raise StageError(f"push to {repo} failed: {_reason(e)} (nothing was uploaded; rerun to retry)") from None
    if private != spec.private:
        want, have = ("private", "public") if spec.private else ("public", "private")
        raise StageError(
            f"{repo} already exists and is {have}, the recipe says {want} (publish.private: {spec.private}); "
            f"nothing was uploaded: change the repo's visibility on the Hub or the recipe"
        )
    staged = out / "upload"
    for f, _ in files:  # links: the package's own files, never written through
        link_or_copy(package / f, staged / f)
    try:
        ctx.status(f"uploading {len(files)} files ({sum(s for _, s in files) / 1e6:,.0f} MB) to {repo}")
        with hub_progress.upload_status(ctx.status, f"uploading to {repo}"):
            commit = api.upload_folder(
                repo_id=repo, folder_path=staged, repo_type="model", commit_message=f"Upload {package.name}"
            ).oid
    except Exception as e:
        raise StageError(
            f"push to {repo} failed: {_reason(e)} (the local package is unchanged; rerun to resume)"
        ) from None
    return {
        "repo": repo,
        "url": str(url),
        "commit": commit,
        "private": private,  # as read back from the Hub
        "files": len(files),
        "bytes": sum(s for _, s in files),
    }


def _reason(e: Exception) -> str:
    """The first line of the error and the Hub's own message (huggingface_hub's HTTP errors put it on a later
    line), without anything that could carry a token (headers are never in it)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    server = " ".join(str(getattr(e, "server_message", "") or "").split())
    if server and server not in text:
        text = f"{text.rstrip(':')}: {server}" if text else server
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__
