"""Roll a run back past a loss spike in the same process (callbacks/spike.py detects it; training/trainer.py's
fit catches it, calls :func:`roll_back`, and fits on).

Which samples are skipped. Batch N ends a spike that began at batch W (W = N for a non-finite loss or state; else
the first of the ``patience`` batches in a row over the threshold); E is the current epoch, B the global batch and
p(t) the position in epoch E's sample order (Streaming's, over all ranks) after batch t. The run goes back to the
newest checkpoint of epoch E saved after a batch S < W: weights, optimizer, schedulers, timestamp, RNG, the
callbacks' state, as Composer's own ``load_checkpoint`` restores them at start-up. The data position does not go
back: the samples ``[p(S), p(N) + skip_batches * B)`` are never trained on, i.e. those of batches S+1..N (which
led into the spike; an earlier rollback's range inside them included) and ``skip_batches`` batches more. Batch S+1
of the new trajectory trains on the samples from ``p(N) + skip_batches * B`` on; a range past the epoch's end ends
the epoch. The dataset keeps the difference between its position and the timestamp (upstream/streaming.py,
``resume_at``), so every later checkpoint resumes there.

Checkpoints after S are deleted before anything is loaded (they were saved inside the spike window, or on a
trajectory abandoned earlier) and ``latest`` names S: a kill at any point leaves only checkpoints of trajectories
that, replayed, take the same decisions. A spike with no checkpoint of epoch E before it, or past
``spike.max_rollbacks``, stops the run with a LossSpikeError, ``latest`` naming the last good checkpoint.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from composer.utils import dist

from callbacks.spike import SpikeDetected, SpikeRecovery
from core.errors import LossSpikeError
from training.resume import checkpoint_dir
from training.resume.checkpoints import checkpoints_in, point_latest, remove_checkpoint
from upstream.composer import load_into_live_trainer

if TYPE_CHECKING:
    from composer import Trainer

    from training.config import TrainConfig


def roll_back(trainer: Trainer, cfg: TrainConfig, spike: SpikeDetected) -> None:
    """Go back to the newest checkpoint before ``spike`` and skip its data (module docstring), or raise
    LossSpikeError when the run must stop."""
    state = trainer.state
    recovery = next(cb for cb in state.callbacks if isinstance(cb, SpikeRecovery))
    folder = checkpoint_dir(cfg)
    found = _target(folder, int(state.timestamp.epoch), spike.first_step)
    if found is None or folder is None:
        raise LossSpikeError(f"{spike}; no checkpoint of this epoch was saved before step {spike.first_step}, so "
                             "there is nothing to roll back to and training stopped. Save more often "
                             "(save_interval) or lower optimizer.lr, then re-run")
    target_batch, target = found
    _drop_after(folder, target_batch, target)
    if not recovery.may_roll_back():
        raise LossSpikeError(f"{spike}; spike.max_rollbacks={recovery.max_rollbacks} rollbacks are used up, so "
                             f"training stopped. latest is {target.name}, the last checkpoint before the spike; "
                             "lower optimizer.lr or raise spike.max_rollbacks, then re-run the same command")
    epoch, dataset = int(state.timestamp.epoch), state.train_dataloader.dataset
    spiked_at = _position(trainer)  # p(N), earlier skips of this epoch included
    rollbacks = list(recovery.rollbacks)  # the history survives the load, which brings back the callback's state
    load_into_live_trainer(trainer, str(target))
    start, end = _position(trainer), spiked_at + recovery.skip_batches * cfg.global_train_batch_size
    dataset.resume_at(epoch, end, int(state.timestamp.sample_in_epoch))
    record = _record(len(rollbacks) + 1, spike, target, int(state.timestamp.batch), epoch, start, end,
                     cfg.global_train_batch_size)
    recovery.rolled_back([*rollbacks, record])
    dist.barrier()
    if dist.get_global_rank() == 0:
        print(f"{spike}: rolled back to {target.name} (rollback {record['rollback']} of at most "
              f"{recovery.max_rollbacks}), skipping samples {start}..{end - 1} of epoch {epoch} "
              f"({record['skipped_batches']} batches)", flush=True)


def _target(folder: Optional[str], epoch: int, first_step: int) -> Optional[tuple[int, Path]]:
    """(batch, path) of the newest checkpoint of ``epoch`` saved after a batch before ``first_step``, as rank 0
    sees the folder (every rank must go to the same one)."""
    found = [None]
    if folder is not None and dist.get_global_rank() == 0:
        found = [next(((b, p) for e, b, p in checkpoints_in(folder) if e == epoch and b < first_step), None)]
    dist.broadcast_object_list(found)
    return found[0]


def _drop_after(folder: str, batch: int, target: Path) -> None:
    """Point ``latest`` at ``target`` (saved after ``batch``), then delete the checkpoints after it, newest first
    (rank 0; every rank waits)."""
    if dist.get_global_rank() == 0:
        point_latest(folder, target)
        for _, b, p in checkpoints_in(folder):
            if b > batch:
                remove_checkpoint(p)
    dist.barrier()


def _position(trainer: Trainer) -> int:
    """Where the train dataset stands in its epoch's sample order: the timestamp plus the samples skipped."""
    state = trainer.state
    return state.train_dataloader.dataset.state_dict(int(state.timestamp.sample_in_epoch), True)["sample_in_epoch"]


def _record(number: int, spike: SpikeDetected, target: Path, resumed_at: int, epoch: int, start: int, end: int,
            batch: int) -> dict[str, Any]:
    """One line of rollbacks.jsonl (a non-finite loss as a string: JSON has no NaN)."""
    return {
        "rollback": number, "step": spike.step, "first_step": spike.first_step,
        "loss": spike.loss if math.isfinite(spike.loss) else str(spike.loss),
        "reason": spike.reason, "checkpoint": target.name, "resumed_at": resumed_at, "epoch": epoch,
        "skipped_samples": [start, end], "skipped_batches": (end - start) // batch,
    }
