"""Quantization and conversion pipeline: one YAML recipe in, evaluated and packaged artifacts out."""

__version__ = "0.1.0"
