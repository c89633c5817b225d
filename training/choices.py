"""``eval_tasks``: multiple-choice files scored while training, as Composer evaluators beside the val loss.

Each task's items are read and checked at start (one ``error:`` line naming ``file:line``, before any step),
encoded once with the run's tokenizer, and split over the ranks (item ``rank``, ``rank + W``...; every rank scores
as many, padding not counted); the counts are summed over ranks when the metric is computed. Every item goes
through the model in its own forward, as ``eval.py --hellaswag`` scores it, so a checkpoint's in-training figures
are that command's figures on it.
"""
from __future__ import annotations

from typing import Any

import torch
from composer.core import DataSpec, Evaluator
from composer.utils import dist

from callbacks.choices import CHOICE_METRICS
from core.tokenizer import Tokenizer
from loaders.choices import ChoiceItems, Item, collate_items, read_items
from training.config import TrainConfig

ITEMS_PER_BATCH = 8  # items a batch holds (each still in its own forward): fewer Python round trips per eval


def read_eval_tasks(cfg: TrainConfig) -> dict[str, list[Item]]:
    """Every task's items (the first ``max_items``), read and checked now: a bad file fails before training."""
    return {task.name: read_items(task.path)[:task.max_items] for task in cfg.eval_tasks}


def build_choice_evaluators(cfg: TrainConfig, tasks: dict[str, list[Item]], tokenizer: Tokenizer,
                            block_size: int) -> list[Evaluator]:
    """One Evaluator per task, labelled with its name (``metrics/<name>/acc``...), every item each time."""
    intervals = {task.name: task.interval or cfg.eval_interval for task in cfg.eval_tasks}
    evaluators = []
    for name, items in tasks.items():
        dataset = ChoiceItems(items, tokenizer, block_size, dist.get_global_rank(), dist.get_world_size())
        loader = torch.utils.data.DataLoader(dataset, batch_size=ITEMS_PER_BATCH, collate_fn=collate_items)
        spec = DataSpec(loader, get_num_samples_in_batch=_num_items, get_num_tokens_in_batch=lambda b: 0,
                        split_batch=_split_items)
        # Composer matches metric_names as regexes anywhere in a name ('acc' would take TokenAccuracy): anchored
        evaluators.append(Evaluator(label=name, dataloader=spec, metric_names=[f"^{m}$" for m in CHOICE_METRICS],
                                    subset_num_batches=-1, eval_interval=intervals[name],
                                    device_eval_microbatch_size=ITEMS_PER_BATCH))
    return evaluators


def _num_items(batch: dict[str, Any]) -> int:
    return len(batch["labels"])


def _split_items(batch: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """Microbatches of ``size`` items (lists and tensors alike sliced)."""
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, _num_items(batch), size)]
