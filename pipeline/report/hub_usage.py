"""Copy-paste usage from the Hub, the way each tool loads a published repo: transformers and vLLM by repo
id, llama.cpp by `-hf REPO:TAG` (or `--hf-file` where a tag would be ambiguous), Ollama by `hf.co/REPO:TAG`."""

from __future__ import annotations

import re

SHARD = re.compile(r"-(\d{5}-of-\d{5})\.gguf$")


def gguf_repo_names(model: str, artifact: str, files: list[str]) -> list[str]:
    """A GGUF artifact's weight files as the model's one GGUF repo names them: {model}-{TYPE}.gguf (shards keep
    their -00001-of-00003 suffix), the type being the artifact's name (gguf-q4_k_m -> Q4_K_M, gguf-auto-q2_k ->
    AUTO-Q2_K), as llama.cpp and the Hub read a type from a file name."""
    tag = artifact.removeprefix("gguf-").upper()
    return [f"{model}-{tag}" + (f"-{m.group(1)}" if (m := SHARD.search(f)) else "") + ".gguf" for f in files]


def transformers_and_vllm(repo: str, kind: str) -> str:
    out = [
        "### From the Hub\n",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{repo}", device_map="auto")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n```\n',
    ]
    if kind == "compressed-tensors":
        out.append(f"```bash\nvllm serve {repo}\n```\n")
    return "\n".join(out)


def gguf(repo: str, tag: str, file: str, tag_is_unique: bool = True) -> str:
    """`tag`: the type as the Hub and llama.cpp read it from the file name (Q4_K_M); a file whose name holds
    another file's tag as well (AUTO-Q4_K_M beside Q4_K_M) is named whole instead."""
    if tag_is_unique:
        return f"```bash\nllama-server -hf {repo}:{tag}\nollama run hf.co/{repo}:{tag}\n```\n"
    return f"```bash\nllama-server --hf-repo {repo} --hf-file {file}\n```\n"
