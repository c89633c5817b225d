"""The metadata file written next to the shards: the single record of how a dataset was made.

Conversion writes ``DIR/metadata.json`` last (its presence marks a finished dataset); training reads vocab size,
EOS id and sequence length from it and rebuilds the tokenizer from ``DIR/tokenizer/``.

A dataset made by llm-foundry's converters (``convert_dataset_hf.py`` / ``convert_dataset_json.py`` with
``--concat_tokens``) has no ``metadata.json``: one ``tokens`` column per split folder, as ``ndarray:int32`` (its
current form) or ``bytes`` holding raw int64 ids (its older form). Its record is synthesized instead
(:func:`foundry_metadata`): splits and sample counts from each ``index.json``, the sample length from a sample, and
the tokenizer from the one key that names it (``data.tokenizer``), since nothing in the folder does.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from core.errors import MetadataError
from core.files import write_atomic
from core.remote import is_remote

if TYPE_CHECKING:
    from core.tokenizer import Tokenizer

SHARD_HASH = "sha256"  # recorded in index.json for every shard file at conversion; checked on every read
METADATA_FILE = "metadata.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = "gpt-composer-mds"
FOUNDRY_FORMAT = "llm-foundry-mds"  # a record synthesized for an llm-foundry dataset (never written next to it)
VERSION = 1
COLUMN = "tokens"
INDEX_FILE = "index.json"
TOKENIZER_KEY = "data.tokenizer"  # the config key naming the tokenizer of a dataset without metadata.json
FOUNDRY_BYTES = "bytes"  # llm-foundry's older tokens column: raw int64 ids
_INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


@dataclass
class SplitStats:
    """What one split holds. ``bytes`` counts UTF-8 bytes of the documents' text."""

    documents: int = 0
    tokens: int = 0  # tokens in samples, EOS included (the tail that did not fill a sample is not counted)
    bytes: int = 0
    samples: int = 0
    dropped_tokens: int = 0  # the last partial sample's tokens


@dataclass
class DatasetMetadata:
    """Everything training needs to know about a converted dataset.

    Each sample holds ``seq_len + 1`` tokens (``sample_len``): the model reads the first ``seq_len`` and predicts
    the last ``seq_len``. Consecutive samples overlap by one token so every token is a target once.
    """

    tokenizer: dict  # {"kind": "bytes"|"hf", "name": str, "sha256": str|None, "files": [names under tokenizer/]}
    vocab_size: int
    eos_id: int
    seq_len: int
    dtype: str  # "uint16" or "uint32"
    splits: dict[str, SplitStats] = field(default_factory=dict)
    source: dict = field(default_factory=dict)  # inputs, val_fraction, text_key: for the record
    format: str = FORMAT
    version: int = VERSION
    column: str = COLUMN

    @property
    def sample_len(self) -> int:
        return self.seq_len + 1

    def content_digest(self) -> str:
        """Identity of the data itself (tokenizer, packing and per-split counts), not of where it was read from.

        ``tokenizer["files"]`` (how the tokenizer is stored, for downloading it) is left out: the tokenizer's identity
        is its sha256, and datasets converted before the list was recorded keep their digest (checkpoints match).
        An llm-foundry dataset has no per-split document or byte counts to tell two of the same shape apart, so its
        digest also covers the sha256 of each split's ``index.json`` (which lists every shard's size and hashes).
        """
        d = dataclasses.asdict(self)
        d.pop("source", None)
        d["tokenizer"] = {k: v for k, v in d["tokenizer"].items() if k != "files"}
        if self.format == FOUNDRY_FORMAT:
            d["index_sha256"] = self.source.get("index_sha256")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["sample_len"] = self.sample_len
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "DatasetMetadata":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise MetadataError(f"{where} is not valid JSON ({e}); re-run convert_to_mds.py to rebuild it") from None
        if d.get("format") not in (FORMAT, FOUNDRY_FORMAT):  # a run's data record may be a synthesized one
            raise MetadataError(f"{where} was not written by convert_to_mds.py; convert the data with it first")
        if d.get("version") != VERSION:
            raise MetadataError(
                f"{where} has format version {d.get('version')}, this code reads {VERSION}; re-run convert_to_mds.py"
            )
        d.pop("sample_len", None)
        d["splits"] = {k: SplitStats(**v) for k, v in d.get("splits", {}).items()}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def write(self, directory: str | os.PathLike) -> None:
        """Atomically write ``directory/metadata.json`` (a reader never sees half a file)."""
        write_atomic(Path(directory) / METADATA_FILE, self.to_json())


def tokenizer_files(directory: str | os.PathLike) -> list[str]:
    """Sorted relative names of the files in a saved tokenizer folder: what a reader of a remote dataset must
    download (an object store cannot be listed by every backend Streaming reads from)."""
    root = Path(directory)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def read_metadata(directory: str | os.PathLike) -> DatasetMetadata:
    """Read a local dataset's metadata, or fail saying how to make it."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        if not Path(directory).exists():
            raise MetadataError(
                f"dataset folder {directory} does not exist; convert data into it with convert_to_mds.py")
        raise MetadataError(
            f"{directory} has no {METADATA_FILE}: it is not a finished dataset made by convert_to_mds.py "
            "(a conversion that was killed leaves none). Re-run convert_to_mds.py --out "
            f"{directory} --overwrite"
        )
    return DatasetMetadata.from_json(path.read_text(), str(path))


def check_local_datasets(roots: list[str], tokenizer: Optional[str] = None) -> None:
    """Read each local root's metadata (remote ones are fetched later, with the cache): a wrong path, or an
    llm-foundry dataset without ``data.tokenizer``, fails in a fraction of a second, before training imports torch
    and Composer."""
    for root in roots:
        if is_remote(root):
            continue
        if foundry_splits(root):
            if tokenizer is None:
                raise missing_tokenizer(root)
            continue
        read_metadata(root)


# ------------------------------------------------------------------------------------- datasets made by llm-foundry


@dataclass(frozen=True)
class FoundrySplit:
    """One split folder of an llm-foundry dataset, as its ``index.json`` describes it."""

    index: dict  # the parsed index.json
    sha256: str  # of the index.json bytes: the split's identity (it lists every shard's size and hashes)
    dtype: Optional[str]  # the stored token dtype ("int32", or "int64" for the bytes column); None: no shards

    @property
    def samples(self) -> int:
        return sum(int(shard.get("samples", 0)) for shard in self.index.get("shards", []))


def foundry_token_dtype(shard: dict) -> Optional[str]:
    """The dtype of a shard's tokens when it holds llm-foundry's concat-tokens column and nothing else: one
    ``tokens`` column, ``ndarray:<int>`` without a fixed shape (ours always has one) or ``bytes`` (int64 ids)."""
    if shard.get("format") != "mds" or shard.get("column_names") != [COLUMN]:
        return None
    encoding = (shard.get("column_encodings") or [""])[0]
    if encoding == FOUNDRY_BYTES:
        return "int64"
    kind, _, dtype = encoding.partition(":")
    return dtype if kind == "ndarray" and dtype in _INT_DTYPES else None


def parse_foundry_index(data: bytes) -> Optional[FoundrySplit]:
    """A split from its ``index.json`` bytes; None unless every shard is llm-foundry's tokens column."""
    try:
        index = json.loads(data)
    except ValueError:
        return None
    shards = index.get("shards") if isinstance(index, dict) else None
    if not isinstance(shards, list):
        return None
    dtypes = {foundry_token_dtype(shard) for shard in shards}
    if None in dtypes or len(dtypes) > 1:
        return None
    return FoundrySplit(index, hashlib.sha256(data).hexdigest(), dtypes.pop() if dtypes else None)


def foundry_splits(directory: str | os.PathLike) -> dict[str, FoundrySplit]:
    """Every split of a local llm-foundry dataset by name (its subfolders holding an ``index.json``); empty when
    ``directory`` has a ``metadata.json`` (ours) or any split of another kind (ours without its metadata.json: a
    damaged copy, which must stay an error rather than be read as someone else's format)."""
    root = Path(directory)
    if not root.is_dir() or (root / METADATA_FILE).is_file():
        return {}
    splits = {}
    for index_path in sorted(root.glob(f"*/{INDEX_FILE}")):
        split = parse_foundry_index(index_path.read_bytes())
        if split is None:
            return {}
        splits[index_path.parent.name] = split
    return splits if any(s.dtype for s in splits.values()) else {}


def missing_tokenizer(root: str, option: str = TOKENIZER_KEY) -> MetadataError:
    """The one error for an llm-foundry dataset whose tokenizer nobody named: the folder cannot say it."""
    example = f"{option}=gpt2" if option.startswith("data.") else f"{option} gpt2"
    return MetadataError(f"{root} has no {METADATA_FILE}: it is an llm-foundry dataset (a '{COLUMN}' column), which "
                         f"does not record its tokenizer; name the one it was made with in {option} (e.g. "
                         f"{example}, or a folder holding tokenizer.json or vocab.json + merges.txt)")


def foundry_metadata(splits: dict[str, FoundrySplit], sample_len: int, tokenizer: "Tokenizer") -> DatasetMetadata:
    """The record an llm-foundry dataset would have: llm-foundry trains on all ``sample_len`` tokens of a sample
    with the labels shifted inside it, as we do on our ``seq_len + 1``, so ``seq_len = sample_len - 1``."""
    dtypes = sorted({s.dtype for s in splits.values() if s.dtype})
    return DatasetMetadata(
        tokenizer=tokenizer.identity(),
        vocab_size=tokenizer.vocab_size,
        eos_id=tokenizer.eos_id,
        seq_len=sample_len - 1,
        dtype=",".join(dtypes),
        splits={name: SplitStats(tokens=s.samples * sample_len, samples=s.samples) for name, s in splits.items()},
        source={"made_by": "llm-foundry", "index_sha256": {name: s.sha256 for name, s in splits.items()}},
        format=FOUNDRY_FORMAT,
    )
