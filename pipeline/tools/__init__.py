"""Tools that run outside our process: tool environments (own venvs), the llama.cpp toolchain, the vLLM server,
optimum-intel, and the child scripts that run in those environments."""

import importlib

from pipeline import registry

for _name in registry.TOOL_ENVIRONMENTS:  # each registers its environment by name when imported
    importlib.import_module(f"pipeline.tools.{_name}")
