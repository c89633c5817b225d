"""upstream/streaming.py fixes 5 and 6: a damaged shard, and ``cache_limit`` over a local dataset. Each test first
shows Streaming 0.13.0's own behaviour, then ours."""
from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import pytest

from core.errors import DamagedShardError
from tests.helpers import one_error, run_train, tiny_args, wait_until


@pytest.fixture(scope="module")
def small(tmp_path_factory, shakespeare_text) -> Path:
    """A dataset of several small zstd shards (1 KB shard limit), no val."""
    from conversion.convert import convert
    from tests.helpers import paragraphs_jsonl

    root = tmp_path_factory.mktemp("small")
    src = paragraphs_jsonl(shakespeare_text[:30_000], root / "docs.jsonl")
    convert([str(src)], str(root / "ds"), "bytes", 32, val_fraction=0, size_limit=1 << 12, progress=False)
    return root / "ds"


def _damaged_copy(ds: Path, to: Path) -> Path:
    """A copy whose second shard has 64 bytes flipped in the middle (after conversion: its index still says what
    the shard held)."""
    shutil.copytree(ds, to)
    shard = sorted((to / "train").glob("shard.*.mds.zstd"))[1]
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    shard.write_bytes(bytes(data))
    return shard


def _damaged_shard_id(dataset, shard: Path) -> int:
    return next(i for i, s in enumerate(dataset.shards) if s.file_pairs[0][1].basename == shard.name)


def _small_cache_limit(ds: Path) -> int:
    """Room for 5 shards (raw + zip) of the many: Streaming's floor is 4."""
    shards = json.loads((ds / "train" / "index.json").read_text())["shards"]
    assert len(shards) > 10
    return 5 * max(s["raw_data"]["bytes"] + s["zip_data"]["bytes"] for s in shards)


def _read_all(dataset) -> int:
    return sum(1 for _ in dataset)


def _stuck_on(thread: threading.Thread, dataset, shard_id: int) -> bool:
    """``thread`` waits in ``prepare_shard`` for a shard left PREPARING after the prefetch thread died on it: a wait
    that nothing ends (see the next test)."""
    from streaming.base.dataset import _ShardState

    frame = sys._current_frames().get(thread.ident)
    return (frame is not None and frame.f_code.co_name == "prepare_shard" and dataset._event.is_set()
            and dataset._shard_states[shard_id] == _ShardState.PREPARING)


def test_upstream_damaged_shard_ends_the_epoch_early_without_an_error(small, tmp_path):
    """Which thread meets the damaged shard first is a race with three outcomes, and none is a line naming the
    shard: the compressor's own error, a short epoch, or (when the yield loop took a sample of the shard just before
    the prefetch thread's failure was flagged) a reader waiting forever."""
    from streaming import StreamingDataset
    from streaming.base.dataset import _ShardState

    shard = _damaged_copy(small, tmp_path / "ds")
    dataset = StreamingDataset(local=str(tmp_path / "ds"), split="train", shuffle=False, batch_size=1)
    shard_id = _damaged_shard_id(dataset, shard)
    outcome: dict = {}

    def read() -> None:
        try:
            outcome["read"] = _read_all(dataset)
        except Exception as e:  # noqa: BLE001 - the compressor's own error type
            outcome["error"] = e

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: not reader.is_alive() or _stuck_on(reader, dataset, shard_id), "the read's end", timeout=120)
    if reader.is_alive():  # the hang: let the reader prepare the shard again, so that it meets the error and ends
        dataset._shard_states[shard_id] = _ShardState.REMOTE
        reader.join(timeout=60)
        assert not reader.is_alive()
    if "error" in outcome:  # the reader reached the shard itself: the compressor's error, naming no shard or fix
        assert type(outcome["error"]).__module__ == "zstd", outcome["error"]
        assert str(shard) not in str(outcome["error"])
    else:  # the prefetch thread met it first: its error was only logged, and the yield loop just stopped
        assert outcome["read"] < dataset.num_samples, "upstream now reports a damaged shard: drop fix 5's __iter__"


def test_damaged_shard_is_one_error_naming_the_shard_and_verify(small, tmp_path):
    from upstream.streaming import PatchedStreamingDataset

    shard = _damaged_copy(small, tmp_path / "ds")
    dataset = PatchedStreamingDataset(local=str(tmp_path / "ds"), split="train", shuffle=False, batch_size=1)
    with pytest.raises(DamagedShardError, match=rf"shard {shard} is damaged \(its sha256 differs from the one "
                                                r"index.json recorded at conversion\); check the dataset with "
                                                rf"`python convert_to_mds.py --verify {tmp_path / 'ds'}`"):
        _read_all(dataset)


def test_upstream_failed_shard_stays_preparing_so_other_workers_wait_forever(small, tmp_path):
    """A shard whose preparation raised is left PREPARING in the shared state: every other worker that needs it
    waits for it (``while state == PREPARING: sleep``) forever."""
    from streaming import StreamingDataset
    from streaming.base.dataset import _ShardState

    shard = _damaged_copy(small, tmp_path / "ds")
    dataset = StreamingDataset(local=str(tmp_path / "ds"), split="train", shuffle=False, batch_size=1)
    shard_id = _damaged_shard_id(dataset, shard)
    with pytest.raises(Exception):  # noqa: B017 - the compressor's own error type
        dataset.prepare_shard(shard_id)
    assert dataset._shard_states[shard_id] == _ShardState.PREPARING


def test_failed_shard_is_released_so_every_reader_gets_the_error(small, tmp_path):
    from streaming.base.dataset import _ShardState

    from upstream.streaming import PatchedStreamingDataset

    shard = _damaged_copy(small, tmp_path / "ds")
    dataset = PatchedStreamingDataset(local=str(tmp_path / "ds"), split="train", shuffle=False, batch_size=1)
    shard_id = _damaged_shard_id(dataset, shard)
    for _ in range(2):  # the second reader (another worker) tries again and gets the same line, instead of waiting
        with pytest.raises(DamagedShardError, match=f"shard {shard} is damaged"):
            dataset.prepare_shard(shard_id)
        assert dataset._shard_states[shard_id] != _ShardState.PREPARING


@pytest.mark.slow
def test_training_on_a_damaged_shard_with_loader_workers_is_one_error_line(small, tmp_path):
    """With DataLoader workers upstream hangs (the next epoch's worker barrier); ours: one line, exit 2."""
    shard = _damaged_copy(small, tmp_path / "ds")
    proc = run_train(tiny_args(tmp_path / "ds", tmp_path / "runs", "run_name=dmg", "max_duration=20ba",
                               "data.num_workers=2", "eval_interval=1000ba"), check=False, timeout=240)
    one_error(proc, f"shard {shard} is damaged", "convert_to_mds.py --verify")


def _local_and_remote(small: Path, tmp_path: Path) -> list:
    """Stream A: a local dataset (no remote). Stream B: a remote one (a folder as Streaming's remote) and its cache."""
    from streaming import Stream

    shutil.copytree(small, tmp_path / "A")
    shutil.copytree(small, tmp_path / "B")
    return [Stream(local=str(tmp_path / "A")), Stream(remote=str(tmp_path / "B"), local=str(tmp_path / "cache"))]


def _read_in_order(dataset) -> None:
    """Every sample by id in this thread (stream A's, then B's): no prefetch thread, so what is evicted when is
    decided by the reads alone."""
    for sample_id in range(dataset.num_samples):
        dataset.get_item(sample_id)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_upstream_cache_limit_deletes_a_local_streams_dataset(small, tmp_path):
    from streaming import StreamingDataset

    streams = _local_and_remote(small, tmp_path)
    before = _files(tmp_path / "A" / "train")
    dataset = StreamingDataset(streams=streams, split="train", shuffle=False, batch_size=1,
                               cache_limit=2 * _small_cache_limit(small))
    _read_in_order(dataset)
    lost = [name for name in before if name not in _files(tmp_path / "A" / "train")]
    assert lost, "upstream no longer evicts a local dataset's shards: drop fix 6"


def test_cache_limit_with_a_local_stream_is_dropped_with_a_warning(small, tmp_path):
    from upstream.streaming import PatchedStreamingDataset

    streams = _local_and_remote(small, tmp_path)
    before = _files(tmp_path / "A" / "train")
    with pytest.warns(UserWarning, match=rf"data.cache_limit ignored: .* {tmp_path / 'A'} is a local dataset"):
        dataset = PatchedStreamingDataset(streams=streams, split="train", shuffle=False, batch_size=1,
                                          cache_limit=2 * _small_cache_limit(small))
    _read_in_order(dataset)
    assert not [name for name in before if name not in _files(tmp_path / "A" / "train")]
