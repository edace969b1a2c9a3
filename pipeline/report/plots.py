"""The run's plot: quality (mean KLD vs the base model, log scale) against size on disk, one marker
shape per format family, decode speed as each point's label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKERS = "osD^v<>ph*XP"


def quality_vs_size(table: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r.get("family") or r["format"] for r in table))
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in (x for x in table if x["size_mb"] is not None and x["kld"] is not None):
        y = max(r["kld"], 1e-5)  # the base model sits at KLD 0: drawn at the axis floor
        marker = MARKERS[families.index(r.get("family") or r["format"]) % len(MARKERS)]
        ax.scatter(
            r["size_mb"],
            y,
            marker=marker,
            s=70,
            label=f"{r['artifact']} ({r['format']})",
            color="red" if r["gates"].startswith("FAILED") else None,
        )
        speed = (
            f"{r['tg_tps']:.1f} tok/s" + (" (noisy)" if "tg_tps" in (r.get("noisy") or []) else "")
            if r["tg_tps"]
            else ""
        )
        ax.annotate(speed, (r["size_mb"], y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("mean KL divergence vs base (nats/token, log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
