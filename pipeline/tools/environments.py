"""Tool environments: a tool whose pins clash with ours (vLLM's CPU build, optimum-intel) runs from its
own venv, never imported into our process (Olive calls these "systems").

An environment is a declaration (`ToolEnv`: requirements, distributions to remove, metadata aliases, a
probe import) registered by name. Its venv lives under the pipeline cache in a directory keyed by that
declaration and this machine's Python and accelerator, is created on first use (or ahead of time by
`python -m pipeline setup NAME`) and reused after. Work runs in it as a child process over files.
A venv cannot be moved once built (its scripts name their own path), so it is built in place under a
lock and counts as ready only once its marker is written last: a crash mid-install leaves a directory
without a marker, which the next setup wipes and rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.fingerprint import cache_root
from pipeline.tools.processes import run_to_file

MARKER = "toolenv.json"
Report = Callable[[str], None]


def accelerator() -> str:
    """ "cuda" when this machine has an NVIDIA driver, else "cpu": picks the build a tool is installed as."""
    return "cuda" if Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") else "cpu"


@dataclass(frozen=True)
class ToolEnv:
    name: str  # what `setup NAME` and error messages call it
    requirements: tuple[str, ...]  # pip requirement lines, pinned exactly
    probe: str  # a module whose import proves the environment works
    remove: tuple[str, ...] = ()  # distributions pip pulls in that break it here (e.g. CUDA builds beside CPU torch)
    aliases: dict[str, str] = field(
        default_factory=dict
    )  # distribution name -> version: metadata-only entries a tool looks itself up by

    @property
    def key(self) -> str:
        blob = json.dumps(
            [self.requirements, self.remove, sorted(self.aliases.items()), sys.version_info[:2], platform.machine()]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def home(self) -> Path:
        return cache_root() / "envs" / f"{self.name}-{self.key}"

    @property
    def python(self) -> Path:
        return self.home / "bin" / "python"

    def ready(self) -> bool:
        return (self.home / MARKER).is_file()

    def info(self) -> dict:
        return json.loads((self.home / MARKER).read_text())

    def resolved(self) -> str:
        """What is installed, not only what was asked for: a digest of the environment's `pip freeze` (its
        transitive versions shape outputs too). Stage keys carry it; "" before the environment exists."""
        try:
            freeze = sorted(self.info().get("freeze", []))
        except (OSError, ValueError):
            return ""
        return hashlib.sha256(json.dumps(freeze).encode()).hexdigest()[:16]

    def setup_hint(self) -> str:
        return f"python -m pipeline setup {self.name}"

    @property
    def setup_log(self) -> Path:
        return self.home.parent / f"{self.home.name}-setup.log"

    def ensure(self, report: Report = lambda m: None, log=sys.stderr) -> ToolEnv:
        """Create the environment unless it is ready. Concurrent callers wait for one builder."""
        if self.ready():
            return self
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with open(self.home.parent / f".{self.home.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.ready():
                self._create(report, log)
        return self

    def _create(self, report: Report, log) -> None:
        start = time.monotonic()
        shutil.rmtree(self.home, ignore_errors=True)  # a half-built one from a crash
        report(f"{self.name}: creating a venv")
        run_to_file([_base_python(), "-m", "venv", str(self.home)], log)
        report(f"{self.name}: pip install {' '.join(self.requirements)}")
        run_to_file([str(self.python), "-m", "pip", "install", "--no-input", *self.requirements], log)
        if self.remove:
            report(f"{self.name}: removing {', '.join(self.remove)}")
            run_to_file([str(self.python), "-m", "pip", "uninstall", "-y", *self.remove], log)
        for dist, version in self.aliases.items():
            _alias(self.home, dist, version)
        report(f"{self.name}: checking `import {self.probe}`")
        run_to_file([str(self.python), "-c", f"import {self.probe}"], log)
        freeze = subprocess.run(
            [str(self.python), "-m", "pip", "freeze"], capture_output=True, text=True
        ).stdout.split()
        marker = {
            "name": self.name,
            "requirements": self.requirements,
            "seconds": round(time.monotonic() - start, 1),
            "freeze": freeze,
        }
        tmp = self.home / f".{MARKER}.tmp"
        tmp.write_text(json.dumps(marker, indent=2))
        os.replace(tmp, self.home / MARKER)


ENVS: dict[str, Callable[[], ToolEnv]] = {}  # name -> declaration for this machine (it may depend on the accelerator)


def register(name: str):
    def deco(fn: Callable[[], ToolEnv]) -> Callable[[], ToolEnv]:
        if name in ENVS:
            raise RuntimeError(f"tool environment {name!r} registered twice")
        ENVS[name] = fn
        return fn

    return deco


def get(name: str) -> ToolEnv:
    return ENVS[name]()


def _base_python() -> str:
    # Our own interpreter, not our venv's: the tool's venv must not see our site-packages.
    return getattr(sys, "_base_executable", None) or sys.executable


def _alias(home: Path, dist: str, version: str) -> None:
    """A metadata-only distribution, for tools that read their own version by a name their wheel lacks."""
    site = next(home.glob("lib/python*/site-packages"))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("llm-quant-pipeline (alias)\n")
    (info / "RECORD").write_text("")
