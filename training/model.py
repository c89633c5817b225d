"""The ComposerModel around gpt.py's GPT: loss, metrics and FLOPs for Composer; the GPT stays a plain module.

The GPT is the single child ``self.model`` so that FSDP can wrap it (and, through ``fsdp_wrap_fn``, its blocks).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from composer.models import ComposerModel
from torchmetrics import Metric

from callbacks.metrics import eval_metrics
from gpt import GPT, GPTConfig


class ComposerGPT(ComposerModel):
    """Batches are ``{"input_ids": (B, T), "labels": (B, T)}`` with labels already shifted by one."""

    def __init__(self, config: GPTConfig, token_bytes: torch.Tensor):
        super().__init__()
        self.model = GPT(config)
        # Composer's FSDP2 policy asks the ComposerModel's child which of its modules to shard on their own
        self.model.fsdp_wrap_fn = self.fsdp_wrap_fn
        self.model.activation_checkpointing_fn = self.activation_checkpointing_fn
        self.config = config
        self._train_flops_per_token = self.model.flops_per_token(config.block_size)
        self.val_metrics = eval_metrics(token_bytes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["input_ids"])  # (B, T, V)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        return F.cross_entropy(outputs.flatten(0, 1).float(), batch["labels"].flatten())

    def eval_forward(self, batch: dict[str, torch.Tensor], outputs: Optional[Any] = None) -> torch.Tensor:
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        # Training logs its loss every step already; per-step train metrics would cost a sync each step.
        return {} if is_train else self.val_metrics

    def update_metric(self, batch: dict[str, torch.Tensor], outputs: torch.Tensor, metric: Metric) -> None:
        metric.update(outputs, batch["labels"])

    def flops_per_batch(self, batch: dict[str, torch.Tensor]) -> int:
        """Training FLOPs (forward + backward) of one batch, for SpeedMonitor's FLOP/s and MFU."""
        return self._train_flops_per_token * batch["input_ids"].numel()

    def fsdp_wrap_fn(self, module: torch.nn.Module) -> bool:
        """FSDP shards each transformer block on its own."""
        return any(module is block for block in self.model.blocks())

    def activation_checkpointing_fn(self, module: torch.nn.Module) -> bool:
        return self.fsdp_wrap_fn(module)
