"""Text → MDS: read documents, tokenize in batches (in worker processes), split by document hash, pack, write.

The main process reads documents in order and cuts them into batches; :func:`conversion.batches.encode_batches`
tokenizes them here or in ``workers`` processes (a bounded window in flight) and hands the results back in input
order; the main process packs them and writes shards with Streaming's MDSWriter. So the output is the same, byte
for byte, whatever the number of workers, and memory stays bounded whatever the input size.

Output is atomic: everything goes to a sibling ``DIR.partial`` and is renamed to ``DIR`` only when complete, with
``metadata.json`` (``groups.json`` for ``--group-by``) written last. A crash, Ctrl-C or kill therefore never leaves a
finished-looking dataset at ``DIR`` (a stale ``DIR.partial`` left by SIGKILL is removed by the next run). A finished
``DIR`` made with the same arguments from the same inputs (paths, sizes, mtimes, as recorded in its metadata) is
left alone: re-running a finished command does nothing.

An ``s3://bucket/prefix`` output is converted the same way into a local temporary folder (under ``TMPDIR``), then
uploaded with ``metadata.json`` last (see :mod:`core.remote`); the bucket is checked before any tokenizing.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
import warnings
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from conversion.batches import SPLIT_RULE, TRAIN, VAL, BatchResult, EncoderSpec, assign_split, encode_batches
from conversion.groups import GROUPS_FILE, GroupFolders, group_record, read_groups, write_groups
from conversion.packing import Packer
from conversion.parallel import resolve_workers
from conversion.sources import BadRecordError, BadRecords, Document, expand_inputs, hf_hub_documents, iter_documents
from core import remote
from core.errors import InputError, MetadataError, OptionError, OutputExistsError
from core.files import built_then_swapped, remove
from core.metadata import (
    COLUMN,
    METADATA_FILE,
    SHARD_HASH,
    TOKENIZER_DIR,
    DatasetMetadata,
    SplitStats,
    read_metadata,
    tokenizer_files,
)
from core.tokenizer import CHARS, Tokenizer, char_tokenizer, load_tokenizer, resolve_backend, token_dtype

__all__ = ["ConvertRequest", "Conversion", "HFSource", "assign_split", "convert", "run", "TRAIN", "VAL"]

BATCH_DOCS = 1024
BATCH_CHARS = 1 << 20  # ~1 MB of text per job: ~0.5 s of one core's BPE, small enough to balance workers
SHARD_CACHE_BUDGET = 96 << 20  # samples held for unfinished shards, over all splits and groups (see _ShardBudget)
SHARD_HASHES = [SHARD_HASH]  # recorded by MDSWriter in index.json; checked by --verify and by the reader
PACKER_CAPACITY = 1 << 18
# Streaming's compression families (streaming/base/compression.py), checked here without importing streaming.
_COMPRESSION = re.compile(r"^(br|bz2|gz|snappy|zstd)(:\d+)?$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face Hub dataset streamed instead of input files."""

    name: str
    config: str | None = None
    split: str = "train"


@dataclass(frozen=True)
class ConvertRequest:
    """Every argument of a conversion. ``workers`` and ``progress`` change how, never what, is written."""

    inputs: tuple[str, ...]
    out: str
    tokenizer: str
    seq_len: int
    val_fraction: float = 0.0005
    text_key: str = "text"
    compression: str = "zstd"  # or "none"
    size_limit: int = 1 << 26
    workers: int = 1  # 0: one per core
    group_by: str | None = None
    skip_bad: bool = False
    hf: HFSource | None = None
    overwrite: bool = False
    progress: bool = True
    # auto | hf | tiktoken: changes how (speed), never what, is written; run() resolves it (bytes | hf | tiktoken)
    tokenizer_backend: str = "auto"


@dataclass
class Conversion:
    """What a run did: the dataset(s) at ``--out`` (key None: the single dataset; else each group's folder)."""

    datasets: dict[str | None, DatasetMetadata]
    skipped: bool = False  # ``--out`` was already converted with these arguments: nothing was done
    groups: dict | None = None  # groups.json, for --group-by
    bad: BadRecords | None = None

    @property
    def metadata(self) -> DatasetMetadata:
        if None not in self.datasets:
            raise ValueError("a --group-by conversion has one dataset per group: see .datasets")
        return self.datasets[None]


def convert(inputs: list[str], out: str, tokenizer: str, seq_len: int, val_fraction: float = 0.0005,
            text_key: str = "text", overwrite: bool = False, compression: str = "zstd",
            size_limit: int = 1 << 26, progress: bool = True, workers: int = 1,
            skip_bad: bool = False) -> DatasetMetadata:
    """Convert text files into one MDS dataset at ``out`` (``train/``, maybe ``val/``, ``tokenizer/``, metadata).

    ``out`` is a folder or an ``s3://bucket/prefix``. Everything that can be checked up front (options, inputs,
    bucket, tokenizer, output) is, before anything is written. ``compression`` may be ``"none"``. Raises
    :class:`~core.errors.DataError` subclasses for bad input. See :func:`run` for grouping and HF datasets.
    """
    return run(ConvertRequest(tuple(inputs), out, tokenizer, seq_len, val_fraction, text_key, compression,
                              size_limit, workers, skip_bad=skip_bad, overwrite=overwrite, progress=progress)).metadata


@dataclass(frozen=True)
class Prepared:
    """A request checked and resolved: the workers and encoder that run, the input files, the tokenizer, and the
    record that makes two conversions the same."""

    req: ConvertRequest
    paths: list[Path]
    tok: Tokenizer
    record: dict


def prepare(req: ConvertRequest) -> Prepared:
    """Everything that can be checked before any output is written, and before any input is read except by
    ``--tokenizer chars``, whose vocabulary is the inputs' characters."""
    check_options(req.seq_len, req.val_fraction, req.text_key, req.compression, req.size_limit)
    req = replace(req, workers=resolve_workers(req.workers))
    paths = _inputs(req)
    tok = _char_tokenizer(req, paths) if req.tokenizer == CHARS else load_tokenizer(req.tokenizer)
    # the encoder that runs, settled once (refused before anything is read or written)
    req = replace(req, tokenizer_backend=resolve_backend(tok, req.tokenizer_backend))
    return Prepared(req, paths, tok, request_record(req, paths, tok))


def run(req: ConvertRequest) -> Conversion:
    """The whole conversion: checks, the already-done test, the atomic local conversion and the upload."""
    prep = prepare(req)
    req, paths, tok, record = prep.req, prep.paths, prep.tok, prep.record
    if not _URL.match(req.out):
        out_dir = Path(req.out).expanduser()
        return already_converted(out_dir, record, req.group_by) or \
            convert_local(paths, out_dir, tok, record, req, req.overwrite)
    done = remote_already_converted(req.out, record, req.group_by)
    if done is not None:
        return done
    check_remote_output(req.out, req.overwrite)
    work = Path(tempfile.mkdtemp(prefix="convert_to_mds-"))
    try:
        conv = convert_local(paths, work / "dataset", tok, record, req, overwrite=False)
        publish_remote(work / "dataset", req.out, req.overwrite, req.progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return conv


def _char_tokenizer(req: ConvertRequest, paths: list[Path]) -> Tokenizer:
    """``--tokenizer chars``: the corpus's own characters, found by a first pass over every document (as nanoGPT's
    shakespeare_char ``prepare.py`` does): meant for small corpora. Bad records are counted by the real pass."""
    alphabet: set[str] = set()
    for doc in _documents(req, paths, BadRecords() if req.skip_bad else None):
        alphabet.update(doc.text)
    return char_tokenizer(alphabet)


def _inputs(req: ConvertRequest) -> list[Path]:
    if req.hf is not None and req.inputs:
        raise OptionError("give INPUT paths or --hf-dataset, not both")
    if req.hf is None and not req.inputs:
        raise OptionError("no inputs given; pass files, directories or globs, or --hf-dataset NAME")
    return [] if req.hf is not None else expand_inputs(list(req.inputs))


def convert_local(paths: list[Path], out_dir: Path, tok: Tokenizer, record: dict, req: ConvertRequest,
                   overwrite: bool) -> Conversion:
    """The atomic local conversion: ``out_dir.partial`` filled, then renamed to ``out_dir``."""
    check_output(out_dir, overwrite, paths)
    bad = BadRecords() if req.skip_bad else None
    docs = _documents(req, paths, bad)  # a hub dataset is resolved now, before anything is written
    with built_then_swapped(out_dir) as partial:  # never half a dataset at out_dir, even on Ctrl-C
        source = {**_source(record, paths), "tokenizer_backend": req.tokenizer_backend}
        return _convert_into(partial, docs, tok, req, record, source, bad)


def _documents(req: ConvertRequest, paths: list[Path], bad: BadRecords | None) -> Iterator[Document]:
    if req.hf is not None:
        return hf_hub_documents(req.hf.name, req.hf.config, req.hf.split, req.text_key, bad=bad,
                                group_key=req.group_by)
    return iter_documents(paths, req.text_key, bad=bad, group_key=req.group_by)


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


# ---------------------------------------------------------------------------------------------- restarting a run


def request_record(req: ConvertRequest, paths: list[Path], tok: Tokenizer) -> dict:
    """What makes two conversions the same: every argument that changes the output, and the inputs' identity
    (resolved path, size, mtime). Recorded in the output's metadata; compared by :func:`already_converted`."""
    return {"tokenizer": tok.identity(), "seq_len": req.seq_len, "val_fraction": float(req.val_fraction),
            "text_key": req.text_key, "split_rule": SPLIT_RULE, "compression": _compression(req),
            "size_limit": req.size_limit, "group_by": req.group_by, "skip_bad": req.skip_bad,
            "hf_dataset": asdict(req.hf) if req.hf is not None else None,
            "input_files": [_file_record(p) for p in paths]}


def _compression(req: ConvertRequest) -> str | None:
    return None if req.compression == "none" else req.compression


def _file_record(path: Path) -> dict:
    """An input's identity: a saved-dataset folder counts as all its files (total size, newest mtime)."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return {"path": str(path.resolve()), "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def _source(record: dict, paths: list[Path]) -> dict:
    """``metadata.json``'s ``source``: the record (tokenizer and seq_len live at the top level already)."""
    rest = {k: v for k, v in record.items() if k not in ("tokenizer", "seq_len")}
    return {"inputs": [str(p) for p in paths], **rest}


def _recorded(meta: DatasetMetadata) -> dict:
    """The request record a finished dataset was made with (as :func:`request_record` builds it)."""
    return {"tokenizer": {k: v for k, v in meta.tokenizer.items() if k != "files"}, "seq_len": meta.seq_len,
            **{k: v for k, v in meta.source.items()
               if k not in ("inputs", "group", "bad_records", "index_sha256", "tokenizer_backend", "tasks")}}


def already_converted(out_dir: Path, record: dict, group_by: str | None) -> Conversion | None:
    """The finished output at ``out_dir`` when it was made with exactly ``record``; else None."""
    try:
        if group_by is None:
            meta = read_metadata(out_dir) if (out_dir / METADATA_FILE).is_file() else None
            return Conversion({None: meta}, skipped=True) if meta and _recorded(meta) == record else None
        if not (out_dir / GROUPS_FILE).is_file():
            return None
        groups = read_groups(out_dir)
        if groups.get("request") != record:
            return None
        datasets = {folder: read_metadata(out_dir / folder) for folder in groups["groups"]}
        return Conversion(datasets, skipped=True, groups=groups)
    except MetadataError:
        return None  # not ours or damaged: the usual --overwrite rule decides


def remote_already_converted(url: str, record: dict, group_by: str | None) -> Conversion | None:
    """:func:`already_converted` for a bucket prefix: its finished-markers are fetched into a scratch folder."""
    keys = set(remote.list_keys(url))
    marker = GROUPS_FILE if group_by else METADATA_FILE
    if marker not in keys:
        return None
    with tempfile.TemporaryDirectory(prefix="convert_to_mds-") as tmp:
        local, base = Path(tmp), url.rstrip("/")
        remote.download_file(f"{base}/{marker}", local / marker)
        if group_by is not None:
            try:
                folders = read_groups(local)["groups"]
            except MetadataError:
                return None
            for name in (f"{f}/{METADATA_FILE}" for f in folders if f"{f}/{METADATA_FILE}" in keys):
                remote.download_file(f"{base}/{name}", local / name)
        return already_converted(local, record, group_by)


# ----------------------------------------------------------------------------------------------- bucket outputs


def check_remote_output(url: str, overwrite: bool) -> None:
    """Refuse a non-empty bucket prefix without ``overwrite``; fail on a missing bucket, refused credentials or
    an unreachable endpoint now, not after the tokenizing."""
    if remote.exists(url) and not overwrite:
        raise OutputExistsError(f"--out {url} already holds objects; pass --overwrite to replace them, or choose "
                                "another prefix")


def _markers(names: Iterable[str]) -> list[str]:
    """The files whose presence says "finished": each dataset's metadata.json and groups.json, deepest first."""
    found = [n for n in names if n == GROUPS_FILE or n.rsplit("/", 1)[-1] == METADATA_FILE]
    return sorted(found, key=lambda n: (n == GROUPS_FILE, n == METADATA_FILE, n))


def publish_remote(local: Path, url: str, overwrite: bool, progress: bool) -> None:
    """Upload a finished local dataset. Old objects (``--overwrite``) are deleted only now, so the old dataset
    stays readable during the conversion; the "finished" markers go first on delete and last on upload, so the
    prefix never looks finished while it is not."""
    up = remote.uploader(url, local)
    old = remote.list_keys(url, up)
    if old:
        if not overwrite:
            raise OutputExistsError(f"--out {url} received objects while converting; pass --overwrite to replace "
                                    "them, or choose another prefix")
        remote.delete_prefix(url, first=list(reversed(_markers(old))), up=up)
    names = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    remote.upload_dir(local, url, last=_markers(names), progress=progress)


# ------------------------------------------------------------------------------------------------- output folders


def check_output(out_dir: Path, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse a non-empty ``out`` without ``overwrite``, and an ``out`` that contains the inputs."""
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())) and not overwrite:
        raise OutputExistsError(f"--out {out_dir} already exists and is not empty (and was not converted with these "
                                "arguments from these inputs); pass --overwrite to replace it, or choose another "
                                "folder")
    check_inputs_outside(out_dir, inputs)


def check_inputs_outside(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an ``out`` that contains an input: the conversion writes (or replaces) what it would be reading."""
    resolved = out_dir.resolve()
    for p in inputs:
        if p.resolve().is_relative_to(resolved):
            raise OptionError(f"input {p} is inside --out {out_dir}, which the conversion writes into; "
                              "write the dataset to another folder")








# ------------------------------------------------------------------------------------------------------ writers


class _ShardBudget:
    """Bytes of samples all MDS writers hold for the shards they are building. Many groups x two splits x a
    64 MiB shard each would not fit in memory: past the limit the fullest pending shard is written early (smaller
    than --size-limit). A function of the input only, so outputs stay identical for any number of workers."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self.writers: list[_SplitWriter] = []

    def changed(self, delta: int) -> None:
        self.held += delta
        while self.held > self.limit:
            fullest = max(self.writers, key=lambda w: w.pending)
            if not fullest.pending:  # nothing left to write early (a limit below one sample)
                break
            self.held -= fullest.pending
            fullest.flush()


class _SplitWriter:
    """One split's packer + MDS writer + stats. The MDSWriter is opened at the first sample, so a run that fails
    early neither creates the split folder nor pays for importing streaming (which imports torch)."""

    def __init__(self, directory: Path, tok: Tokenizer, req: ConvertRequest, budget: _ShardBudget):
        self.directory, self.budget = directory, budget
        budget.writers.append(self)
        self.column = f"ndarray:{token_dtype(tok.vocab_size)}:{req.seq_len + 1}"
        self.compression, self.size_limit = _compression(req), req.size_limit
        self.stats = SplitStats()
        self.packer = Packer(req.seq_len, tok.eos_id, token_dtype(tok.vocab_size), self._write, PACKER_CAPACITY)
        self._writer = None

    def _write(self, sample: np.ndarray) -> None:
        if self._writer is None:
            from upstream.streaming import LeanMDSWriter

            self._writer = LeanMDSWriter(out=str(self.directory), columns={COLUMN: self.column},
                                         compression=self.compression, hashes=SHARD_HASHES,
                                         size_limit=self.size_limit)
        before = self.pending
        self._writer.write({COLUMN: sample})  # may write the full shard first
        self.budget.changed(self.pending - before)

    @property
    def pending(self) -> int:
        """Bytes of samples held for the shard being built."""
        if self._writer is None or not self._writer.new_samples:
            return 0
        return self._writer.new_shard_size - self._writer.extra_bytes_per_shard

    def flush(self) -> None:
        """Write the shard being built now, smaller than the size limit (what MDSWriter.write does when full)."""
        if self._writer is not None and self._writer.new_samples:
            self._writer.flush_shard()
            self._writer._reset_cache()

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


class _Outputs:
    """Every dataset being written: one at the root, or one per group (created as its value first appears)."""

    def __init__(self, root: Path, tok: Tokenizer, req: ConvertRequest):
        self.root, self.tok, self.req = root, tok, req
        self.names = [TRAIN, VAL] if req.val_fraction > 0 else [TRAIN]
        self.folders = GroupFolders(req.group_by) if req.group_by else None
        self.datasets: dict[str | None, dict[str, _SplitWriter]] = {}
        self.values: dict[str | None, str] = {}  # folder -> group value
        self._folder_of: dict[str | None, str | None] = {}  # group value -> folder
        self.budget = _ShardBudget(SHARD_CACHE_BUDGET)

    def splits(self, group: str | None, batch: list[Document]) -> dict[str, _SplitWriter]:
        if group not in self._folder_of:
            self._folder_of[group] = self._new_folder(group, batch)
        return self.datasets[self._folder_of[group]]

    def _new_folder(self, group: str | None, batch: list[Document]) -> str | None:
        folder = None
        if self.folders is not None:
            where = next(d.where for d in batch if d.group == group)
            if group is None:  # the readers refuse these; a safety net for a reader that does not
                raise InputError(f"{where}: the record has no {self.req.group_by!r} value to group by")
            folder = self.folders.folder(group, where)
        directory = self.root if folder is None else self.root / folder
        self.datasets[folder] = {n: _SplitWriter(directory / n, self.tok, self.req, self.budget) for n in self.names}
        self.values[folder] = group
        return folder

    def add(self, batch: list[Document], result: BatchResult) -> None:
        for (group, split), chunk in result.chunks.items():
            writer = self.splits(group, batch)[split]
            writer.stats.documents += chunk.documents
            writer.stats.bytes += chunk.bytes
            writer.packer.add_tokens(chunk.tokens)

    def abort(self) -> None:
        for splits in self.datasets.values():
            for w in splits.values():
                w.abort()


# --------------------------------------------------------------------------------------------------- conversion


def _convert_into(partial: Path, docs: Iterable[Document], tok: Tokenizer, req: ConvertRequest, record: dict,
                  source: dict, bad: BadRecords | None) -> Conversion:
    outputs = _Outputs(partial, tok, req)
    try:
        documents = _pack_all(docs, tok, outputs, req, bad)
    except BaseException:
        outputs.abort()
        raise
    if documents == 0:
        skipped = f" ({bad.summary()})" if bad is not None and bad.total else ""
        raise InputError(f"the inputs hold no documents{skipped}: all empty or with only empty texts; check the "
                         "inputs and --text-key")
    if bad is not None:
        source = {**source, "bad_records": bad.total}
    datasets, dropped = {}, {}
    for folder, splits in outputs.datasets.items():
        meta = _finish_dataset(partial if folder is None else partial / folder, splits, tok, req, source,
                               None if folder is None else (req.group_by, outputs.values[folder]))
        if meta is None:
            dropped[folder] = {"value": outputs.values[folder], **asdict(splits[TRAIN].stats)}
        else:
            datasets[folder] = meta
    if req.group_by is None:
        return Conversion(datasets, bad=bad)
    if not datasets:
        raise InputError(f"every group is too small for seq_len {req.seq_len} (less than one sample each); add "
                         "more text or lower --seq-len")
    groups = {f: group_record(outputs.values[f], m) for f, m in datasets.items()}
    record_groups = write_groups(partial, req.group_by, groups, dropped, record)
    return Conversion(datasets, groups=record_groups, bad=bad)


def _finish_dataset(directory: Path, splits: dict[str, _SplitWriter], tok: Tokenizer, req: ConvertRequest,
                    source: dict, group: tuple[str, str] | None) -> DatasetMetadata | None:
    """Close one dataset's splits and write its tokenizer and metadata.json (last); None: a group too small."""
    stats = {n: w.finish() for n, w in splits.items()}
    if not _check_split_sizes(stats, directory, req.seq_len, group):
        remove(directory)
        return None
    tok.save(directory / TOKENIZER_DIR)
    source = {**source, "index_sha256": {n: _sha256(directory / n / "index.json") for n in stats}}
    if group is not None:
        source["group"] = {"key": group[0], "value": group[1]}
    meta = DatasetMetadata(  # the tokenizer's file list lets a reader of a bucket fetch it (no listing needed)
        tokenizer={**tok.identity(), "files": tokenizer_files(directory / TOKENIZER_DIR)},
        vocab_size=tok.vocab_size, eos_id=tok.eos_id, seq_len=req.seq_len,
        dtype=token_dtype(tok.vocab_size), splits=stats, source=source,
    )
    meta.write(directory)  # last: its presence marks a finished dataset
    return meta


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_split_sizes(stats: dict[str, SplitStats], directory: Path, seq_len: int,
                       group: tuple[str, str] | None) -> bool:
    """Train must hold a sample (a group without one is dropped with a warning; a whole input without one is an
    error); an empty val split is dropped with a warning (tiny inputs, small fractions)."""
    train = stats[TRAIN]
    label = "" if group is None else f"group {group[1]!r}: "
    if train.samples == 0:
        if group is None:
            raise InputError(f"input too small for seq_len {seq_len}: {train.dropped_tokens} tokens in the train "
                             f"split, one sample needs {seq_len + 1}; add more text or lower --seq-len")
        warnings.warn(f"{label}{train.dropped_tokens} tokens in the train split, less than one sample of "
                      f"{seq_len + 1} tokens, so the group is not written", stacklevel=4)
        return False
    val = stats.get(VAL)
    if val is not None and val.samples == 0:
        warnings.warn(f"{label}the val split got {val.documents} document(s) / {val.dropped_tokens} tokens, less "
                      f"than one sample of {seq_len + 1} tokens, so no val split is written; raise --val-fraction "
                      "or lower --seq-len to get one", stacklevel=4)
        del stats[VAL]
        remove(directory / VAL)
    return True


def _pack_all(docs: Iterable[Document], tok: Tokenizer, outputs: _Outputs, req: ConvertRequest,
              bad: BadRecords | None) -> int:
    """Tokenize batch by batch (here or in workers) and feed the packers in input order; returns the documents."""
    documents = 0
    spec = EncoderSpec.of(tok, req.val_fraction, req.tokenizer_backend)
    results = encode_batches(_batches(docs), spec, req.workers, grouped=req.group_by is not None)
    with _Progress(req.progress) as bar, closing(results):
        for batch, result in results:
            _bad_texts(batch, result, bad)
            outputs.add(batch, result)
            n = len(batch) - len(result.bad)
            documents += n
            bar.update(n, result.bytes, result.tokens, batch[-1].path.name)
    return documents


def _bad_texts(batch: list[Document], result: BatchResult, bad: BadRecords | None) -> None:
    """Documents the encoder refused (not valid Unicode): the first is an error, or all are counted."""
    for i, reason in result.bad:
        error = BadRecordError(batch[i].where, "unpaired surrogate", reason,
                               "fix or drop that document, or pass --skip-bad to skip such records")
        if bad is None:
            raise error
        bad.add(error)


def _batches(docs: Iterable[Document]) -> Iterator[list[Document]]:
    """Groups of documents bounded in count and size (bounded memory, few calls). They depend on the input only,
    never on the number of workers."""
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
