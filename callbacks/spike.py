"""Loss spikes and NaN: detect them, and hand the run to training/resume/rollback.py to go back past them.

llm-foundry's KillLossSpike only detects. Here a spike stops the batch loop (:class:`SpikeDetected`, raised at
BATCH_END, before that batch's eval and checkpoint), and the trainer rolls back to the newest checkpoint saved
before the spike, skips the data that led into it (PaLM's recipe) and trains on in the same process.

A spike is a non-finite loss, or a loss above ``median + threshold * MAD`` of the last ``window`` losses for
``patience`` batches in a row (judged only once the window is full). The loss is the one Composer has already
all-reduced over ranks (``state.total_loss_dict``): every rank holds the same float, so every rank decides alike
without another collective. A checkpoint is never written from non-finite weights or optimizer state:
:meth:`SpikeRecovery.guard` checks them when a save is due, across ranks, and turns a bad state into a spike.

The window, the streak and every rollback so far are this callback's state, saved in each checkpoint, so a run
killed after a rollback and re-run decides the same way. Each rollback is a row of ``{run_dir}/rollbacks.jsonl``
(rewritten at each start from the resumed state: it lists the rollbacks of the trajectory being trained) and the
metrics ``spike/*``, logged in the first row after the rollback (metrics.jsonl keeps one row per step of the
trajectory that survives) with the spike's own step (wandb's steps only go forward).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from composer.callbacks import CheckpointSaver
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

from core.files import write_atomic
from core.runs import ROLLBACKS_FILE

LOSS_KEY = "loss/train/total"
MAD_FLOOR = 0.01  # the MAD is at least this fraction of the median: a flat window must not flag noise


class SpikeDetected(Exception):
    """Control flow, not an error: batch ``step`` ends a spike that began at ``first_step``; training/trainer.py's
    fit catches it and rolls back."""

    def __init__(self, step: int, first_step: int, loss: float, reason: str):
        super().__init__(f"loss spike at step {step}: {reason}")
        self.step, self.first_step, self.loss, self.reason = step, first_step, loss, reason


def over_threshold(window: Sequence[float], loss: float, threshold: float) -> Optional[str]:
    """Why ``loss`` lies above ``median + threshold * MAD`` of ``window`` (robust to the spikes themselves), or
    None when it does not."""
    median = statistics.median(window)
    mad = max(statistics.median(abs(x - median) for x in window), MAD_FLOOR * abs(median))
    limit = median + threshold * mad
    if loss <= limit:
        return None
    return f"loss {loss:.4g} > {limit:.4g} (median {median:.4g} + {threshold:g} x MAD {mad:.3g})"


def state_is_finite(state: State) -> bool:
    """Whether every weight and every floating optimizer tensor is finite, on every rank (under FSDP each rank
    holds a shard). One sync: a flag per tensor, reduced on the device."""
    tensors = list(state.model.parameters())
    tensors += [t for opt in state.optimizers for per_param in opt.state.values() for t in per_param.values()
                if torch.is_tensor(t) and t.is_floating_point()]
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]  # FSDP2's DTensors: this rank's shard
    flag = torch.stack([torch.isfinite(t.detach()).all() for t in local]).all().to(torch.int32).reshape(1)
    if dist.get_world_size() > 1:
        dist.all_reduce(flag, reduce_operation="MIN")
    return bool(flag.item())


class SpikeRecovery(Callback):
    """Judges each batch's loss; raises :class:`SpikeDetected` on a spike. The rollback itself (which checkpoint,
    which samples to skip) is training/resume/rollback.py's; it reports back through :meth:`rolled_back`."""

    def __init__(self, window: int, threshold: float, patience: int, skip_batches: int, max_rollbacks: int,
                 run_dir: str | Path) -> None:
        self.window = window
        self.threshold = threshold
        self.patience = patience
        self.skip_batches = skip_batches
        self.max_rollbacks = max_rollbacks
        self.path = Path(run_dir) / ROLLBACKS_FILE
        self.losses: list[float] = []  # the trailing window, oldest first
        self.streak = 0  # batches in a row above the threshold, up to the last one
        self.rollbacks: list[dict[str, Any]] = []  # every rollback of this trajectory, oldest first
        self._pending: Optional[dict[str, Any]] = None  # the last rollback's metrics, for the next row

    # ---------------------------------------------------------------------------------------------- the decision

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._pending is not None:
            logger.log_metrics(rollback_metrics(self._pending), step=self._pending["step"])
            self._pending = None
        loss = (state.total_loss_dict or {}).get(LOSS_KEY)
        if loss is None:
            return
        step = int(state.timestamp.batch)
        reason = self.judge(float(loss))
        if reason is not None:
            raise SpikeDetected(step, step - self.streak + 1, float(loss), reason)

    def judge(self, loss: float) -> Optional[str]:
        """Take one batch's loss; the reason it ends a spike, or None. A non-finite loss is a spike at once."""
        if not math.isfinite(loss):
            self.streak += 1
            return f"non-finite loss ({loss})"
        over = over_threshold(self.losses, loss, self.threshold) if len(self.losses) >= self.window else None
        self.streak = self.streak + 1 if over else 0
        self.losses = [*self.losses, loss][-self.window:]
        if over is None or self.streak < self.patience:
            return None
        return over if self.patience == 1 else f"{over}, {self.streak} batches in a row"

    def guard(self, saver: CheckpointSaver) -> None:
        """Make ``saver`` check the state whenever it is about to save: a non-finite state is a spike at this batch
        instead of a checkpoint. (Composer has no event between deciding to save and saving; its public
        ``save_interval`` is that decision.)"""
        due: Callable[[State, Event], bool] = saver.save_interval  # type: ignore[assignment]

        def due_and_finite(state: State, event: Event) -> bool:
            if not due(state, event):
                return False
            if not state_is_finite(state):
                step = int(state.timestamp.batch)
                loss = float((state.total_loss_dict or {}).get(LOSS_KEY, math.nan))
                raise SpikeDetected(step, step, loss, "non-finite weights or optimizer state at a checkpoint")
            return True

        saver.save_interval = due_and_finite

    # ------------------------------------------------------------------------------------------------ the record

    def may_roll_back(self) -> bool:
        return len(self.rollbacks) < self.max_rollbacks

    def rolled_back(self, rollbacks: list[dict[str, Any]]) -> None:
        """After the trainer loaded the checkpoint (which brought back this callback's window and streak as they
        were then): keep the run's rollbacks, the new one last, and record it."""
        self.rollbacks = rollbacks
        self._pending = rollbacks[-1]
        self._write_records()

    def fit_start(self, state: State, logger: Logger) -> None:
        self._write_records()  # a resumed run lists the rollbacks of the trajectory it resumed

    def _write_records(self) -> None:
        if dist.get_global_rank() == 0 and (self.rollbacks or self.path.exists()):
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.rollbacks))

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "streak": self.streak, "rollbacks": list(self.rollbacks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state.get("losses", []))[-self.window:]
        self.streak = int(state.get("streak", 0))
        self.rollbacks = list(state.get("rollbacks", []))


def rollback_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """A rollback record as the ``spike/*`` metrics."""
    return {"spike/rollbacks": record["rollback"], "spike/loss": float(record["loss"]), "spike/step": record["step"],
            "spike/resumed_at": record["resumed_at"], "spike/skipped_batches": record["skipped_batches"]}
