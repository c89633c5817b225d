"""``convert_to_mds.py --verify DIR``: is a converted dataset on disk exactly what the conversion wrote?

Checks every shard against the size and hash Streaming's MDSWriter recorded in ``index.json`` at write time, each
``index.json`` against the sha256 ``metadata.json`` recorded for it, and ``metadata.json`` against the index (samples
per split, sample length, dtype, column). Every problem is collected, not just the first: a user repairing a copy
wants the whole list. A ``--group-by`` output is verified group by group, and ``groups.json`` against the groups.
A dataset made by llm-foundry (no ``metadata.json``, one ``tokens`` column) is checked as far as its ``index.json``
files allow: every shard present, of the recorded size, and of the recorded hashes when it has any.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from conversion.groups import GROUPS_FILE, group_record, read_groups
from core.errors import MetadataError
from core.metadata import (
    INDEX_FILE,
    METADATA_FILE,
    TOKENIZER_DIR,
    TOKENIZER_KEY,
    DatasetMetadata,
    FoundrySplit,
    foundry_splits,
    read_metadata,
)


@dataclass
class Report:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    foundry: bool = False  # an llm-foundry dataset: no metadata.json to check the index files against
    unhashed: int = 0  # its shards with no hash recorded (llm-foundry's converters record none by default)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """The line printed when every check passed."""
        line = f"ok: {self.shards} shards, {self.samples} samples"
        if self.foundry:
            sizes = f", {self.unhashed} of them by size only (no hash recorded)" if self.unhashed else ""
            line += (f" (an llm-foundry dataset: no {METADATA_FILE}, so shards were checked against their "
                     f"{INDEX_FILE} only{sizes}; training reads it with {TOKENIZER_KEY} naming its tokenizer)")
        return line

    def fix(self) -> str:
        """What to do about the problems found."""
        if self.foundry:
            return "copy it again, or re-run llm-foundry's converter"
        return "re-convert it with --overwrite"


def verify(root: str | Path) -> Report:
    """Verify the dataset (or every group of the grouped output) at ``root``."""
    root = Path(root)
    report = Report()
    if (root / METADATA_FILE).is_file():
        _verify_dataset(root, report)
    elif (root / GROUPS_FILE).is_file():
        _verify_groups(root, report)
    elif (root / "tasks").is_dir():
        report.problems.append(f"{root}: a task output not merged yet (no {METADATA_FILE}); when every task is done: "
                               f"convert_to_mds.py --merge {root}")
    elif foundry_splits(root):
        _verify_foundry(root, foundry_splits(root), report)
    elif root.is_dir():
        report.problems.append(f"{root}: no {METADATA_FILE} or {GROUPS_FILE}: not a finished convert_to_mds.py "
                               "output (a killed conversion leaves none)")
    else:
        report.problems.append(f"{root}: no such folder")
    return report


def _verify_groups(root: Path, report: Report) -> None:
    try:
        record = read_groups(root)
    except MetadataError as e:
        report.problems.append(str(e))
        return
    for folder, expected in sorted(record["groups"].items()):
        meta = _verify_dataset(root / folder, report)
        if meta is not None and group_record(expected["value"], meta) != expected:
            report.problems.append(f"{root / GROUPS_FILE}: the counts of group {folder!r} differ from "
                                   f"{root / folder / METADATA_FILE}")


def _verify_dataset(root: Path, report: Report) -> DatasetMetadata | None:
    try:
        meta = read_metadata(root)
    except MetadataError as e:
        report.problems.append(str(e))
        return None
    for name, stats in meta.splits.items():
        samples = _verify_split(root / name, meta, report)
        if samples is not None and samples != stats.samples:
            report.problems.append(f"{root / METADATA_FILE}: split {name!r} has {stats.samples} samples, its "
                                   f"{INDEX_FILE} {samples}")
    for extra in sorted(p.name for p in root.iterdir() if (p / INDEX_FILE).is_file() and p.name not in meta.splits):
        report.problems.append(f"{root / extra}: a split that {root / METADATA_FILE} does not list")
    for name in meta.tokenizer.get("files") or []:
        if not (root / TOKENIZER_DIR / name).is_file():
            report.problems.append(f"{root / TOKENIZER_DIR / name}: missing (listed in {METADATA_FILE})")
    return meta


def _verify_foundry(root: Path, splits: dict[str, FoundrySplit], report: Report) -> None:
    """Every shard of every split against its index.json (the column's form is what found the dataset)."""
    report.foundry = True
    for name, split in splits.items():
        for shard in split.index.get("shards", []):
            _verify_shard(root / name, _file_of(shard), report)
            report.shards += 1
            report.unhashed += not _file_of(shard).get("hashes")
        report.samples += split.samples


def _verify_split(split: Path, meta: DatasetMetadata, report: Report) -> int | None:
    """Check one split's index and shards; returns the samples its index lists (None if unreadable)."""
    index_path = split / INDEX_FILE
    try:
        data = index_path.read_bytes()
        index = json.loads(data)
    except (OSError, ValueError) as e:
        report.problems.append(f"{index_path}: unreadable ({type(e).__name__}: {e})")
        return None
    recorded = (meta.source.get("index_sha256") or {}).get(split.name)
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        report.problems.append(f"{index_path}: changed since the conversion (sha256 differs from {METADATA_FILE})")
    column = f"ndarray:{meta.dtype}:{meta.sample_len}"
    shards = index.get("shards", [])
    if shards and not any(_file_of(s).get("hashes") for s in shards):
        report.problems.append(f"{index_path}: no shard hashes recorded (converted before they were), so only "
                               "sizes and counts were checked; re-convert to get them")
    for shard in shards:
        if shard.get("column_names") != [meta.column] or shard.get("column_encodings") != [column]:
            report.problems.append(f"{index_path}: shard {_file_of(shard).get('basename')} holds "
                                   f"{shard.get('column_encodings')}, {METADATA_FILE} says [{column!r}]")
        _verify_shard(split, _file_of(shard), report)
        report.shards += 1
        report.samples += int(shard.get("samples", 0))
    return sum(int(s.get("samples", 0)) for s in shards)


def _file_of(shard: dict) -> dict:
    """The file that is on disk: the compressed one when there is one."""
    return shard.get("zip_data") or shard.get("raw_data") or {}


def _digest(algo: str, data: bytes) -> str:
    """hashlib's algorithms directly (Streaming's ``get_hash`` would import torch just to call them)."""
    if algo in hashlib.algorithms_available:
        return hashlib.new(algo, data).hexdigest()
    from streaming.base.hashing import get_hash  # xxhash family

    return get_hash(algo, data)


def _verify_shard(split: Path, info: dict, report: Report) -> None:
    path = split / str(info.get("basename"))
    if not path.is_file():
        report.problems.append(f"{path}: missing")
        return
    size = path.stat().st_size
    if size != info.get("bytes"):
        report.problems.append(f"{path}: {size} bytes, {INDEX_FILE} says {info.get('bytes')} (truncated or "
                               "overwritten)")
        return
    hashes = info.get("hashes") or {}
    data = path.read_bytes() if hashes else b""
    for algo, expected in sorted(hashes.items()):
        if _digest(algo, data) != expected:
            report.problems.append(f"{path}: {algo} differs from the one recorded at write time (corrupted)")
