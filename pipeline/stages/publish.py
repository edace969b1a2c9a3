"""Publish stage, one per artifact: create the Hub repo (private unless the recipe says otherwise) and
upload the package directory with huggingface_hub. The token is whatever huggingface_hub finds
(HF_TOKEN or the stored login); it is never read into our logs, manifests or cards.

A failed push changes nothing local: the package stays as it was and the stage can be rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import StageError
from pipeline.fingerprint import ARGS
from pipeline.recipe import PublishSpec
from pipeline.stages.package import publish_files

VERSION = 1
NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)"


def repo_id(spec: PublishSpec, recipe_name: str, model: str, artifact: str) -> str:
    return spec.repo_template.format(org=spec.org or "", model=model.split("/")[-1], format=artifact, name=recipe_name)


def listing(package: Path) -> list[tuple[str, int]]:
    """(path in the repo, size in bytes) of every file a push would upload."""
    return [(str(p.relative_to(package)), p.stat().st_size) for p in publish_files(package)]


def has_token() -> bool:
    from huggingface_hub import get_token

    return bool(get_token())


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
    return push(PublishSpec.model_validate(a["publish"]), config["repo"], inputs[a["package"]], out, ctx)


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
    try:
        ctx.status(f"uploading {len(files)} files to {repo}")
        commit = api.upload_folder(
            repo_id=repo,
            folder_path=package,
            repo_type="model",
            allow_patterns=[f for f, _ in files],
            commit_message=f"Upload {package.name} (llm-quant-pipeline)",
        )
    except Exception as e:
        raise StageError(
            f"push to {repo} failed: {_reason(e)} (the local package is unchanged; rerun to retry)"
        ) from None
    return {
        "repo": repo,
        "url": str(url),
        "commit": getattr(commit, "oid", None),
        "private": private,  # as read back from the Hub
        "files": len(files),
        "bytes": sum(s for _, s in files),
    }


def _reason(e: Exception) -> str:
    """The first line of the error, without anything that could carry a token (headers are never in it)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__
