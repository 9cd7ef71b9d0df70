"""Training log: one JSON object per line, and the loss plot drawn from it."""

from __future__ import annotations

import json
from pathlib import Path

from difflab.images import atomic_write


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(path: Path, step: int) -> None:
    """Drop entries after `step` (written after the checkpoint that a resume starts from)."""
    rows = [r for r in read_log(path) if r["step"] <= step]
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    atomic_write(path, lambda f: f.write(text))


def append_log(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def plot_loss(log_path: Path, out: Path) -> None:
    """Loss against step (raw and smoothed), on a log scale."""
    rows = read_log(log_path)
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    half = 4  # centred moving average over up to 9 logged points (no lag, unlike an exponential one)
    smooth = [sum(losses[max(0, i - half): i + half + 1]) / len(losses[max(0, i - half): i + half + 1])
              for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses, alpha=0.3, label="loss")
    ax.plot(steps, smooth, label="smoothed")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
