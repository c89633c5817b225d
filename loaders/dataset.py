"""Serve packed token samples from a converted dataset with Streaming, as Composer ``DataSpec``s.

A dataset root (local folder or remote URL) holds ``metadata.json``, ``tokenizer/`` and one MDS folder per split.
Several roots can be mixed as weighted ``streams``; they must agree on tokenizer and sequence length.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from composer.core import DataSpec
from streaming import Stream, StreamingDataset
from torch.utils.data import DataLoader

from core.errors import MetadataError, OptionError, RemoteError
from core.metadata import METADATA_FILE, TOKENIZER_DIR, DatasetMetadata, read_metadata
from core.remote import download_file, endpoint, is_remote, list_keys
from loaders.shm import registering_shared_memory
from core.tokenizer import Tokenizer, load_tokenizer
from core.streams import StreamSource

if TYPE_CHECKING:
    from filelock import BaseFileLock

ROOT_LOCK = ".root_files.lock"
READY_AHEAD_LOCAL = 4096  # samples the ready thread may run ahead over local shards (see _ready_thread)


@dataclass
class LoaderSettings:
    """Streaming knobs that matter for determinism and throughput."""

    shuffle: bool = True
    shuffle_seed: int = 9176
    num_canonical_nodes: Optional[int] = None
    shuffle_algo: str = "py1e"
    shuffle_block_size: Optional[int] = None
    predownload: Optional[int] = None
    cache_limit: Optional[str] = None
    num_workers: int = 0


class BoundedCacheDataset(StreamingDataset):
    """A StreamingDataset whose ``cache_limit`` holds while shards download concurrently.

    Streaming 0.13.0 bug (``StreamingDataset.prepare_shard``): the room check (``cache_usage + shard size <=
    cache_limit``) is made under the cache lock, but the shard's bytes are only counted once its download ends, so
    downloads running at the same time (the prefetch thread and the reading thread of each worker, of each rank on
    the node) all see the same free room and together overshoot the limit. Here a download reserves its shard's
    full size (raw + zip) before the lock is released, the reservation becomes the real size when it lands, and a
    downloader that finds the room held by other downloads waits for them instead of failing.
    Only the ``REMOTE`` branch differs from upstream; the others are upstream's, restated so that the state is
    read and acted on under one hold of the lock.
    """

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        from streaming.base.constant import TICK
        from streaming.base.dataset import _ShardState

        if not self.cache_limit:
            return super().prepare_shard(shard_id, blocking)
        lock = self._cache_lock()
        lock.acquire()
        while True:  # PREPARING always means "room reserved, download running": waiters stay REMOTE
            state = self._shard_states[shard_id]
            if state == _ShardState.REMOTE:
                reserved = self.shards[shard_id].get_max_size()
                if not self._make_room(reserved):
                    lock.release()  # only downloads in flight hold the room: let them land, then look again
                    time.sleep(TICK)
                    lock.acquire()
                    continue
                try:
                    self._shard_states[shard_id] = _ShardState.PREPARING
                    self.cache_usage += reserved
                    self._download_reserved(shard_id, reserved, lock)
                finally:
                    lock.release()
            elif state == _ShardState.PREPARING:  # someone else is downloading it: as upstream, maybe wait
                lock.release()
                while blocking and self._shard_states[shard_id] == _ShardState.PREPARING:
                    time.sleep(TICK)
            elif state == _ShardState.LOCAL:
                self._touch_local(shard_id, lock)
                lock.release()
            else:
                lock.release()
                raise RuntimeError(f"Invalid shard state: {state}")
            return

    def _touch_local(self, shard_id: int, lock: BaseFileLock) -> None:
        """Upstream's LOCAL branch: decompress if only the zip is there (counting the change), mark it used."""
        from streaming.base.dataset import _ShardState

        stream, shard = self.streams[self.stream_per_shard[shard_id]], self.shards[shard_id]
        raw_info, _ = shard.file_pairs[0]
        if not os.path.isfile(os.path.join(stream.local, stream.split, raw_info.basename)):
            self._shard_states[shard_id] = _ShardState.PREPARING
            lock.release()
            delta = stream.prepare_shard(shard)
            lock.acquire()
            self._shard_states[shard_id] = _ShardState.LOCAL
            self.cache_usage += delta
        self._shard_access_times[shard_id] = time.time_ns()

    def _cache_lock(self) -> BaseFileLock:
        from filelock import FileLock
        from streaming.base.constant import CACHE_FILELOCK

        if not hasattr(self, CACHE_FILELOCK):  # as upstream: created lazily (not picklable)
            self._cache_filelock = FileLock(self._cache_filelock_path)
        return self._cache_filelock

    def _make_room(self, needed: int) -> bool:
        """Evict the coldest local shards until ``needed`` fits (call with the lock held). False when only
        downloads in flight hold the room, so the caller must wait for them to land."""
        from streaming.base.dataset import _ShardState

        while self.cache_limit < self.cache_usage + needed:
            states = self._shard_states.numpy()
            if (states == _ShardState.LOCAL).any():
                self._evict_coldest_shard()
            elif (states == _ShardState.PREPARING).any():
                return False
            else:
                raise ValueError(f"cache_limit {self.cache_limit} bytes cannot hold a {needed}-byte shard next to "
                                 f"{self.cache_usage} bytes of index files; raise data.cache_limit")
        return True

    def _download_reserved(self, shard_id: int, reserved: int, lock: BaseFileLock) -> None:
        """Download outside the lock; swap the reservation for the bytes that landed (or drop it on failure).
        Called and returns with ``lock`` held."""
        from streaming.base.dataset import _ShardState

        lock.release()
        try:
            delta = self.streams[self.stream_per_shard[shard_id]].prepare_shard(self.shards[shard_id])
        except BaseException:
            lock.acquire()
            self.cache_usage -= reserved  # a failed download must not hold room forever
            self._shard_states[shard_id] = _ShardState.REMOTE
            raise
        lock.acquire()
        self.cache_usage += delta - reserved
        self._shard_access_times[shard_id] = time.time_ns()
        self._shard_states[shard_id] = _ShardState.LOCAL

    def _prepare_thread(self, it: Any) -> None:
        """Upstream's prefetch thread, except that it takes the cache lock once per shard per epoch, not per sample.

        Streaming 0.13.0 slowness (``StreamingDataset._prepare_thread``): it calls ``prepare_shard`` for every
        sample, and on a local shard that is a file lock, a stat and a write under it: with the ready thread no
        longer throttled (below), this thread took the GIL from the reader for half its time. Once a shard was
        prepared this epoch and is still LOCAL, only its access time is refreshed (lock-free, as ``get_item``
        does), so the cache's least-recently-used order is what upstream keeps.
        """
        from streaming.base.constant import TICK
        from streaming.base.dataset import _ShardState

        prepared: set[int] = set()
        while not it.should_exit() and it.prepare_index < it.total and it.ready_index < it.total \
                and not self._event.is_set():
            if self.predownload is not None and self.predownload < it.prepare_index - it.yield_index:
                time.sleep(TICK)
                continue
            sample_id = it.sample_ids[it.prepare_index]
            if sample_id != -1:
                shard_id = self.spanner[sample_id][0]
                if shard_id in prepared and self._shard_states[shard_id] == _ShardState.LOCAL:
                    self._shard_access_times[shard_id] = time.time_ns()
                else:
                    self.prepare_shard(shard_id, False)
                    prepared.add(shard_id)
            it.prepare_index += 1
        if it.prepare_index == it.total or it.ready_index == it.total:
            it.prepare_index = it.total
        it.on_exit()

    def _ready_thread(self, it: Any) -> None:
        """Upstream's ready thread with two changes: its wait for a shard re-requests the shard if it went back to
        REMOTE meanwhile, and ``predownload`` only holds it back before shards that are not local yet.

        Streaming 0.13.0 bug (``StreamingDataset._ready_thread``): it asks for a shard only if the shard is REMOTE
        when first looked at, then polls until it is LOCAL. Under ``cache_limit`` the shard can land and be evicted
        (or its download fail) between two polls; nobody fetches it again and the epoch hangs forever.
        Streaming 0.13.0 slowness (same function): once ``predownload`` samples are ready it sleeps a 7 ms tick even
        when the next shards are already local, so a worker serves at most ~predownload samples per tick (0.15x of
        np.memmap in bench/loader_throughput.py). Marking a local shard's sample ready downloads nothing, and
        ``get_item`` re-fetches a shard evicted in between, so the limit is kept for what it is for: downloads
        (the rule is ``_ready_ahead_enough``).
        """
        from streaming.base.constant import TICK
        from streaming.base.dataset import _ShardState

        while not it.should_exit() and it.ready_index < it.total and not self._event.is_set():
            sample_id = it.sample_ids[it.ready_index]
            shard_id = None if sample_id == -1 else self.spanner[sample_id][0]
            if self._ready_ahead_enough(it, shard_id):
                time.sleep(TICK)
                continue
            while shard_id is not None and self._shard_states[shard_id] != _ShardState.LOCAL \
                    and not self._event.is_set():
                if self._shard_states[shard_id] == _ShardState.REMOTE:
                    self.prepare_shard(shard_id, False)
                else:
                    time.sleep(TICK)
            it.ready_index += 1
        it.on_exit()

    def _ready_ahead_enough(self, it: Any, shard_id: Optional[int]) -> bool:
        """Whether the ready thread should wait for the consumer: ``predownload`` samples ahead and the next one's
        shard still to fetch, or ``READY_AHEAD_LOCAL`` samples ahead in any case (not a whole local epoch up front,
        which would take the GIL from the reader for seconds)."""
        from streaming.base.dataset import _ShardState

        if self.predownload is None:
            return False
        ahead = it.ready_index - it.yield_index
        if ahead > max(self.predownload, READY_AHEAD_LOCAL):
            return True
        return ahead > self.predownload and shard_id is not None and self._shard_states[shard_id] != _ShardState.LOCAL


class TokenSamples(BoundedCacheDataset):
    """A StreamingDataset whose items are ``(sample id, tokens)``: ``seq_len + 1`` ids and where they came from."""

    _epoch_finished = False

    def __getitem__(self, idx: int) -> tuple[int, np.ndarray]:
        return idx, super().__getitem__(idx)["tokens"]

    def set_epoch_finished(self, finished: bool) -> None:
        """Told by the trainer at each epoch's end and start (see :meth:`state_dict`)."""
        self._epoch_finished = finished

    def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, Any]:
        state = super().state_dict(num_samples, from_beginning)
        # Composer 0.32.1 + Streaming 0.13 bug: at an epoch-end checkpoint Composer passes sample_in_epoch 0 while
        # Streaming still reports the finished epoch, so resume would replay that epoch's order; name the next one.
        if self._epoch_finished and num_samples == 0 and from_beginning:
            state["epoch"] += 1
        return state


def local_dir(path: str, cache: Optional[str]) -> str:
    """Where a root's files live on this machine: the folder itself, or its cache folder for a remote."""
    if not is_remote(path):
        return path
    if not cache:
        raise MetadataError(f"data path {path} is remote: set data.cache to a local folder for its shards")
    digest = hashlib.sha256(path.rstrip("/").encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.split("://", 1)[1]).strip("_")[-60:]
    return os.path.join(cache, f"{name}-{digest}")


def fetch_metadata(path: str, cache: Optional[str]) -> DatasetMetadata:
    """Read a root's metadata (downloading it and the tokenizer into the cache when remote)."""
    local = local_dir(path, cache)
    if is_remote(path):
        _download_root_files(path, local)
    return read_metadata(local)


def _download_root_files(remote: str, local: str) -> None:
    """Refresh ``metadata.json`` and the tokenizer files it lists from ``remote`` into the cache ``local``.

    Always re-read (a re-converted dataset must not be served from a stale copy), each file replaced atomically and
    the whole refresh under a file lock, because every rank of a node does this on the same folder at once. When
    the dataset behind ``remote`` changed, its cached splits are dropped: Streaming reuses a local ``index.json``
    and shards of the same name without checking them against the bucket.
    """
    from filelock import FileLock

    base = remote.rstrip("/")
    os.makedirs(local, exist_ok=True)
    with FileLock(os.path.join(local, ROOT_LOCK)):
        fresh = os.path.join(local, METADATA_FILE + ".new")
        _fetch(f"{base}/{METADATA_FILE}", fresh,
               "and that convert_to_mds.py finished writing there (metadata.json is uploaded last)")
        try:
            with open(fresh, encoding="utf-8") as f:
                meta = DatasetMetadata.from_json(f.read(), f"{base}/{METADATA_FILE}")
        except MetadataError:
            os.remove(fresh)
            raise
        _drop_stale_cache(local, meta)
        os.replace(fresh, os.path.join(local, METADATA_FILE))
        for name in _tokenizer_names(base, meta):
            _fetch(f"{base}/{TOKENIZER_DIR}/{name}", os.path.join(local, TOKENIZER_DIR, name),
                   "and that the dataset was uploaded whole")


def _tokenizer_names(base: str, meta: DatasetMetadata) -> list[str]:
    """The tokenizer's files as the metadata lists them; a dataset converted before the list was recorded (and
    copied up with e.g. ``aws s3 sync``) has none, so an s3:// one is listed instead."""
    names = meta.tokenizer.get("files")
    if names is None and base.startswith("s3://"):
        return list_keys(f"{base}/{TOKENIZER_DIR}")
    return list(names or [])


def _fetch(url: str, dest: str, also_check: str) -> None:
    """One download, its failure turned into a one-line error that names the object and what to check."""
    try:
        download_file(url, dest)
    except RemoteError as e:
        raise RemoteError(f"{e}; check the bucket, the credentials and S3_ENDPOINT_URL (now {endpoint()}), "
                          f"{also_check}") from None


def _drop_stale_cache(local: str, fresh: DatasetMetadata) -> None:
    """Remove cached splits and tokenizer unless the cached metadata is the same record, ``source`` included: the
    same samples cut into other shards (``--size-limit``, ``--compression``) must not meet a stale index."""
    try:
        cached = read_metadata(local)
    except MetadataError:
        cached = None
    if cached is not None and cached.to_json() == fresh.to_json():
        return
    names = set(fresh.splits) | set(cached.splits if cached else ()) | {TOKENIZER_DIR}
    for name in sorted(names):
        path = os.path.join(local, name)
        if os.path.isdir(path):
            shutil.rmtree(path)


def check_compatible(metas: dict[str, DatasetMetadata]) -> DatasetMetadata:
    """Streams are mixed token for token, so they must share tokenizer, seq len and dtype."""
    items = list(metas.items())
    first_path, first = items[0]
    for path, meta in items[1:]:
        for key in ("tokenizer", "vocab_size", "eos_id", "seq_len"):
            a, b = getattr(first, key), getattr(meta, key)
            if key == "tokenizer":
                a, b = (a.get("kind"), a.get("sha256")), (b.get("kind"), b.get("sha256"))
            if a != b:
                raise MetadataError(
                    f"streams disagree on {key}: {first_path} has {a}, {path} has {b}; convert every stream "
                    "with the same --tokenizer and --seq-len"
                )
    return first


def dataset_tokenizer(path: str, cache: Optional[str]) -> Tokenizer:
    """Rebuild the tokenizer that conversion used, from the copy saved next to the shards."""
    return load_tokenizer(os.path.join(local_dir(path, cache), TOKENIZER_DIR))


def collate_tokens(samples: Sequence[tuple[int, np.ndarray]]) -> dict[str, torch.Tensor]:
    """(B, T+1) samples -> ``input_ids`` (B, T), next-token ``labels`` (B, T) already shifted, ``sample_ids`` (B,)."""
    tokens = np.stack([t for _, t in samples])  # numpy's copies cost half of torch's per-op dispatch at this size
    return {
        "input_ids": torch.from_numpy(tokens[:, :-1].astype(np.int64)),
        "labels": torch.from_numpy(tokens[:, 1:].astype(np.int64)),
        "sample_ids": torch.from_numpy(np.array([i for i, _ in samples], dtype=np.int64)),
    }


def num_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens trained on in a batch: what SpeedMonitor's tokens/s and MFU count."""
    return int(batch["input_ids"].numel())


def build_dataspec(
    sources: Sequence[StreamSource],
    split: str,
    device_batch_size: int,
    settings: LoaderSettings,
    cache: Optional[str] = None,
    drop_last: bool = True,
    dataset_cls: type[TokenSamples] = TokenSamples,
) -> DataSpec:
    """Build the split's StreamingDataset over one or more roots and wrap it for Composer."""
    streams = [
        Stream(
            remote=s.path if is_remote(s.path) else None,
            local=local_dir(s.path, cache),
            split=split,
            proportion=s.proportion,
            repeat=s.repeat,
            choose=s.choose,
        )
        for s in sources
    ]
    try:
        with registering_shared_memory():  # Streaming 0.13.0 bug: jobs starting together collide (loaders/shm.py)
            dataset = dataset_cls(
                streams=streams,
                batch_size=device_batch_size,
                shuffle=settings.shuffle,
                shuffle_seed=settings.shuffle_seed,
                num_canonical_nodes=settings.num_canonical_nodes,
                shuffle_algo=settings.shuffle_algo,
                shuffle_block_size=settings.shuffle_block_size,
                predownload=settings.predownload,
                cache_limit=settings.cache_limit,
            )
    except ValueError as e:  # Streaming checks the limit against the index and the largest shard at start
        if settings.cache_limit and "cache" in str(e).lower():
            raise OptionError(f"data.cache_limit={settings.cache_limit} ({split}): {e}") from None
        raise
    loader = DataLoader(
        dataset,
        batch_size=device_batch_size,
        collate_fn=collate_tokens,
        num_workers=settings.num_workers,
        drop_last=drop_last,
        persistent_workers=settings.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    return DataSpec(loader, get_num_tokens_in_batch=num_tokens)


def has_split(meta: DatasetMetadata, split: str) -> bool:
    """Whether conversion wrote this split (``--val-fraction 0`` writes no val)."""
    return split in meta.splits and meta.splits[split].samples > 0


def describe(meta: DatasetMetadata) -> dict[str, Any]:
    """A short summary for the start-up print."""
    return {
        "tokenizer": meta.tokenizer.get("name"),
        "vocab_size": meta.vocab_size,
        "eos_id": meta.eos_id,
        "seq_len": meta.seq_len,
        **{f"{k}_samples": v.samples for k, v in meta.splits.items()},
    }
