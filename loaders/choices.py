"""Multiple-choice items in HellaSwag's jsonl layout (``ctx``, ``endings``, ``label``): read, checked line by line,
and encoded as the model scores them. The one reader of such files: ``eval.py --hellaswag`` and the ``eval_tasks`` of
a training run both read through here, so both score the same items with the same truncation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import HellaSwagError
from core.tokenizer import Tokenizer


@dataclass
class Item:
    """One multiple-choice question: which ending continues ``ctx``."""

    ctx: str
    endings: list[str]
    label: int


def read_items(path: str) -> list[Item]:
    """HellaSwag's jsonl layout (other keys ignored); a bad line fails naming ``file:line``."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HellaSwagError(f"cannot read {path} ({type(e).__name__}: {e})") from None
    items = [_parse_item(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not items:
        raise HellaSwagError(f"{path} holds no items; one JSON object per line: "
                             '{"ctx": str, "endings": [str, ...], "label": int}')
    return items


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
    if not isinstance(endings, list) or not endings or not all(isinstance(e, str) and e for e in endings):
        raise HellaSwagError(f"{where}: endings must be a non-empty list of non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
        raise HellaSwagError(f"{where}: label must be an int in [0, {len(endings)}), got {label!r}")
    return Item(ctx, endings, label)


def encode_item(item: Item, tokenizer: Tokenizer, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, L) rows ``ctx + " " + ending`` right-padded with 0, and a mask of the ending tokens.

    A context too long for the model is cut on the left, by the same amount for every ending (each is judged
    after the same context)."""
    ctx = tokenizer.encode(item.ctx)
    ends = [tokenizer.encode(" " + e) for e in item.endings]
    room = block_size - max(len(e) for e in ends)
    if room < 1:
        raise HellaSwagError(f"an ending of {max(len(e) for e in ends)} tokens leaves no room for context in the "
                             f"model's block_size {block_size}")
    ctx = ctx[-room:]
    width = len(ctx) + max(len(e) for e in ends)
    tokens = torch.zeros(len(ends), width, dtype=torch.long)
    mask = torch.zeros(len(ends), width, dtype=torch.bool)
    for i, end in enumerate(ends):
        tokens[i, :len(ctx) + len(end)] = torch.tensor(ctx + end)
        mask[i, len(ctx):len(ctx) + len(end)] = True
    return tokens, mask
