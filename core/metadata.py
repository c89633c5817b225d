"""The metadata file written next to the shards: the single record of how a dataset was made.

Conversion writes ``DIR/metadata.json`` last (its presence marks a finished dataset); training reads vocab size,
EOS id and sequence length from it and rebuilds the tokenizer from ``DIR/tokenizer/``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import MetadataError
from core.files import write_atomic
from core.remote import is_remote

SHARD_HASH = "sha256"  # recorded in index.json for every shard file at conversion; checked on every read
METADATA_FILE = "metadata.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = "gpt-composer-mds"
VERSION = 1
COLUMN = "tokens"


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
        """
        d = dataclasses.asdict(self)
        d.pop("source", None)
        d["tokenizer"] = {k: v for k, v in d["tokenizer"].items() if k != "files"}
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
        if d.get("format") != FORMAT:
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


def check_local_datasets(roots: list[str]) -> None:
    """Read each local root's metadata (remote ones are fetched later, with the cache): a wrong path fails in a
    fraction of a second, before training imports torch and Composer."""
    for root in roots:
        if not is_remote(root):
            read_metadata(root)
