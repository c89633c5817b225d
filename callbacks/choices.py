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


CHOICE_METRICS = ("acc", "acc_norm", "acc_norm_tokens")


def picks(model: GPT, tokens: torch.Tensor, mask: torch.Tensor, chars: list[int]) -> dict[str, int]:
    """The ending each rule picks: ``acc`` the least summed loss; ``acc_norm`` the least loss per character of the
    ending (lm-evaluation-harness's ``acc_norm``, the figure leaderboards quote); ``acc_norm_tokens`` the least loss
    per token (Karpathy's build-nanoGPT and llm.c). ``chars``: each ending's length in characters."""
    total, mean = ending_losses(model, tokens, mask)
    per_char = total / torch.tensor(chars, dtype=total.dtype, device=total.device)
    return {"acc": int(total.argmin()), "acc_norm": int(per_char.argmin()), "acc_norm_tokens": int(mean.argmin())}
