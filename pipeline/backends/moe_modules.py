"""A loaded mixture-of-experts model's routers, found from its module structure rather than their names:
an experts container is a module list of alike modules that hold Linear layers (llm-compressor's linearized
experts, one per expert), and a router is a module beside it in the same block whose weight has one row per
expert (an nn.Linear to E outputs, or a custom router's (E, hidden) parameter). Routers stay unquantized:
a token's route depends on their exact logits, and transformers re-initialises a quantized router."""

from __future__ import annotations

from typing import Any


def experts_count(module: Any) -> int:
    """How many experts `module` holds when it is an experts container (its alike children that hold Linear
    layers; llm-compressor's container also holds the activation), else 0."""
    from collections import Counter

    import torch

    holding = [type(c) for c in module.children() if any(isinstance(m, torch.nn.Linear) for m in c.modules())]
    kind, count = Counter(holding).most_common(1)[0] if holding else (None, 0)
    return count if count >= 2 else 0


def routers(model: Any, experts: int) -> list[str]:
    """Names of the router modules of every MoE block (empty for a dense model). `experts`: routed experts
    per layer (the config's count): a container must hold that many, and hold no container itself (the
    decoder layers' list is alike modules with Linears too)."""
    named = dict(model.named_modules())
    containers = [n for n, m in named.items() if "." in n and experts_count(m) == experts > 1]
    containers = [n for n in containers if not any(o.startswith(f"{n}.") for o in containers)]
    found: list[str] = []
    for name in containers:
        count = experts
        block = name.rpartition(".")[0]
        for other, candidate in named[block].named_children():
            weight = getattr(candidate, "weight", None)
            if f"{block}.{other}" != name and getattr(weight, "ndim", 0) == 2 and weight.shape[0] == count:
                found.append(f"{block}.{other}")
    return sorted(set(found))
