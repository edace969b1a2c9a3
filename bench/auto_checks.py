"""What bench/scale.py's `auto` part checks on each artifact it makes at 8B widths (issue 44): the bytes its
tensors take on disk against the uniform artifact's and the budget, what the quantize stage's own check found
(every Linear in its group's scheme, bytes as counted), and optionally that vLLM's CPU build starts it and
answers. Random weights: an answer shows the artifact loads and runs, not that it is any good."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.backends import ct_auto

_uniform_bytes: dict[str, int] = {}  # the uniform artifact's tensor bytes, measured before its files are deleted


def report(run_dir: Path, manifest: dict, serve: bool = False) -> None:
    for package in sorted((run_dir / "packages").iterdir()):
        if not package.is_dir() or package.name in _uniform_bytes:
            continue
        on_disk = ct_auto.tensor_bytes(package)
        choice_file = package / ct_auto.CHOICE_FILE
        if not choice_file.is_file():
            _uniform_bytes[package.name] = on_disk
            print(f"auto: {package.name}: tensors {on_disk / 1e9:.3f} GB (uniform)", flush=True)
            continue
        choice = json.loads(choice_file.read_text())
        stage = next(s for s in manifest["stages"] if s["id"] == f"quantize[{package.name}]")
        checked = stage["info"]["auto"]["stored"]
        uniform = next(iter(_uniform_bytes.values()), None)
        vs = f", {on_disk / uniform:.3f} x uniform" if uniform else ""
        print(
            f"auto: {package.name}: {choice['histogram']} groups; tensors {on_disk / 1e9:.3f} GB{vs}, budget "
            f"{choice['budget_bytes'] / 1e9:.3f} GB ({'within' if on_disk <= choice['budget_bytes'] else 'OVER'}); "
            f"stage check: {checked['linears_checked']} Linears stored in their group's scheme",
            flush=True,
        )
        if serve and "bf16" in choice["histogram"] and "w8a16" not in choice["histogram"]:
            _serve(package, run_dir)


def _serve(package: Path, run_dir: Path) -> None:
    from pipeline.tools import cpus, environments, vllm_server

    if not environments.get("vllm").ready() or "avx512f" not in cpus.flags():
        print("auto: vLLM-CPU check skipped: needs `python -m pipeline setup vllm` and AVX-512", flush=True)
        return
    name = yaml.safe_load((package / "serving" / "vllm-cpu.yaml").read_text())["served-model-name"]
    log = run_dir / f"{package.name}-vllm.log"
    result = vllm_server.serve_check(package, "vllm-cpu.yaml", name, log)
    said = result.get("reason") or result
    print(f"auto: {package.name} in {result['engine']}: {result['status']}, {said}", flush=True)
