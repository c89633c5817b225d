"""The ComposerModel around gpt.py's GPT: loss, metrics and FLOPs for Composer; the GPT stays a plain module.

The GPT is the single child ``self.model`` so that FSDP can wrap it (and, through ``fsdp_wrap_fn``, its blocks).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch
import torch.utils.checkpoint
from composer.models import ComposerModel
from torchmetrics import Metric

from callbacks.choices import ChoiceAccuracy, choice_metrics, pick_batch
from callbacks.metrics import eval_metrics
from gpt import GPT, GPTConfig, next_token_loss
from gpt_modern import build_gpt


class ComposerGPT(ComposerModel):
    """Batches are ``{"input_ids": (B, T), "labels": (B, T)}`` with labels already shifted by one."""

    def __init__(self, config: GPTConfig, token_bytes: torch.Tensor):
        super().__init__()
        self.model = build_gpt(config)  # gpt.py's GPT, or gpt_modern.py's ModernGPT for a ModernConfig
        # Composer's FSDP2 policy asks the ComposerModel's child which of its modules to shard on their own
        self.model.fsdp_wrap_fn = self.fsdp_wrap_fn
        self.model.activation_checkpointing_fn = self.activation_checkpointing_fn
        self.config = config
        self._flops_per_token: dict[int, int] = {}  # by sequence length: the batches', not block_size
        self.val_metrics = eval_metrics(token_bytes)
        self.choice_metrics = choice_metrics()
        # precision=amp_bf16 on CPU (set by training/trainer.py): Composer 0.32.1 trains only fp32 on CPU, so the
        # forward autocasts itself. Parameters, gradients, optimizer and the cross-entropy stay fp32, as with AMP.
        self.cpu_autocast_dtype: Optional[torch.dtype] = None
        self.precision_note = "set in the config"  # why the run trains in its precision (training/precision.py)
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = next_token_loss  # compiled or not

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.cpu_autocast_dtype is None:
            return self.model(batch["input_ids"])  # (B, T, V)
        with torch.autocast("cpu", dtype=self.cpu_autocast_dtype):
            return self.model(batch["input_ids"])  # (B, T, V) in bf16: the loss upcasts it

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.loss_fn(outputs, batch["labels"])

    def eval_forward(self, batch: dict[str, torch.Tensor], outputs: Optional[Any] = None) -> torch.Tensor:
        if "choices" in batch:  # an eval_tasks item batch (loaders/choices.py): the ending each rule picks
            return self._pick(batch["choices"])
        outputs = outputs if outputs is not None else self.forward(batch)
        # every val metric in fp32 (a bf16 sum of per-token losses would round at the 3rd digit)
        return outputs if self.cpu_autocast_dtype is None else outputs.float()

    def _pick(self, items: list) -> torch.Tensor:
        if self.cpu_autocast_dtype is None:
            return pick_batch(self.model, items)
        with torch.autocast("cpu", dtype=self.cpu_autocast_dtype):
            return pick_batch(self.model, items)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        # Training logs its loss every step already; per-step train metrics would cost a sync each step. Each
        # evaluator names its own: the language-model ones (val) or the multiple-choice ones (eval_tasks).
        return {} if is_train else {**self.val_metrics, **self.choice_metrics}

    def update_metric(self, batch: dict[str, torch.Tensor], outputs: torch.Tensor, metric: Metric) -> None:
        if isinstance(metric, ChoiceAccuracy):
            metric.update(outputs, batch["labels"], batch["valid"])
        else:
            metric.update(outputs, batch["labels"])

    def flops_per_batch(self, batch: dict[str, torch.Tensor]) -> int:
        """Training FLOPs (forward + backward) of one batch, for SpeedMonitor's FLOP/s and MFU. Attention FLOPs grow
        with the batch's sequence length, which is shorter than block_size when a dataset's seq_len is."""
        B, T = batch["input_ids"].shape
        if T not in self._flops_per_token:
            self._flops_per_token[T] = self.model.flops_per_token(T)
        return self._flops_per_token[T] * B * T

    def fsdp_wrap_fn(self, module: torch.nn.Module) -> bool:
        """FSDP shards each transformer block on its own."""
        return any(module is block for block in self.model.blocks())

    def activation_checkpointing_fn(self, module: torch.nn.Module) -> bool:
        return self.fsdp_wrap_fn(module)


def checkpoint_blocks(gpt: GPT) -> None:
    """Activation checkpointing for DDP and one process, applied from outside the model as torchtitan does: each
    block keeps only its input in forward and recomputes its activations in backward (non-reentrant
    ``torch.utils.checkpoint``; the RNG state is preserved, so dropout draws the same masks again). Each block's
    ``forward`` is wrapped in place rather than the block replaced by a wrapper module: parameter names, state dicts
    and checkpoints stay those of a run without it, so a run may switch it on or off between resumes. Under FSDP,
    Composer's FSDP2 checkpoints the same blocks itself (``ComposerGPT.activation_checkpointing_fn``)."""
    for block in gpt.blocks():
        block.forward = functools.partial(_recomputed_in_backward, block.forward)


def _recomputed_in_backward(forward: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    if not torch.is_grad_enabled():  # eval and sampling keep no activations: nothing to recompute
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
