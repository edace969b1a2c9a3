"""Ollama: a Modelfile that imports the GGUF, with a TEMPLATE that renders the same prompt as the
model's own chat template (checked by rendering both), its stop tokens and the context length."""

from __future__ import annotations

from pipeline.serving import Artifact, ServingTarget, register
from pipeline.serving.chat_templates import match


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ValueError('text for a Modelfile contains """')
    return f'"""{text}"""'


@register
class Ollama(ServingTarget):
    name = "ollama"
    title = "Ollama"

    def serves(self, a: Artifact) -> bool:
        return a.kind == "gguf" and a.gguf_shards <= 1  # Ollama imports single-file GGUFs only

    def files(self, a: Artifact) -> dict[str, str]:
        lines = [
            f"# Ollama Modelfile for {a.name}: from the package directory, `ollama create {a.served_model_name} "
            "-f serving/Modelfile`,",
            f"# then `ollama run {a.served_model_name}`. FROM is relative to this file.",
            f"FROM ../{a.gguf_file}",
        ]
        found = match(a.chat_template, a.special_tokens) if a.chat_template else None
        if found:
            family, system = found
            lines.append(
                f"# chat template: {family.name}, checked to render the same prompt as the model's own template"
            )
            lines.append(f"TEMPLATE {_quoted(family.go)}")
            if system:
                lines.append(f"SYSTEM {_quoted(system)}")
            lines += [f'PARAMETER stop "{s}"' for s in family.stop]
        else:
            lines.append(
                "# The model's chat template matches no template family known here: Ollama uses the "
                "one it detects in the GGUF."
            )
        lines.append(f"PARAMETER num_ctx {a.max_model_len}")
        return {"Modelfile": "\n".join(lines) + "\n"}

    def usage(self, a: Artifact) -> str:
        return (
            f"```bash\ncd {a.name}  # this directory\nollama create {a.served_model_name} -f serving/Modelfile\n"
            f"ollama run {a.served_model_name}\n```\n"
        )
