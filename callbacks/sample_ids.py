"""Log which samples each step trained on: the global batch's Streaming sample ids, in rank order.

Off by default (``log_sample_ids=true`` turns it on). With it two runs can be compared step by step by what they
saw, e.g. to check that a resumed, re-sharded or elastic run replays the same data.
"""
from __future__ import annotations

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


class SampleIdLogger(Callback):
    """Gathers ``batch['sample_ids']`` from every rank at each batch and logs them as ``data/sample_ids``."""

    def after_dataloader(self, state: State, logger: Logger) -> None:
        ids = state.batch["sample_ids"].tolist()
        gathered = dist.all_gather_object(ids)
        logger.log_metrics({"data/sample_ids": [i for rank_ids in gathered for i in rank_ids]})
