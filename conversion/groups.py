"""``--group-by``: one dataset per group value (e.g. the Pile's ``meta.pile_set_name``) and the record of them all.

A group's folder name is its value with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``
("PubMed Central" -> "PubMed_Central", "Gutenberg (PG-19)" -> "Gutenberg__PG-19_"). Mixture yamls are written
with exactly this rule, so it must not change. ``groups.json`` next to the folders records every group's counts
and the arguments of the conversion; it is written last (the whole ``--out`` is published at once anyway).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path

from core.errors import InputError, MetadataError
from core.files import write_atomic
from core.metadata import METADATA_FILE, TOKENIZER_DIR, DatasetMetadata

GROUPS_FILE = "groups.json"
GROUPS_FORMAT = "gpt-composer-mds-groups"
GROUPS_VERSION = 1
FOLDER_RULE = "every character outside [A-Za-z0-9._-] replaced by _"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_RESERVED = {"", ".", "..", GROUPS_FILE, METADATA_FILE, TOKENIZER_DIR}


def group_folder(value: str) -> str:
    """The folder a group's dataset lives in (see the module docstring for the rule)."""
    return _UNSAFE.sub("_", value)


class GroupFolders:
    """Assigns folders to group values as they appear, refusing two values that would share one."""

    def __init__(self, key: str):
        self.key = key
        self._owner: dict[str, str] = {}  # folder -> value

    def folder(self, value: str, where: str) -> str:
        name = group_folder(value)
        owner = self._owner.get(name)
        if owner is None:
            if name in _RESERVED or name.startswith("."):
                raise InputError(f"{where}: group value {value!r} of {self.key!r} would be the folder {name!r}, "
                                 "which is not a usable dataset folder; fix the value or group by another key")
            self._owner[name] = value
        elif owner != value:
            raise InputError(f"{where}: group values {owner!r} and {value!r} of {self.key!r} both map to the folder "
                             f"{name!r} ({FOLDER_RULE}); rename one of them in the data or group by another key")
        return name


def group_record(value: str, meta: DatasetMetadata) -> dict:
    """One group's line in groups.json: totals over its splits, and the splits themselves."""
    splits = {name: asdict(s) for name, s in meta.splits.items()}
    return {"value": value, "documents": sum(s["documents"] for s in splits.values()),
            "tokens": sum(s["tokens"] for s in splits.values()),
            "samples": sum(s["samples"] for s in splits.values()), "splits": splits}


def write_groups(directory: Path, key: str, groups: dict[str, dict], dropped: dict[str, dict],
                 request: dict) -> dict:
    """Atomically write ``directory/groups.json``; returns what was written."""
    record = {"format": GROUPS_FORMAT, "version": GROUPS_VERSION, "group_by": key, "folder_rule": FOLDER_RULE,
              "groups": dict(sorted(groups.items())), "dropped": dict(sorted(dropped.items())), "request": request}
    write_atomic(directory / GROUPS_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_groups(directory: str | os.PathLike) -> dict:
    """``groups.json`` of a grouped output, or :class:`MetadataError` saying what is wrong."""
    path = Path(directory) / GROUPS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise MetadataError(f"{directory} has no {GROUPS_FILE}: not a finished --group-by output") from None
    except json.JSONDecodeError as e:
        raise MetadataError(f"{path} is not valid JSON ({e}); re-run convert_to_mds.py to rebuild it") from None
    if record.get("format") != GROUPS_FORMAT or record.get("version") != GROUPS_VERSION:
        raise MetadataError(f"{path} was not written by this convert_to_mds.py; re-run it")
    return record


def summary_table(groups: dict[str, dict], dropped: dict[str, dict]) -> str:
    """Tokens per group, largest first, with each group's share: what a mixture's weights start from."""
    total = sum(g["tokens"] for g in groups.values()) or 1
    rows = sorted(groups.items(), key=lambda kv: (-kv[1]["tokens"], kv[0]))
    width = max([len("group"), *(len(name) for name in [*groups, *dropped])])
    lines = [f"{'group':<{width}}  {'documents':>11}  {'tokens':>15}  {'samples':>11}  {'share':>6}"]
    for name, g in rows:
        lines.append(f"{name:<{width}}  {g['documents']:>11,}  {g['tokens']:>15,}  {g['samples']:>11,}  "
                     f"{100 * g['tokens'] / total:>5.1f}%")
    for name, g in sorted(dropped.items()):
        lines.append(f"{name:<{width}}  {g['documents']:>11,}  {'(too small: not written)':>37}")
    lines.append(f"{'total':<{width}}  {sum(g['documents'] for g in groups.values()):>11,}  {total:>15,}  "
                 f"{sum(g['samples'] for g in groups.values()):>11,}")
    return "\n".join(lines)
