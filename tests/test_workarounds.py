"""Each work-around in training/workarounds.py: the upstream behaviour it answers, and that ours avoids it."""
from __future__ import annotations

import pytest
from composer.core.engine import Engine
from composer.core.event import Event

from training.workarounds import skip_engine_debug_log


class _ExplodingTimestamp:
    """A timestamp whose every read fails: shows whether _debug_log touches it."""

    def __getattr__(self, name):
        raise RuntimeError("timestamp read")


class _FakeState:
    timestamp = _ExplodingTimestamp()


class _FakeTrainer:
    def __init__(self):
        self.engine = Engine.__new__(Engine)  # no state needed: we only call _debug_log
        self.engine.state = _FakeState()


def test_upstream_debug_log_formats_even_without_engine_debug(monkeypatch):
    monkeypatch.delenv("ENGINE_DEBUG", raising=False)
    engine = _FakeTrainer().engine
    with pytest.raises(RuntimeError, match="timestamp read"):
        engine._debug_log(Event.BATCH_END, "Running callback X")  # the bug: work done for a message never shown


def test_skip_engine_debug_log_makes_it_free(monkeypatch):
    monkeypatch.delenv("ENGINE_DEBUG", raising=False)
    trainer = _FakeTrainer()
    skip_engine_debug_log(trainer)
    trainer.engine._debug_log(Event.BATCH_END, "Running callback X")  # no timestamp read, no error


def test_engine_debug_keeps_upstream_logging(monkeypatch):
    monkeypatch.setenv("ENGINE_DEBUG", "1")
    trainer = _FakeTrainer()
    skip_engine_debug_log(trainer)
    with pytest.raises(RuntimeError, match="timestamp read"):
        trainer.engine._debug_log(Event.BATCH_END, "Running callback X")


def test_upstream_wandb_logger_breaks_autoresume_lookup(tmp_path, monkeypatch):
    from composer.loggers import WandBLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(RuntimeError, match="after running init"):  # autoresume catches only FileNotFoundError
        WandBLogger(project="x").download_file("latest-rank0.pt", str(tmp_path / "ckpt"))


def test_our_wandb_logger_reports_not_found(tmp_path, monkeypatch):
    from training.workarounds import WandBLoggerNoArtifacts

    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(FileNotFoundError):
        WandBLoggerNoArtifacts(project="x").download_file("latest-rank0.pt", str(tmp_path / "ckpt"))


def _live_dataset(tmp_path, shakespeare_text):
    from loaders.dataset import TokenSamples
    from tests.train_utils import make_dataset

    ds = make_dataset(tmp_path, shakespeare_text[:20_000], seq_len=32, val_fraction=0.0)
    dataset = TokenSamples(local=str(ds / "train"), batch_size=4)
    from pathlib import Path

    mine = {p.name for p in Path("/dev/shm").glob(f"{dataset._shm_prefix_int:06}_*")}
    assert mine, "StreamingDataset keeps its state in /dev/shm"
    return dataset, mine


def test_upstream_clean_stale_shared_memory_removes_a_live_runs_memory(tmp_path, shakespeare_text):
    from pathlib import Path

    from streaming.base.util import clean_stale_shared_memory

    dataset, mine = _live_dataset(tmp_path, shakespeare_text)
    clean_stale_shared_memory()  # the upstream function: unlinks every Streaming segment, live or not
    assert not any((Path("/dev/shm") / name).exists() for name in mine)
    del dataset


def test_our_cleaner_spares_live_memory_and_removes_dead(tmp_path, shakespeare_text):
    from pathlib import Path

    from loaders.shm import clean_stale_shared_memory

    dataset, mine = _live_dataset(tmp_path, shakespeare_text)
    stale = Path("/dev/shm") / "000999_barrier"
    stale.write_bytes(b"\0" * 8)  # what a SIGKILLed run leaves: a segment nobody maps
    removed = clean_stale_shared_memory()
    assert str(stale) in removed and not stale.exists()
    assert all((Path("/dev/shm") / name).exists() for name in mine)
    del dataset
