"""Composer's console logger without the per-parameter gradient norms (they stay in metrics.jsonl / wandb)."""
from __future__ import annotations

from typing import Optional

from composer.loggers import ConsoleLogger

HIDDEN = ("l2_norm/grad/model.", "data/")  # per-parameter norms; per-sample records


class ConsoleSummaryLogger(ConsoleLogger):
    """Prints every ``log_interval`` what a person reads: loss, throughput, lr, global grad norm, eval."""

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if not k.startswith(HIDDEN)}, step)
