"""Scripts that run inside a tool environment (pipeline.tools.environments), started as `ENV_PYTHON path/to/script.py`.

They import only what their environment has (never `pipeline`: its pins are exactly what the tool's
clash with), take their orders as JSON and write their results into files or onto stdout as JSON."""
