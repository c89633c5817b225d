"""Loss curves from ``metrics.jsonl``: train loss (smoothed) and val loss per run, on one PNG."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from callbacks.jsonl_logger import read_metrics
from training.compare import TRAIN_KEY, ema

VAL_KEY = "metrics/val/LanguageCrossEntropy"


def plot_loss_curves(run_dirs: Sequence[str], out_png: str) -> str:
    """Write one figure with each run's train and val loss against step; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run_dir in run_dirs:
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
        name = os.path.basename(os.path.normpath(run_dir))
        train = [(r["step"], r[TRAIN_KEY]) for r in rows if isinstance(r.get(TRAIN_KEY), (int, float))]
        val = [(r["step"], r[VAL_KEY]) for r in rows if isinstance(r.get(VAL_KEY), (int, float))]
        if train:
            line, = ax.plot([s for s, _ in train], ema([v for _, v in train]), label=f"{name} train", alpha=0.8)
            if val:
                ax.plot([s for s, _ in val], [v for _, v in val], "o--", color=line.get_color(), label=f"{name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
