"""Work-arounds for behaviour of the pinned Composer 0.32.1 that gets no more releases; each names the issue.

Each is applied to one Trainer instance (no global monkeypatching) and has a test in tests/test_workarounds.py
that shows the upstream behaviour.
"""
from __future__ import annotations

import os

from composer import Trainer
from composer.core import Callback, State
from composer.loggers import Logger, WandBLogger
from composer.utils import dist as composer_dist
from composer.utils import reproducibility


def skip_engine_debug_log(trainer: Trainer) -> None:
    """Composer 0.32.1 bug: Engine._debug_log formats a timestamp string for every callback of every event even
    when ENGINE_DEBUG is unset (~100 calls a step, ~1 ms a step on CPU); make it a no-op unless ENGINE_DEBUG is set."""
    if not os.environ.get("ENGINE_DEBUG"):
        trainer.engine._debug_log = lambda event, msg: None  # type: ignore[method-assign]


class WandBLoggerNoArtifacts(WandBLogger):
    """Composer 0.32.1 bug: autoresume asks every logger for the latest checkpoint before wandb.init, and
    WandBLogger.download_file then raises RuntimeError (autoresume only skips FileNotFoundError), so the first
    autoresume run with wandb crashes. We never store checkpoints as wandb artifacts: say "not found"."""

    def download_file(self, remote_file_name: str, destination: str, overwrite: bool = False,
                      progress_bar: bool = True) -> None:
        raise FileNotFoundError(f"{remote_file_name}: checkpoints are not kept in wandb")


class RestoreRNGOnResume(Callback):
    """Composer 0.32.1 bug: on a mid-epoch resume with dataset resumption (a StreamingDataset), _train_loop never
    restores the checkpoint's RNG state (only at batch_in_epoch == 0 or while spinning), so dropout differs from
    the uninterrupted run; restore it where the uninterrupted run stood when it saved.

    A checkpoint on an epoch's last batch resumes into an empty rest-of-epoch: restore at its EPOCH_END, before
    the epoch-end eval and the next epoch's dataloader iterator draw from the RNG, as the uninterrupted run did
    after saving. Otherwise restore at the first BATCH_START (the resumed epoch's iterator has drawn its seed by
    then, as it had in the uninterrupted run).
    """

    def __init__(self) -> None:
        self.trainer: Trainer | None = None

    def epoch_end(self, state: State, logger: Logger) -> None:
        self._restore()

    def batch_start(self, state: State, logger: Logger) -> None:
        self._restore()

    def _restore(self) -> None:
        if self.trainer is not None and self.trainer._rng_state is not None:
            reproducibility.load_rng_state(self.trainer._rng_state)
            self.trainer._rng_state = None
        self.trainer = None  # once per fit


def restore_rng_on_resume(trainer: Trainer) -> None:
    """Hand the trainer to its RestoreRNGOnResume callback (the callback must exist before the trainer)."""
    for cb in trainer.state.callbacks:
        if isinstance(cb, RestoreRNGOnResume):
            cb.trainer = trainer


class MarkEpochEnds(Callback):
    """Tell the train dataset when an epoch ended, for TokenSamples.state_dict's epoch-end fix (loaders/dataset.py):
    Composer 0.32.1 checkpoints an epoch end as (finished epoch, sample 0) of a StreamingDataset."""

    def epoch_end(self, state: State, logger: Logger) -> None:
        self._set(state, True)

    def epoch_start(self, state: State, logger: Logger) -> None:
        self._set(state, False)

    @staticmethod
    def _set(state: State, finished: bool) -> None:
        dataset = getattr(state.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch_finished"):
            dataset.set_epoch_finished(finished)


def per_node_signal_files() -> None:
    """Composer 0.32.1 bug: dist.get_node_signal_file_name broadcasts rank 0's name ('._signal_file_node0_…') to every
    node, so nodes sharing a save folder (NFS, Lustre) create and delete the same file during autoresume and one
    crashes with FileNotFoundError; give each node its own name. Process-wide and idempotent."""
    if getattr(composer_dist.get_node_signal_file_name, "per_node", False):
        return
    upstream = composer_dist.get_node_signal_file_name

    def node_signal_file_name(rng=None) -> str:
        return f"{upstream(rng)}-node{composer_dist.get_node_rank()}"

    node_signal_file_name.per_node = True  # type: ignore[attr-defined]
    composer_dist.get_node_signal_file_name = node_signal_file_name
