"""Copy-paste usage from the Hub, the way each tool loads a published repo: transformers and vLLM by repo
id, llama.cpp by `-hf REPO:TAG` (or `--hf-file` where a tag would be ambiguous), Ollama by `hf.co/REPO:TAG`."""

from __future__ import annotations


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
