"""Scoring multiple-choice items: each ending's loss after the context, and the ending each rule picks. The one
scorer: ``eval.py --hellaswag`` and a training run's ``eval_tasks`` both pick through here."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from gpt import GPT, KVCache


@torch.no_grad()
def ending_losses(model: GPT, tokens: torch.Tensor, mask: torch.Tensor,
                  share_context: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy (nats) of each row's ending tokens, all endings in one forward; the model reads
    each row but its last token (loaders.choices.encode_item). Causal attention means the right padding cannot
    change the ending positions; it is masked out of the sums.

    ``share_context`` (eval.py): when every row starts with the same context (no row was cut on the left), the
    context goes through the model once, for one row, and the endings follow it through the KV cache: the same
    losses within float noise for ~half the FLOPs of HellaSwag-sized items (bench/eval_throughput.py). Off for a
    training run's evaluators, whose model may be compiled or sharded."""
    device = next(model.parameters()).device  # eval.py --device
    tokens, mask = tokens.to(device), mask.to(device)
    start = _shared_context(tokens, mask) if share_context else 0
    if start:
        logits = _after_context(model, tokens[:, :-1], start)  # positions start-1 .. L-2
    else:
        start, logits = 1, model(tokens[:, :-1])  # positions 0 .. L-2
    targets, scored = tokens[:, start:], mask[:, start:]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    total = (loss * scored).sum(1)
    return total, total / scored.sum(1)


def _shared_context(tokens: torch.Tensor, mask: torch.Tensor) -> int:
    """The length of the context every row starts with, or 0 when the rows' contexts differ."""
    firsts = mask.int().argmax(1)  # each row's first ending token
    start = int(firsts[0])
    if start < 1 or bool((firsts != start).any()) or bool((tokens[:, :start] != tokens[:1, :start]).any()):
        return 0
    return start


def _after_context(model: GPT, inputs: torch.Tensor, start: int) -> torch.Tensor:
    """(E, L - start, V) logits of positions ``start - 1 ..`` of each row: the shared context ``inputs[0, :start]``
    in one forward, then every row's ending after it, through a KV cache broadcast to the E rows."""
    rows, width = inputs.shape
    cache = KVCache(model.config, size=width)
    last = model(inputs[:1, :start], cache, last_only=True).expand(rows, -1, -1)  # predicts each ending's first token
    if width == start:  # one-token endings only
        return last
    cache.broadcast(rows)
    return torch.cat([last, model(inputs[:, start:], cache)], 1)


CHOICE_METRICS = ("acc", "acc_norm", "acc_norm_tokens")


def picks(model: GPT, tokens: torch.Tensor, mask: torch.Tensor, chars: list[int],
          share_context: bool = False) -> dict[str, int]:
    """The ending each rule picks: ``acc`` the least summed loss; ``acc_norm`` the least loss per character of the
    ending (lm-evaluation-harness's ``acc_norm``, the figure leaderboards quote); ``acc_norm_tokens`` the least loss
    per token (Karpathy's build-nanoGPT and llm.c). ``chars``: each ending's length in characters."""
    return choose(*ending_losses(model, tokens, mask, share_context), chars)


def choose(total: torch.Tensor, mean: torch.Tensor, chars: list[int]) -> dict[str, int]:
    """:func:`picks` from an item's losses (:func:`ending_losses`)."""
    per_char = total / torch.tensor(chars, dtype=total.dtype, device=total.device)
    return {"acc": int(total.argmin()), "acc_norm": int(per_char.argmin()), "acc_norm_tokens": int(mean.argmin())}


def pick_batch(model: GPT, items: list) -> torch.Tensor:
    """(N, len(CHOICE_METRICS)) endings picked for a batch of encoded items (loaders.choices.EncodedItem), each item
    in its own forward: the same shapes, so the same numbers, as ``eval.py --hellaswag``."""
    rows = [picks(model, item.tokens, item.mask, item.chars) for item in items]
    return torch.tensor([[row[rule] for rule in CHOICE_METRICS] for row in rows], dtype=torch.long)


class ChoiceAccuracy(Metric):
    """Share of items whose ending picked by one rule (``acc``, ``acc_norm``, ``acc_norm_tokens``) is the label;
    counts summed over ranks. Padding items (``valid`` False) are not counted."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, rule: str, dist_sync_on_step: bool = False):
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.column = CHOICE_METRICS.index(rule)
        self.add_state("hits", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("items", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, chosen: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> None:
        valid = valid.to(chosen.device)
        self.hits += ((chosen[:, self.column] == labels.to(chosen.device)) & valid).sum()
        self.items += valid.sum()

    def compute(self) -> torch.Tensor:
        return self.hits.double() / self.items.clamp_min(1)


def choice_metrics() -> dict[str, Metric]:
    """The metrics of a multiple-choice evaluator, keyed by the names they are logged under
    (``metrics/<task>/acc``...)."""
    return {rule: ChoiceAccuracy(rule) for rule in CHOICE_METRICS}
