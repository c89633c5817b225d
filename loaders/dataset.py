"""Serve packed token samples from a converted dataset with Streaming, as Composer ``DataSpec``s.

A dataset root (local folder or remote URL) holds ``metadata.json``, ``tokenizer/`` and one MDS folder per split;
or it was made by llm-foundry's converters (no ``metadata.json``, a ``tokens`` column): then its record is
synthesized from its ``index.json`` files, a sample and the tokenizer named by ``data.tokenizer`` (loaders/foundry.py).
Several roots can be mixed as weighted ``streams``; they must agree on tokenizer and sequence length.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from composer.core import DataSpec
from streaming import Stream
from torch.utils.data import DataLoader

from core.errors import DamagedShardError, MetadataError, OptionError, RemoteError
from core.metadata import (
    INDEX_FILE,
    METADATA_FILE,
    SHARD_HASH,
    TOKENIZER_DIR,
    TOKENIZER_KEY,
    DatasetMetadata,
    foundry_metadata,
    foundry_splits,
    missing_tokenizer,
    parse_foundry_index,
    read_metadata,
)
from core.remote import download_file, endpoint, is_remote, list_keys
from core.streams import StreamSource
from core.tokenizer import Tokenizer, load_tokenizer
from loaders.foundry import decode_tokens, first_shard_file, sample_length
from upstream.streaming import PatchedStreamingDataset, registering_shared_memory

ROOT_LOCK = ".root_files.lock"


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


class TokenSamples(PatchedStreamingDataset):
    """A StreamingDataset whose items are ``(sample id, tokens)``: ``seq_len + 1`` ids and where they came from
    (ours, or any of llm-foundry's ``tokens`` columns: :func:`loaders.foundry.decode_tokens`)."""

    def __getitem__(self, idx: int) -> tuple[int, np.ndarray]:
        return idx, decode_tokens(super().__getitem__(idx)["tokens"])


def local_dir(path: str, cache: Optional[str]) -> str:
    """Where a root's files live on this machine: the folder itself, or its cache folder for a remote."""
    if not is_remote(path):
        return path
    if not cache:
        raise MetadataError(f"data path {path} is remote: set data.cache to a local folder for its shards")
    digest = hashlib.sha256(path.rstrip("/").encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.split("://", 1)[1]).strip("_")[-60:]
    return os.path.join(cache, f"{name}-{digest}")


def fetch_metadata(path: str, cache: Optional[str], tokenizer: Optional[str] = None,
                   option: str = TOKENIZER_KEY) -> DatasetMetadata:
    """Read a root's metadata (downloading it and the tokenizer into the cache when remote). ``tokenizer`` (the
    value of ``option``, ``data.tokenizer``) names the tokenizer of an llm-foundry dataset, whose record is then
    synthesized; given for one of ours, it must be the tokenizer its metadata.json names (one place per fact)."""
    local = local_dir(path, cache)
    if is_remote(path):
        _download_root_files(path, local)
    splits = foundry_splits(local)
    if not splits:
        meta = read_metadata(local)
        if tokenizer is not None:
            _check_same_tokenizer(path, meta, tokenizer, option)
        return meta
    if tokenizer is None:
        raise missing_tokenizer(path, option)
    tok = spec_tokenizer(tokenizer)
    return foundry_metadata(splits, sample_length(path, local, splits, tok), tok)


@functools.lru_cache(maxsize=4)
def spec_tokenizer(spec: str) -> Tokenizer:
    """``data.tokenizer``'s tokenizer, loaded once per process (every stream and the trainer ask for it)."""
    return load_tokenizer(spec)


def _check_same_tokenizer(path: str, meta: DatasetMetadata, spec: str, option: str) -> None:
    """A dataset with a metadata.json names its own tokenizer: ``option`` may repeat it, never contradict it."""
    tok = spec_tokenizer(spec)
    ours = (meta.tokenizer.get("kind"), meta.tokenizer.get("sha256"), meta.vocab_size, meta.eos_id)
    if ours != (tok.identity()["kind"], tok.identity()["sha256"], tok.vocab_size, tok.eos_id):
        raise MetadataError(f"{option}={spec} (vocab {tok.vocab_size}) disagrees with {path}/{METADATA_FILE}, which "
                            f"names tokenizer {meta.tokenizer.get('name')!r} (vocab {meta.vocab_size}): a dataset "
                            f"with a {METADATA_FILE} is read with its own tokenizer; drop {option}")


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
        try:
            _fetch(f"{base}/{METADATA_FILE}", fresh,
                   "and that convert_to_mds.py finished writing there (metadata.json is uploaded last)")
        except RemoteError:
            names = _foundry_split_names(base)
            if not names:
                raise
            _download_foundry_files(base, local, names)
            return
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


def _foundry_split_names(base: str) -> list[str]:
    """The split folders (``NAME/index.json``) of a bucket prefix that has no metadata.json: an llm-foundry
    dataset's. Only an s3:// prefix can be listed; elsewhere, and when listing fails, none (the caller then reports
    the missing metadata.json)."""
    if not base.startswith("s3://"):
        return []
    try:
        keys = list_keys(base)
    except RemoteError:
        return []
    return sorted(key.split("/")[0] for key in keys if key.count("/") == 1 and key.endswith(f"/{INDEX_FILE}"))


def _download_foundry_files(base: str, local: str, names: list[str]) -> None:
    """Refresh each split's ``index.json`` of an llm-foundry dataset in the cache, and its first shard (read for the
    sample length, then left where Streaming looks for it). A split whose index changed is dropped first, as for
    ours; so are splits the bucket no longer has and what a dataset of ours at this URL left (metadata.json,
    tokenizer/)."""
    gone = [p.parent for p in Path(local).glob(f"*/{INDEX_FILE}") if p.parent.name not in names]
    for stale in [Path(local, METADATA_FILE), Path(local, TOKENIZER_DIR), *gone]:
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    for name in names:
        split_dir, fresh = os.path.join(local, name), os.path.join(local, f"{name}.{INDEX_FILE}.new")
        _fetch(f"{base}/{name}/{INDEX_FILE}", fresh, "and that the dataset was uploaded whole")
        cached = os.path.join(split_dir, INDEX_FILE)
        if os.path.isfile(cached) and Path(cached).read_bytes() != Path(fresh).read_bytes():
            shutil.rmtree(split_dir)
        os.makedirs(split_dir, exist_ok=True)
        os.replace(fresh, cached)
        split = parse_foundry_index(Path(cached).read_bytes())
        if split is not None and split.samples:
            _fetch_first_shard(f"{base}/{name}", split_dir, split.index["shards"][0])


def _fetch_first_shard(url: str, split_dir: str, shard: dict) -> None:
    """Download a split's first shard into the cache unless it is there, checked against its recorded sha256 (a
    file placed here is one Streaming will not download, nor check, again)."""
    info = first_shard_file(shard)
    raw = (shard.get("raw_data") or {}).get("basename")
    dest = os.path.join(split_dir, info["basename"])
    if os.path.isfile(dest) or (raw and os.path.isfile(os.path.join(split_dir, raw))):
        return
    _fetch(f"{url}/{info['basename']}", dest, "and that the dataset was uploaded whole")
    expected = (info.get("hashes") or {}).get(SHARD_HASH)
    if expected and hashlib.sha256(Path(dest).read_bytes()).hexdigest() != expected:
        os.remove(dest)
        raise DamagedShardError(f"shard {url}/{info['basename']} is damaged (its sha256 differs from the one in its "
                                f"{INDEX_FILE}); copy the dataset to the bucket again")


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


def dataset_tokenizer(path: str, cache: Optional[str], tokenizer: Optional[str] = None,
                      option: str = TOKENIZER_KEY) -> Tokenizer:
    """Rebuild the tokenizer that conversion used, from the copy saved next to the shards; an llm-foundry dataset
    saves none: ``tokenizer`` (``option``'s value) names it."""
    local = local_dir(path, cache)
    if os.path.isfile(os.path.join(local, METADATA_FILE)):
        return load_tokenizer(os.path.join(local, TOKENIZER_DIR))
    if tokenizer is None:
        raise missing_tokenizer(path, option)
    return spec_tokenizer(tokenizer)


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
        with registering_shared_memory():  # Streaming 0.13.0 bug: jobs starting together collide
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
