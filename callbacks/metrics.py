"""Language-model metrics: loss, perplexity, next-token accuracy and exact bits per byte.

Composer's ``LanguageCrossEntropy``/``LanguagePerplexity``/``MaskedAccuracy`` cover the first three. Bits per byte
is ours: the summed loss in bits over the summed UTF-8 byte length of the target tokens, read from a per-token
table (built once from the tokenizer), so no decoding happens in the hot path and the figure is comparable
across tokenizers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity, MaskedAccuracy
from torchmetrics import Metric

VAL_LABEL = "val"  # the evaluator of the run's val split (of the whole mixture): metrics/val/<metric>


class BitsPerByte(Metric):
    """sum(-log2 p(target)) / sum(bytes(target)) over every target token seen.

    Tokens of zero bytes (EOS) add their loss but no bytes: ending a document is information the model must
    predict. Ids equal to ``ignore_index`` are skipped.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, token_bytes: torch.Tensor, ignore_index: int = -100, dist_sync_on_step: bool = False):
        super().__init__(dist_sync_on_step=dist_sync_on_step)
        self.ignore_index = ignore_index
        self.register_buffer("token_bytes", token_bytes.to(torch.int64), persistent=False)
        self.add_state("sum_loss", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_bytes", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        target = target.reshape(-1)
        logits = logits.reshape(target.shape[0], -1)
        keep = target != self.ignore_index
        loss = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="sum")
        self.sum_loss += loss.double()
        self.sum_bytes += self.token_bytes[target[keep]].sum()

    def compute(self) -> torch.Tensor:
        return self.sum_loss / math.log(2) / self.sum_bytes.clamp_min(1)


def eval_metrics(token_bytes: torch.Tensor) -> dict[str, Metric]:
    """The metrics every evaluation reports, keyed by the names they are logged under."""
    return {
        "LanguageCrossEntropy": LanguageCrossEntropy(),
        "LanguagePerplexity": LanguagePerplexity(),
        "TokenAccuracy": MaskedAccuracy(),
        "BitsPerByte": BitsPerByte(token_bytes),
    }


def stream_label(name: str) -> str:
    """The evaluator label of one stream's val split. Composer logs each evaluator's metrics under
    ``metrics/<label>/<metric>``, so a stream's land at ``metrics/val/<name>/<metric>``, beside the mixture's."""
    return f"{VAL_LABEL}/{name}"
