"""Text → MDS: read documents, tokenize in batches, split by document hash, pack, write shards + metadata.

Output is atomic: everything goes to a sibling ``DIR.partial`` and is renamed to ``DIR`` only when complete, with
``metadata.json`` written last. A crash, Ctrl-C or kill therefore never leaves a finished-looking dataset at
``DIR`` (a stale ``DIR.partial`` left by SIGKILL is removed by the next run).

An ``s3://bucket/prefix`` output is converted the same way into a local temporary folder (under ``TMPDIR``), then
uploaded with ``metadata.json`` last (see :mod:`loaders.remote`); the bucket is checked before any tokenizing.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from loaders import remote
from loaders.errors import InputError, OptionError, OutputExistsError
from loaders.metadata import COLUMN, METADATA_FILE, TOKENIZER_DIR, DatasetMetadata, SplitStats, tokenizer_files
from loaders.packing import Packer
from loaders.sources import Document, expand_inputs, iter_documents
from loaders.tokenizer import Tokenizer, load_tokenizer, token_dtype

TRAIN, VAL = "train", "val"
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"
BATCH_DOCS = 1024
BATCH_CHARS = 2 << 20  # ~2 MB of text per encode_batch call: enough to keep the Rust threads busy
# Streaming's compression families (streaming/base/compression.py), checked here without importing streaming.
_COMPRESSION = re.compile(r"^(br|bz2|gz|snappy|zstd)(:\d+)?$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SPLIT_RULE = "blake2b(utf8(text), digest_size=8) / 2**64 < val_fraction -> val"


def convert(inputs: list[str], out: str, tokenizer: str, seq_len: int, val_fraction: float = 0.0005,
            text_key: str = "text", overwrite: bool = False, compression: str = "zstd",
            size_limit: int = 1 << 26, progress: bool = True) -> DatasetMetadata:
    """Convert text files into an MDS dataset at ``out`` (``train/``, maybe ``val/``, ``tokenizer/``, metadata).

    ``out`` is a folder or an ``s3://bucket/prefix``. Everything that can be checked up front (options, inputs,
    bucket, tokenizer, output) is, before anything is written. ``compression`` may be ``"none"``. Raises
    :class:`~loaders.errors.DataError` subclasses for bad input.
    """
    check_options(seq_len, val_fraction, text_key, compression, size_limit)
    paths = expand_inputs(inputs)
    settings = _Settings(seq_len, val_fraction, text_key, None if compression == "none" else compression,
                         size_limit, progress)
    if not _URL.match(out):
        return _convert_local(paths, Path(out).expanduser(), tokenizer, settings, overwrite)
    check_remote_output(out, overwrite)
    work = Path(tempfile.mkdtemp(prefix="convert_to_mds-"))
    try:
        meta = _convert_local(paths, work / "dataset", tokenizer, settings, overwrite=False)
        publish_remote(work / "dataset", out, overwrite, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _convert_local(paths: list[Path], out_dir: Path, tokenizer: str, settings: _Settings,
                   overwrite: bool) -> DatasetMetadata:
    """The atomic local conversion: ``out_dir.partial`` filled, then renamed to ``out_dir``."""
    check_output(out_dir, overwrite, paths)
    tok = load_tokenizer(tokenizer)
    partial = _fresh_partial(out_dir)
    try:
        meta = _convert_into(partial, paths, tok, settings)
        _publish(partial, out_dir)
    except BaseException:  # includes KeyboardInterrupt: never leave half a dataset behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return meta


@dataclass(frozen=True)
class _Settings:
    seq_len: int
    val_fraction: float
    text_key: str
    compression: str | None
    size_limit: int
    progress: bool


def check_options(seq_len: int, val_fraction: float, text_key: str, compression: str, size_limit: int) -> None:
    """Reject option values that would fail (or silently misbehave) only after minutes of work."""
    if not isinstance(seq_len, int) or seq_len <= 0:
        raise OptionError(f"--seq-len must be a positive integer, got {seq_len}; e.g. --seq-len 1024")
    if not 0.0 <= val_fraction < 1.0:
        raise OptionError(f"--val-fraction must be in [0, 1), got {val_fraction}; e.g. 0.0005, or 0 for no val split")
    if not text_key:
        raise OptionError("--text-key must not be empty; e.g. --text-key text")
    if compression != "none" and not _COMPRESSION.match(compression):
        raise OptionError(f"--compression {compression!r} is not supported; use zstd, br, bz2, gz, snappy "
                          "(optionally NAME:LEVEL) or none")
    if not 0 < size_limit < 1 << 32:
        raise OptionError(f"--size-limit must be in (0, 2**32) bytes, got {size_limit}; e.g. 67108864 (64 MiB)")


def check_remote_output(url: str, overwrite: bool) -> None:
    """Refuse a non-empty bucket prefix without ``overwrite``; fail on a missing bucket, refused credentials or
    an unreachable endpoint now, not after the tokenizing."""
    if remote.exists(url) and not overwrite:
        raise OutputExistsError(f"--out {url} already holds objects; pass --overwrite to replace them, or choose "
                                "another prefix")


def publish_remote(local: Path, url: str, overwrite: bool, progress: bool) -> None:
    """Upload a finished local dataset. Old objects (``--overwrite``) are deleted only now, so the old dataset
    stays readable during the conversion; ``metadata.json`` goes first on delete and last on upload, so the
    prefix never looks finished while it is not."""
    up = remote.uploader(url, local)
    if remote.exists(url, up):
        if not overwrite:
            raise OutputExistsError(f"--out {url} received objects while converting; pass --overwrite to replace "
                                    "them, or choose another prefix")
        remote.delete_prefix(url, first=[METADATA_FILE], up=up)
    remote.upload_dir(local, url, last=[METADATA_FILE], progress=progress)


def check_output(out_dir: Path, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse a non-empty ``out`` without ``overwrite``, and an ``out`` that contains the inputs."""
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())) and not overwrite:
        raise OutputExistsError(f"--out {out_dir} already exists and is not empty; pass --overwrite to replace "
                                "it, or choose another folder")
    resolved = out_dir.resolve()
    for p in inputs:
        if p.resolve().is_relative_to(resolved):
            raise OptionError(f"input {p} is inside --out {out_dir}, which the conversion replaces; "
                              "write the dataset to another folder")


def assign_split(data: bytes, val_fraction: float) -> str:
    """``val`` or ``train`` from a hash of the document's UTF-8 bytes: stable under reordering and re-runs,
    and identical documents always land in the same split."""
    if val_fraction <= 0:
        return TRAIN
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return VAL if h / 2.0**64 < val_fraction else TRAIN


# ------------------------------------------------------------------------------------------------- output folders


def _fresh_partial(out_dir: Path) -> Path:
    partial = out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)
    _remove(partial)  # a stale one from a killed run
    partial.mkdir(parents=True)
    return partial


def _publish(partial: Path, out_dir: Path) -> None:
    """Move the finished dataset into place. An old ``out`` is renamed aside first (O(1), so ``out`` is absent
    only for an instant and never half-deleted), then removed."""
    if out_dir.exists() or out_dir.is_symlink():
        aside = out_dir.with_name(out_dir.name + REPLACED_SUFFIX)
        _remove(aside)
        os.rename(out_dir, aside)
        os.rename(partial, out_dir)
        _remove(aside)
    else:
        os.rename(partial, out_dir)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ------------------------------------------------------------------------------------------------------ conversion


class _SplitWriter:
    """One split's packer + MDS writer + stats. The MDSWriter is opened at the first sample, so a run that fails
    early neither creates the split folder nor pays for importing streaming (which imports torch)."""

    def __init__(self, name: str, directory: Path, tok: Tokenizer, s: _Settings):
        self.name, self.directory = name, directory
        self.dtype = token_dtype(tok.vocab_size)
        self.column = f"ndarray:{self.dtype}:{s.seq_len + 1}"
        self.compression, self.size_limit = s.compression, s.size_limit
        self.stats = SplitStats()
        self.packer = Packer(s.seq_len, tok.eos_id, self.dtype, self._write)
        self._writer = None

    def _write(self, sample: np.ndarray) -> None:
        if self._writer is None:
            from streaming import MDSWriter

            self._writer = MDSWriter(out=str(self.directory), columns={COLUMN: self.column},
                                     compression=self.compression, size_limit=self.size_limit)
        self._writer.write({COLUMN: sample})

    def finish(self) -> SplitStats:
        """Flush the last shard and write ``index.json``; fill in the packing counts."""
        self.stats.dropped_tokens = self.packer.finish()
        self.stats.samples, self.stats.tokens = self.packer.samples, self.packer.tokens
        if self._writer is not None:
            self._writer.finish()
        return self.stats

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.cancel_future_jobs()


def _convert_into(partial: Path, paths: list[Path], tok: Tokenizer, s: _Settings) -> DatasetMetadata:
    names = [TRAIN, VAL] if s.val_fraction > 0 else [TRAIN]
    splits = {n: _SplitWriter(n, partial / n, tok, s) for n in names}
    try:
        documents = _pack_all(iter_documents(paths, s.text_key), tok, splits, s)
    except BaseException:
        for w in splits.values():
            w.abort()
        raise
    if documents == 0:
        raise InputError(f"the inputs hold no documents ({len(paths)} file(s), all empty or with only empty "
                         f"texts); check the paths and --text-key")
    stats = {n: w.finish() for n, w in splits.items()}
    _check_split_sizes(stats, partial, s.seq_len)
    tok.save(partial / TOKENIZER_DIR)
    meta = DatasetMetadata(  # the tokenizer's file list lets a reader of a bucket fetch it (no listing needed)
        tokenizer={**tok.identity(), "files": tokenizer_files(partial / TOKENIZER_DIR)},
        vocab_size=tok.vocab_size, eos_id=tok.eos_id, seq_len=s.seq_len,
        dtype=token_dtype(tok.vocab_size), splits=stats,
        source={"inputs": [str(p) for p in paths], "val_fraction": s.val_fraction, "text_key": s.text_key,
                "split_rule": _SPLIT_RULE, "compression": s.compression, "size_limit": s.size_limit},
    )
    meta.write(partial)  # last: its presence marks a finished dataset
    return meta


def _check_split_sizes(stats: dict[str, SplitStats], partial: Path, seq_len: int) -> None:
    """Train must hold a sample; an empty val split is dropped with a warning (tiny inputs, small fractions)."""
    train = stats[TRAIN]
    if train.samples == 0:
        raise InputError(f"input too small for seq_len {seq_len}: {train.dropped_tokens} tokens in the train split, "
                         f"one sample needs {seq_len + 1}; add more text or lower --seq-len")
    val = stats.get(VAL)
    if val is not None and val.samples == 0:
        warnings.warn(f"the val split got {val.documents} document(s) / {val.dropped_tokens} tokens, less than one "
                      f"sample of {seq_len + 1} tokens, so no val split is written; raise --val-fraction or lower "
                      "--seq-len to get one", stacklevel=3)
        del stats[VAL]
        _remove(partial / VAL)


def _pack_all(docs: Iterable[Document], tok: Tokenizer, splits: dict[str, _SplitWriter], s: _Settings) -> int:
    """Tokenize batch by batch and feed each split's packer; returns the number of documents."""
    documents = 0
    with _Progress(s.progress) as bar:
        for batch in _batches(docs):
            data = [_utf8(d) for d in batch]
            ids = tok.encode_batch([d.text for d in batch])
            routed: dict[str, list] = {n: [] for n in splits}
            for raw, doc_ids in zip(data, ids):
                name = assign_split(raw, s.val_fraction)
                splits[name].stats.documents += 1
                splits[name].stats.bytes += len(raw)
                routed[name].append(doc_ids)
            for name, doc_ids in routed.items():
                splits[name].packer.add_documents(doc_ids)
            documents += len(batch)
            bar.update(len(batch), sum(map(len, data)), sum(map(len, ids)) + len(batch), batch[-1].path.name)
    return documents


def _batches(docs: Iterable[Document]) -> Iterator[list[Document]]:
    """Groups of documents bounded in count and size (bounded memory, few tokenizer calls)."""
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _utf8(doc: Document) -> bytes:
    try:
        return doc.text.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON can carry lone surrogates ("\ud800"), which are not text
        raise InputError(f"{doc.where}: the text holds an unpaired surrogate ({doc.text[e.start]!r}) that is not "
                         "valid Unicode; fix or drop that document") from None


class _Progress:
    """A tqdm bar of documents with input MB/s and tokens/s, updated once per batch (cheap)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.bytes = self.tokens = 0

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(unit=" docs", desc="converting", mininterval=0.5, dynamic_ncols=True)
            self.start = time.perf_counter()
        return self

    def update(self, docs: int, nbytes: int, tokens: int, current: str) -> None:
        if self.bar is None:
            return
        self.bytes += nbytes
        self.tokens += tokens
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.bytes / dt / 1e6:.1f} MB/s, {self.tokens / dt / 1e3:.0f}k tok/s, "
                                 f"{current}", refresh=False)
        self.bar.update(docs)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
