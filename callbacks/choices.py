"""Scoring multiple-choice items: each ending's loss after the context, and the ending each rule picks. The one
scorer: ``eval.py --hellaswag`` and a training run's ``eval_tasks`` both pick through here."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gpt import GPT


@torch.no_grad()
def ending_losses(model: GPT, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy (nats) of each row's ending tokens, all endings in one forward. Causal
    attention means the right padding cannot change the ending positions; it is masked out of the sums."""
    device = next(model.parameters()).device  # eval.py --device
    tokens, mask = tokens.to(device), mask.to(device)
    logits = model(tokens)[:, :-1]
    targets, scored = tokens[:, 1:], mask[:, 1:]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    total = (loss * scored).sum(1)
    return total, total / scored.sum(1)


def picks(model: GPT, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    """The ending picked by least summed loss (``acc``) and by least loss per token (``acc_norm``: it does not
    favour short endings), as Karpathy's build-nanoGPT scores HellaSwag."""
    total, mean = ending_losses(model, tokens, mask)
    return int(total.argmin()), int(mean.argmin())
