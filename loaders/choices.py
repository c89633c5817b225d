"""Multiple-choice items in HellaSwag's jsonl layout (``ctx``, ``endings``, ``label``): read, checked line by line,
and encoded as the model scores them. The one reader of such files: ``eval.py --hellaswag`` and the ``eval_tasks`` of
a training run both read through here, so both score the same items with the same truncation.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from core.errors import HellaSwagError
from core.remote import download_file, is_remote
from core.tokenizer import Tokenizer


@dataclass
class Item:
    """One multiple-choice question: which ending continues ``ctx``."""

    ctx: str
    endings: list[str]
    label: int


def read_items(path: str) -> list[Item]:
    """HellaSwag's jsonl layout (other keys ignored), from a file or an ``s3://`` object; a bad line fails naming
    ``file:line``."""
    try:
        lines = _text(path).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HellaSwagError(f"cannot read {path} ({type(e).__name__}: {e})") from None
    items = [_parse_item(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not items:
        raise HellaSwagError(f"{path} holds no items; one JSON object per line: "
                             '{"ctx": str, "endings": [str, ...], "label": int}')
    return items


def _text(path: str) -> str:
    if not is_remote(path):
        return Path(path).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="choices-") as tmp:
        download_file(path, Path(tmp) / "items.jsonl")  # RemoteError: one line naming the object and the cause
        return (Path(tmp) / "items.jsonl").read_text(encoding="utf-8")


def _parse_item(line: str, where: str) -> Item:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise HellaSwagError(f"{where}: not JSON ({e})") from None
    if not isinstance(d, dict) or not {"ctx", "endings", "label"} <= set(d):
        raise HellaSwagError(f"{where}: needs an object with keys ctx, endings, label")
    ctx, endings, label = d["ctx"], d["endings"], d["label"]
    if not isinstance(ctx, str) or not ctx:
        raise HellaSwagError(f"{where}: ctx must be a non-empty string")
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e for e in endings):
        raise HellaSwagError(f"{where}: endings must be a list of at least 2 non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
        raise HellaSwagError(f"{where}: label must be an int in [0, {len(endings)}), got {label!r}")
    return Item(ctx, endings, label)


def encode_item(item: Item, tokenizer: Tokenizer, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, L) rows ``ctx + " " + ending`` right-padded with 0, and a mask of the ending tokens; the model reads each
    row but its last token (so ``L <= block_size + 1``).

    Encoded as lm-evaluation-harness encodes a (context, continuation) pair (its ``_encode_pair``), so that both
    score the same tokens (tests/evaluation/test_lm_eval_parity.py): whitespace at the end of the context moves
    into the ending, the ending's tokens are those of ``ctx + " " + ending`` after the context's own (an empty
    context is the EOS token), and a row too long for the model keeps its last ``block_size + 1`` tokens (the
    context is cut on the left, each row by what its own ending needs)."""
    ctx, ends = _encode_pair(item, tokenizer)
    longest = max(len(e) for e in ends)
    if longest > block_size:
        raise HellaSwagError(f"an ending of {longest} tokens leaves no room for context in the model's block_size "
                             f"{block_size}")
    rows = [(ctx + end)[-(block_size + 1):] for end in ends]
    tokens = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (row, end) in enumerate(zip(rows, ends)):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, len(row) - len(end):len(row)] = True
    return tokens, mask


def _encode_pair(item: Item, tokenizer: Tokenizer) -> tuple[list[int], list[list[int]]]:
    """The context's ids and each ending's, as lm-evaluation-harness's ``_encode_pair`` splits them."""
    ctx = item.ctx.rstrip()
    moved = item.ctx[len(ctx):]  # the context's trailing whitespace starts every ending
    ctx_ids = tokenizer.encode(ctx) if ctx else [tokenizer.eos_id]
    ends = []
    for ending in item.endings:
        whole = tokenizer.encode(ctx + moved + " " + ending)
        ends.append(whole[len(ctx_ids):] if ctx else whole)
    return ctx_ids, ends


# --------------------------------------------------------------------------------------- items during training


@dataclass
class EncodedItem:
    """An item as the model scores it (see :func:`encode_item`); ``valid`` False: a rank's padding (not counted)."""

    tokens: torch.Tensor  # (E, L)
    mask: torch.Tensor  # (E, L) the ending tokens
    chars: list[int]  # each ending's length in characters (acc_norm)
    label: int
    valid: bool = True


class ChoiceItems(torch.utils.data.IterableDataset):
    """This rank's items, encoded once at start: items ``rank, rank + W, ...``, padded at the end to the same count
    on every rank (with item 0 marked invalid: never counted), so that every rank runs as many forwards (FSDP
    all-gathers in each). Iterable, so that Composer neither asks for a DistributedSampler nor removes padding as
    it does for one; read in the main process (a loader worker would serve each item again)."""

    def __init__(self, items: list[Item], tokenizer: Tokenizer, block_size: int, rank: int = 0, world: int = 1):
        self.items = [EncodedItem(*encode_item(item, tokenizer, block_size), [len(e) for e in item.endings],
                                  item.label) for item in items]
        self.indices = [i if i < len(items) else -1 for i in range(rank, -(-len(items) // world) * world, world)]

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[EncodedItem]:
        for index in self.indices:
            if index < 0:
                first = self.items[0]
                yield EncodedItem(first.tokens, first.mask, first.chars, first.label, valid=False)
            else:
                yield self.items[index]


def collate_items(items: list[EncodedItem]) -> dict:
    """A batch of items, kept apart (each is scored in its own forward, as ``eval.py --hellaswag`` scores it)."""
    return {"choices": items, "labels": torch.tensor([i.label for i in items]),
            "valid": torch.tensor([i.valid for i in items])}
