"""Composer 0.32.1 on a mid-epoch resume with a StreamingDataset: the checkpoint's RNG state is loaded but never
put back (``Trainer._train_loop`` restores it only at ``batch_in_epoch == 0`` or while spinning the dataloader,
which a dataset that resumes itself skips). upstream.composer.RestoreRNGOnResume puts it back. In-process
Trainers built exactly as gpt_pile_composer.py builds them."""
from __future__ import annotations

from pathlib import Path

import pytest
from composer.core import Callback

from tests.helpers import tiny_args
from training.config import load_config
from upstream.composer import RestoreRNGOnResume

pytestmark = pytest.mark.slow


class _RNGPendingAtFirstBatch(Callback):
    """Records whether the trainer still holds an unrestored checkpoint RNG state when the first batch ends."""

    def __init__(self) -> None:
        self.trainer = None
        self.pending: bool | None = None

    def batch_end(self, state, logger) -> None:
        if self.pending is None:
            self.pending = self.trainer._rng_state is not None


def _trainer(ds: Path, runs: Path, *overrides: str, keep_ours: bool = True):
    from training.resume import prepare_resume
    from training.trainer import build_data, build_model, build_trainer, init_distributed, name_run, prepare_run_dir

    args = tiny_args(ds, runs, "model.dropout=0.1", "eval_interval=1000ba", "save_interval=2ba", *overrides)
    cfg = load_config(args[0], args[1:])
    device = init_distributed(cfg)
    autoresume = name_run(cfg)
    prepare_run_dir(cfg)
    data = build_data(cfg)
    model = build_model(cfg, data, prepare_resume(cfg, autoresume))
    trainer = build_trainer(cfg, model, data, device, autoresume)
    probe = _RNGPendingAtFirstBatch()
    probe.trainer = trainer
    trainer.state.callbacks.append(probe)
    if not keep_ours:
        trainer.state.callbacks[:] = [cb for cb in trainer.state.callbacks if not isinstance(cb, RestoreRNGOnResume)]
    return trainer, probe


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, dataset) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rng")
    ds = dataset
    trainer, _ = _trainer(ds, root / "runs", "run_name=first", "max_duration=2ba")
    trainer.fit()
    trainer.close()
    ckpt = root / "runs" / "first" / "checkpoints" / "ep0-ba2-rank0.pt"
    assert ckpt.is_file()
    return ds, ckpt


@pytest.mark.parametrize("keep_ours, pending", [(False, True), (True, False)], ids=["upstream", "ours"])
def test_upstream_mid_epoch_resume_never_restores_the_rng(checkpoint, tmp_path, keep_ours, pending):
    ds, ckpt = checkpoint
    trainer, probe = _trainer(ds, tmp_path / "runs", "run_name=second", "max_duration=3ba", f"load_path={ckpt}",
                              keep_ours=keep_ours)
    assert trainer.state.timestamp.batch_in_epoch == 2  # mid-epoch: the dataset resumes itself
    assert trainer._rng_state is not None  # the checkpoint's RNG state was loaded ...
    trainer.fit()
    trainer.close()
    assert probe.pending is pending  # ... and upstream still holds it, unapplied, after the first resumed batch
