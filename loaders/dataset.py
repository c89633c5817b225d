"""Serve packed token samples from a converted dataset with Streaming, as Composer ``DataSpec``s.

A dataset root (local folder or remote URL) holds ``metadata.json``, ``tokenizer/`` and one MDS folder per split.
Several roots can be mixed as weighted ``streams``; they must agree on tokenizer and sequence length.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from composer.core import DataSpec
from streaming import Stream, StreamingDataset
from torch.utils.data import DataLoader

from loaders.errors import MetadataError
from loaders.metadata import METADATA_FILE, TOKENIZER_DIR, DatasetMetadata, read_metadata
from loaders.tokenizer import Tokenizer, load_tokenizer

_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_remote(path: str) -> bool:
    """True for URLs Streaming downloads from (s3://, gs://, hf://, ...), false for local folders."""
    return bool(_REMOTE.match(path)) and not path.startswith("file://")


@dataclass(frozen=True)
class StreamSource:
    """One dataset root in a mixture, with Streaming's weighting knobs (at most one of them)."""

    path: str
    proportion: Optional[float] = None
    repeat: Optional[float] = None
    choose: Optional[int] = None


@dataclass
class LoaderSettings:
    """Streaming knobs that matter for determinism and throughput."""

    shuffle: bool = True
    shuffle_seed: int = 9176
    num_canonical_nodes: Optional[int] = None
    predownload: Optional[int] = None
    cache_limit: Optional[str] = None
    num_workers: int = 0


class TokenSamples(StreamingDataset):
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
    from streaming.base.storage.download import CloudDownloader

    os.makedirs(local, exist_ok=True)
    target = os.path.join(local, METADATA_FILE)
    if os.path.exists(target):
        os.remove(target)  # always re-read: a re-converted dataset must not be served from a stale copy
    try:
        CloudDownloader.direct_download(f"{remote.rstrip('/')}/{METADATA_FILE}", target)
    except Exception as e:  # noqa: BLE001 - every backend raises its own types
        raise MetadataError(
            f"cannot read {remote.rstrip('/')}/{METADATA_FILE} ({type(e).__name__}: {e}); check the bucket, "
            "the credentials and S3_ENDPOINT_URL, and that convert_to_mds.py finished writing there"
        ) from None
    meta = read_metadata(local)
    for name in meta.tokenizer.get("files", []):
        dest = os.path.join(local, TOKENIZER_DIR, name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.exists(dest):
            os.remove(dest)
        CloudDownloader.direct_download(f"{remote.rstrip('/')}/{TOKENIZER_DIR}/{name}", dest)


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
    tokens = torch.from_numpy(np.stack([t for _, t in samples]).astype(np.int64))
    return {
        "input_ids": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "sample_ids": torch.tensor([i for i, _ in samples], dtype=torch.int64),
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
    dataset = TokenSamples(
        streams=streams,
        batch_size=device_batch_size,
        shuffle=settings.shuffle,
        shuffle_seed=settings.shuffle_seed,
        num_canonical_nodes=settings.num_canonical_nodes,
        predownload=settings.predownload,
        cache_limit=settings.cache_limit,
    )
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
