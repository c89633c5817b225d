"""A Composer logger that writes every logged metric, one JSON line per step, to ``metrics.jsonl``.

Row ``step: N`` holds what is known once batch N is done: its loss, the monitors after it, and the eval run
after it. It is written at ``BATCH_CHECKPOINT`` (after eval, when checkpoint N is taken), so a kill loses no row
that a checkpoint covers. (Composer itself tags a batch's loss with the step *before* it; we key rows by the
batch they describe.) On resume from checkpoint N, rows past N are dropped first: the redone steps replace the
lost ones and the file holds each step once. A loss-spike rollback in the same process (a second ``fit``) does the
same from the checkpoint it went back to.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import torch
from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from core.files import write_atomic


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars to JSON numbers (NaN/inf as strings JSON can carry)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JSONLinesLogger(LoggerDestination):
    """Rank 0 appends ``{"step": N, name: value, ...}`` lines to ``path``."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self._row: dict[str, Any] = {}
        self._file = None
        self._last: tuple[int, int, dict[str, Any]] | None = None  # (step, file offset, row) of the last line

    def fit_start(self, state: State, logger: Logger) -> None:
        del logger
        if dist.get_global_rank() != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        step = int(state.timestamp.batch)
        if self._file is not None:  # fit again in this process (a loss-spike rollback): the rows after the
            self._file.close()      # checkpoint are redone, as on a resume, and the abandoned batch's row dropped
        self._row = {}
        truncate_after(self.path, step)
        self._file = open(self.path, "a", encoding="utf-8")
        self._last = _last_row(self.path, step)  # metrics for the resumed step (an epoch-end eval) merge into it

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        del step  # rows are keyed by the batch in flight, see the module docstring
        if self._file is not None:
            self._row.update({k: _plain(v) for k, v in metrics.items()})

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        self._write(int(state.timestamp.batch))

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        self._write(int(state.timestamp.batch))  # the epoch-end eval of the step just written: merged into its row

    def _write(self, step: int) -> None:
        if self._file is None or not self._row:
            return
        row = self._row
        if self._last is not None and self._last[0] == step:  # late metrics of a written step: merge
            _, offset, previous = self._last
            self._file.seek(offset)
            self._file.truncate()
            row = {**previous, **row}
        self._last = (step, self._file.tell(), row)
        self._file.write(json.dumps({"step": step, **row}) + "\n")
        self._file.flush()
        self._row = {}

    def fit_end(self, state: State, logger: Logger) -> None:
        self._write(int(state.timestamp.batch))

    def close(self, state: State, logger: Logger) -> None:
        self._write(int(state.timestamp.batch))
        if self._file is not None:
            self._file.close()
            self._file = None


def truncate_after(path: Path, step: int) -> None:
    """Keep only lines with ``step <= step`` (atomically): what a resumed run will not redo."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _line_step(line) <= step]
    write_atomic(path, "".join(line + "\n" for line in kept))


def _last_row(path: Path, step: int) -> tuple[int, int, dict[str, Any]] | None:
    """(step, byte offset, row) of the file's last line when it is row ``step``."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    if not data.strip():
        return None
    row = json.loads(data[start:])
    return (step, start, {k: v for k, v in row.items() if k != "step"}) if row.get("step") == step else None


def _line_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf  # a torn last line from a kill: drop it
