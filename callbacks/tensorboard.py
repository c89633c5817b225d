"""TensorBoard beside metrics.jsonl: Composer's TensorboardLogger writing ``{run_dir}/tensorboard`` (rank 0 only).

Steps are keyed as in metrics.jsonl: point ``N`` holds what is known once batch N is done. (Composer tags a batch's
loss with the step *before* it and the monitors and the eval after it with the step after it; written as they come,
a resume's purge would either drop the eval of the checkpoint's step or keep one step's loss twice.) The metrics
of a step are held until ``BATCH_CHECKPOINT`` (after that step's eval, before its checkpoint is saved: loggers run
before the saver), then written and flushed into the same event file: a kill -9 loses no point that a checkpoint
covers, at the cost of one small write per step, as metrics.jsonl does.

Resume (or a loss-spike rollback's second ``fit``) from checkpoint N: the writer opens a new event file that starts
with TensorBoard's purge at step N + 1 (``SummaryWriter(purge_step=...)``: a ``SessionLog.START`` event), so
TensorBoard's readers drop what earlier files hold from step N + 1 on, which this run writes again. TensorBoard
shows one run, each step once. Only numbers are written (no text, lists or Composer's per-eval ``add_hparams``).

A tag logged again for a step already written (Composer re-logs the ``time/*`` counters at FIT_END, after the
last step's row; a resumed run redoes the epoch-end eval of a checkpoint on an epoch's last batch) is not written
twice: TensorBoard cannot replace a point, so it keeps the first value, where metrics.jsonl, which rewrites its
last row, keeps the last. A new tag for that step (an epoch-end eval) is written.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, Optional

import torch
from composer.core import State
from composer.loggers import Logger

from core.runs import read_metrics
from upstream.composer import TensorboardLoggerAtFitStart

TENSORBOARD_DIR = "tensorboard"  # inside the run folder


def scalar(value: Any) -> Optional[float]:
    """A number TensorBoard can plot, or None (text, lists, tensors of more than one element)."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item()) if value.numel() == 1 else None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "size", None) == 1:  # numpy scalars and 1-element arrays
        return scalar(value.item())
    return None


class TensorBoardLogger(TensorboardLoggerAtFitStart):
    """Rank 0 writes every numeric metric to ``log_dir`` at the step of the batch it describes."""

    def __init__(self, log_dir: str | os.PathLike, metrics_path: Optional[str | os.PathLike] = None):
        super().__init__(log_dir=str(log_dir), rank_zero_only=True)
        self.metrics_path = None if metrics_path is None else Path(metrics_path)
        self._pending: dict[str, float] = {}
        self._written: tuple[int, set[str]] = (-1, set())  # the last step written, and its tags

    def purge_step(self, state: State) -> int:
        return int(state.timestamp.batch) + 1  # the first step this fit (re)writes

    def fit_start(self, state: State, logger: Logger) -> None:
        super().fit_start(state, logger)
        self._pending = {}  # an abandoned batch's (a rollback): not written
        step = int(state.timestamp.batch)
        self._written = (step, self._tags_written_at(step))

    def _tags_written_at(self, step: int) -> set[str]:
        """The tags an earlier process (or fit) wrote for ``step``, the step this fit starts from, which the purge
        keeps: those of metrics.jsonl's row ``step`` (written at the same events, just before ours). A late metric
        of that step that this fit logs again (the epoch-end eval of a checkpoint on an epoch's last batch) is then
        not written twice."""
        if self.writer is None or step == 0 or self.metrics_path is None or not self.metrics_path.is_file():
            return set()
        return {tag for row in read_metrics(self.metrics_path) if row.get("step") == step for tag in row} - {"step"}

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        del step  # keyed by the batch in flight, see the module docstring
        if self.writer is None:
            return
        for tag, value in metrics.items():
            number = scalar(value)
            if number is not None:
                self._pending[tag] = number

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        self._write(state)

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        self._write(state)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._write(state)

    def close(self, state: State, logger: Logger) -> None:
        self._write(state)  # the FIT_END eval
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # Composer's flushes close the file (one event file per flush, staged for upload) and its eval_end writes
    # add_hparams into a new file under log_dir each eval; we flush in _write and keep the files in the run folder.
    def batch_end(self, state: State, logger: Logger) -> None:
        pass

    def epoch_end(self, state: State, logger: Logger) -> None:
        pass

    def eval_end(self, state: State, logger: Logger) -> None:
        pass

    def _write(self, state: State) -> None:
        if self.writer is None or not self._pending:
            return
        step = int(state.timestamp.batch)
        if self._written[0] != step:
            self._written = (step, set())
        pending = {tag: v for tag, v in self._pending.items() if tag not in self._written[1]}
        self._pending = {}
        self._written[1].update(pending)
        super().log_metrics(pending, step=step)  # Composer's: add_scalar per tag
        self.writer.flush()
