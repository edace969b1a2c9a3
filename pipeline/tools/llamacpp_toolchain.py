"""The llama.cpp toolchain: built once per machine from the source PyPI ships, then found by every run.

PyPI has no usable llama.cpp binaries for this platform, but the `llama-cpp-python` sdist vendors the
full llama.cpp source with its HF-to-GGUF converter. `python -m pipeline setup llama-cpp` builds the
tools we need (quantize, imatrix, perplexity, server, bench, gguf-split) and the shared libraries
from that one source tree, installs llama-cpp-python without compiling it a second time, and points
it at those libraries, so the Python bindings and the tools are the same llama.cpp.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import RecipeError
from pipeline.fingerprint import cache_root
from pipeline.tools import cpus
from pipeline.tools.processes import dies_with_parent, run_to_file, stop

VERSION = "0.3.36"  # llama-cpp-python sdist; its vendor/llama.cpp is the llama.cpp we build
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-server", "llama-bench", "llama-gguf-split")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # else the build downloads the web UI
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib",
)
# -march=native turns on llama.cpp's AMX kernels wherever the CPU advertises AMX, but a VM can advertise it
# without enabling the tile state: every matmul then dies with SIGILL at `tilezero` (a Sapphire Rapids VM here,
# 2026-12). Where AMX is advertised the build leaves it out; the AVX512-VNNI kernels serve instead.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
MARKER = "toolchain.json"
SETUP_HINT = "python -m pipeline setup llama-cpp"


def _cpu_flags() -> str:
    # GGML_NATIVE compiles for this CPU: a build must not be reused on a CPU lacking its instructions.
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def cmake_flags() -> tuple[str, ...]:
    if "amx_tile" in _cpu_flags().split():
        return (*CMAKE_FLAGS, f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}")
    return CMAKE_FLAGS


def build_key() -> str:
    blob = json.dumps([VERSION, cmake_flags(), TOOLS, platform.machine(), sys.platform, _cpu_flags()])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def home() -> Path:
    return cache_root() / f"llama.cpp-{VERSION}-{build_key()}"


@dataclass(frozen=True)
class Toolchain:
    root: Path

    def tool(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def converter(self) -> Path:
        return self.root / "convert" / "convert_hf_to_gguf.py"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    def architectures(self) -> set[str]:
        """HF architectures the converter maps, read from its source without importing it."""
        tree = ast.parse((self.converter.parent / "conversion" / "__init__.py").read_text())
        for node in ast.walk(tree):
            target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
            if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and isinstance(node.value, ast.Dict):
                return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        raise RuntimeError(f"no TEXT_MODEL_MAP in {self.converter.parent}/conversion/__init__.py")


def find() -> Toolchain | None:
    root = home()
    return Toolchain(root) if (root / MARKER).is_file() else None


def require() -> Toolchain:
    chain = find()
    if chain is None:
        raise RecipeError(
            f"GGUF formats need llama.cpp's tools, not built on this machine yet: run `{SETUP_HINT}` "
            f"(builds llama.cpp from llama-cpp-python {VERSION}'s source once, about 10 minutes on 2 cores)"
        )
    return chain


LIBS_OF = ".toolchain-key"  # in llama-cpp-python's lib/: the build its libraries were copied from


def bindings_ready() -> bool:
    """llama-cpp-python importable and loading the libraries of this machine's build (checked in a child:
    a failed dlopen cannot be undone)."""
    probe = (
        f"import llama_cpp, pathlib, sys; lib = pathlib.Path(llama_cpp.__file__).parent / 'lib' / {LIBS_OF!r}; "
        f"ours = lib.is_file() and lib.read_text() == {build_key()!r}; "
        f"sys.exit(0 if llama_cpp.__version__ == {VERSION!r} and ours else 3)"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


Report = Callable[[str, int | None, int | None], None]  # (what, done, total)


def setup(jobs: int | None = None, report: Report = lambda *a: None, log=sys.stderr) -> Toolchain:
    """Build the toolchain if missing (atomically: a half-built one is never found), then install the bindings."""
    root = home()
    if not (root / MARKER).is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=".build-") as tmp:
            sdist = _download(root.parent, report, log)
            _build(sdist, Path(tmp), jobs or cpus.count(), report, log)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(Path(tmp) / "toolchain", root)
    chain = Toolchain(root)
    if not bindings_ready():
        _install_bindings(chain, report, log)
    return chain


def _download(cache: Path, report: Report, log) -> Path:
    sdist = cache / f"llama_cpp_python-{VERSION}.tar.gz"
    if not sdist.is_file():
        report(f"downloading llama-cpp-python {VERSION} source", None, None)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            run_to_file(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"llama-cpp-python=={VERSION}",
                    "-d",
                    tmp,
                ],
                log,
            )
            os.replace(next(Path(tmp).glob("*.tar.gz")), sdist)
    return sdist


def _build(sdist: Path, tmp: Path, jobs: int, report: Report, log) -> None:
    report("unpacking source", None, None)
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
    src = next(tmp.glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
    build = tmp / "build"
    report("configuring llama.cpp", None, None)
    cmake, ninja = _build_tool("cmake"), _build_tool("ninja")
    run_to_file(
        [cmake, "-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *cmake_flags()], log
    )
    proc = subprocess.Popen(
        [ninja, "-C", str(build), f"-j{jobs}", *TOOLS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=dies_with_parent(),
    )
    try:
        for line in proc.stdout:  # ninja prints "[done/total] ..." per compile step: drives the progress bar
            log.write(line)
            m = re.match(r"\[(\d+)/(\d+)\]", line)
            if m:
                report("compiling llama.cpp", int(m.group(1)), int(m.group(2)))
    except BaseException:
        stop(proc, grace=2)
        raise
    if proc.wait():
        raise RuntimeError(f"llama.cpp build failed (exit {proc.returncode}); see the log above")
    collect(src, build, tmp / "toolchain")


def collect(src: Path, build: Path, out: Path) -> None:
    """Lay out the toolchain from a finished build: bin/, lib/, convert/ and the marker."""
    (out / "bin").mkdir(parents=True)
    (out / "lib").mkdir()
    for tool in TOOLS:
        shutil.copy2(build / "bin" / tool, out / "bin" / tool)
    for lib in (build / "bin").glob("lib*.so*"):  # libllama.so -> libllama.so.0 -> ...: keep the links as links
        shutil.copy2(lib, out / "lib" / lib.name, follow_symlinks=False)
    (out / "convert").mkdir()
    shutil.copy2(src / "convert_hf_to_gguf.py", out / "convert")
    for folder in ("conversion", "gguf-py"):  # the converter needs its own gguf-py, newer than PyPI's
        shutil.copytree(src / folder, out / "convert" / folder)
    shutil.copy2(src / "LICENSE", out / "LICENSE")
    (out / MARKER).write_text(
        json.dumps({"llama_cpp_python": VERSION, "cmake": cmake_flags(), "tools": TOOLS}, indent=2)
    )


def _build_tool(name: str) -> str:
    """cmake/ninja from this environment (the `gguf` extra installs them from PyPI), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        raise RuntimeError(
            f"building llama.cpp needs {name} and a C++ compiler: pip install 'llm-quant-pipeline[gguf]' (cmake, ninja)"
        )
    return found


def _install_bindings(chain: Toolchain, report: Report, log) -> None:
    """pip-install llama-cpp-python without its own compile (unless it is there), then give it our libraries."""
    version = subprocess.run(
        [sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True, text=True
    )
    if version.stdout.strip() != VERSION:
        report("installing llama-cpp-python (bindings only)", None, None)
        sdist = chain.root.parent / f"llama_cpp_python-{VERSION}.tar.gz"
        env = {**os.environ, "CMAKE_ARGS": "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"}
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            f"llama-cpp-python[server] @ {sdist.as_uri()}",
        ]
        run_to_file(command, log, env)
    report("giving llama-cpp-python this build's libraries", None, None)
    spec = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; print(u.find_spec('llama_cpp').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = Path(spec) / "lib"
    target.mkdir(exist_ok=True)
    for lib in chain.lib.iterdir():
        (target / lib.name).unlink(missing_ok=True)
        shutil.copy2(lib, target / lib.name, follow_symlinks=False)
    (target / LIBS_OF).write_text(build_key())
    if not bindings_ready():
        raise RuntimeError(f"llama-cpp-python {VERSION} installed but does not load the libraries in {target}")


def count_tokens(gguf: Path, text: str) -> int:
    """Tokens of `text` as llama-imatrix and llama-perplexity make them (its tokenizer, BOS added, special tokens
    parsed)."""
    from llama_cpp import Llama

    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        return len(vocab.tokenize(text.encode(), add_bos=True, special=True))
    finally:
        vocab.close()
