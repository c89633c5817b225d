"""Composer's console logger without the per-parameter gradient norms (they stay in metrics.jsonl / wandb), and the
cost of each evaluation."""
from __future__ import annotations

import time
from typing import Optional

from composer.core import Callback, State
from composer.loggers import ConsoleLogger, Logger
from composer.utils import dist

HIDDEN = ("l2_norm/grad/model.", "data/")  # per-parameter norms; per-sample records


class ConsoleSummaryLogger(ConsoleLogger):
    """Prints every ``log_interval`` what a person reads: loss, throughput, lr, global grad norm, eval."""

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if not k.startswith(HIDDEN)}, step)


class EvalCost(Callback):
    """What each evaluation costs: ``time/eval/<label>`` seconds (wall, this rank) for every evaluator, logged
    beside its metrics (metrics.jsonl, wandb, the console) and printed once by rank 0."""

    def __init__(self) -> None:
        self._start = 0.0

    def eval_start(self, state: State, logger: Logger) -> None:
        self._start = time.perf_counter()

    def eval_end(self, state: State, logger: Logger) -> None:
        seconds = time.perf_counter() - self._start
        logger.log_metrics({f"time/eval/{state.dataloader_label}": seconds})
        if dist.get_global_rank() == 0:
            print(f"eval {state.dataloader_label}: {seconds:.2f} s", flush=True)
