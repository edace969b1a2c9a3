"""Chat template families that Ollama's Go templates can express, each with a Python rendering of its
Go template. A model's Jinja template is matched to a family by rendering both on probe conversations
and comparing the text, so a generated TEMPLATE is only used when it gives the same prompt."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Family:
    name: str
    go: str  # Ollama TEMPLATE (Go text/template over .Messages)
    render: Callable[[Messages], str]  # what `go` renders, with the generation prompt
    system_re: str  # pulls a default system prompt out of a rendering with no system message
    stop: tuple[str, ...]


def _chatml(msgs: Messages) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs) + "<|im_start|>assistant\n"


def _llama3(msgs: Messages) -> str:
    return (
        "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in msgs)
        + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


FAMILIES = (
    Family(
        "chatml",
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        _chatml,
        r"^<\|im_start\|>system\n(.*?)<\|im_end\|>\n",
        ("<|im_start|>", "<|im_end|>"),
    ),
    Family(
        "llama3",
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        _llama3,
        r"^<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
        ("<|start_header_id|>", "<|eot_id|>"),
    ),
)

PROBE = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a color."},
]
SYSTEM = {"role": "system", "content": "Be brief."}


def render_jinja(template: str, msgs: Messages, special: dict[str, str]) -> str:
    """The model's template as transformers renders it (sandboxed Jinja, trim/lstrip blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=msgs, add_generation_prompt=True, **special)


def match(template: str, special: dict[str, str]) -> tuple[Family, str | None] | None:
    """(family, default system prompt or None) whose Go template renders what the Jinja one does, or None.

    The Jinja text may start with one BOS more: llama.cpp adds BOS itself when it tokenizes."""
    bos = special.get("bos_token") or ""

    def same(family_text: str, jinja_text: str) -> bool:
        return family_text == jinja_text or bool(bos) and jinja_text == bos + family_text

    try:
        with_system, without = render_jinja(template, [SYSTEM, *PROBE], special), render_jinja(template, PROBE, special)
    except Exception:
        return None
    for fam in FAMILIES:
        if not same(fam.render([SYSTEM, *PROBE]), with_system):
            continue
        if same(fam.render(PROBE), without):
            return fam, None
        for text in (without, without[len(bos) :] if bos and without.startswith(bos) else without):
            found = re.match(fam.system_re, text, re.S)
            if found and same(fam.render([{"role": "system", "content": found.group(1)}, *PROBE]), without):
                return fam, found.group(1)
    return None
