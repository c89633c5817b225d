"""Composer 0.32.1's TensorboardLogger opens its SummaryWriter at INIT on every rank (``rank_zero_only`` or not),
before autoresume loads the checkpoint, so its first event file can carry no purge step; ours
(``upstream.composer.TensorboardLoggerAtFitStart``) opens it at FIT_START on rank 0 only, with the purge, which
TensorBoard's own reader applies to the files before it."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from composer.loggers import TensorboardLogger
from composer.utils import dist

from upstream.composer import TensorboardLoggerAtFitStart


def _state(batch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(run_name="r", timestamp=SimpleNamespace(batch=batch))


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


def _view(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


class _PurgeAtBatch(TensorboardLoggerAtFitStart):
    def purge_step(self, state) -> int:
        return int(state.timestamp.batch) + 1


def test_upstream_tensorboard_logger_opens_an_event_file_on_every_rank_at_init(tmp_path, monkeypatch):
    monkeypatch.setattr(dist, "get_global_rank", lambda: 1)
    logger = TensorboardLogger(log_dir=str(tmp_path), rank_zero_only=True)
    logger.init(_state(), None)  # Event.INIT: Trainer.__init__ runs it before autoresume loads the checkpoint
    assert [p.parent for p in _files(tmp_path)] == [tmp_path / "r"]  # a rank that logs nothing has a file
    logger.writer.close()


@pytest.mark.parametrize("rank", [0, 1])
def test_ours_opens_the_writer_at_fit_start_on_rank_0_only(tmp_path, monkeypatch, rank):
    monkeypatch.setattr(dist, "get_global_rank", lambda: rank)
    logger = _PurgeAtBatch(log_dir=str(tmp_path))
    logger.init(_state(), None)
    assert logger.writer is None and not _files(tmp_path)
    logger.fit_start(_state(), None)
    assert len(_files(tmp_path)) == (1 if rank == 0 else 0)
    if logger.writer is not None:
        assert _files(tmp_path)[0].parent == tmp_path  # log_dir itself, not log_dir/run_name
        logger.writer.close()


def test_a_resumed_writer_purges_the_steps_it_redoes(tmp_path, monkeypatch):
    monkeypatch.setattr(dist, "get_global_rank", lambda: 0)
    first = _PurgeAtBatch(log_dir=str(tmp_path))
    first.fit_start(_state(0), None)
    for step in range(1, 8):  # a run killed after step 7, its last checkpoint at step 4
        first.writer.add_scalar("loss", float(step), global_step=step)
    first.writer.flush()  # the kill: no close
    resumed = _PurgeAtBatch(log_dir=str(tmp_path))
    resumed.fit_start(_state(4), None)  # purge from step 5 on
    for step in range(5, 10):
        resumed.writer.add_scalar("loss", 10.0 * step, global_step=step)
    resumed.writer.close()
    assert len(_files(tmp_path)) == 2
    assert _view(tmp_path, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0), (7, 70.0),
                                       (8, 80.0), (9, 90.0)]
    first.writer.close()
