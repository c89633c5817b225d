"""Bits per byte checked by hand, and the metrics' agreement with the loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from callbacks.metrics import BitsPerByte, eval_metrics
from core.tokenizer import ByteTokenizer, load_tokenizer


def test_bits_per_byte_by_hand():
    # vocab of 4 tokens: byte lengths 1, 3, 2 and 0 (an EOS)
    token_bytes = torch.tensor([1, 3, 2, 0])
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125],
                          [0.1, 0.2, 0.3, 0.4],
                          [0.25, 0.25, 0.25, 0.25]])
    targets = torch.tensor([0, 2, 3])
    metric = BitsPerByte(token_bytes)
    metric.update(probs.log().unsqueeze(0), targets.unsqueeze(0))
    bits = -(math.log2(0.5) + math.log2(0.3) + math.log2(0.25))  # 1 + 1.737 + 2
    assert metric.compute().item() == pytest.approx(bits / (1 + 2 + 0), rel=1e-6)


def test_bits_per_byte_accumulates_over_batches_and_ignores_padding():
    torch.manual_seed(0)
    tb = torch.randint(1, 5, (11,))
    metric = BitsPerByte(tb)
    logits = torch.randn(3, 2, 7, 11)
    targets = torch.randint(0, 11, (3, 2, 7))
    targets[0, 0, :3] = -100
    nll, nbytes = 0.0, 0
    for lg, tg in zip(logits, targets):
        metric.update(lg, tg)
        keep = tg != -100
        nll += F.cross_entropy(lg[keep], tg[keep], reduction="sum").item()
        nbytes += tb[tg[keep]].sum().item()
    assert metric.compute().item() == pytest.approx(nll / math.log(2) / nbytes, rel=1e-6)


def test_gpt2_bits_per_byte_uses_real_byte_lengths(gpt2_dir):
    tok = load_tokenizer(str(gpt2_dir))
    text = "Größe matters — naïve café, 東京 and 🙂 emoji.\n"
    ids = tok.encode(text)
    logits = torch.zeros(1, len(ids), tok.vocab_size)  # uniform: every token costs log2(V) bits
    metric = BitsPerByte(torch.as_tensor(tok.token_bytes()))
    metric.update(logits, torch.tensor([ids]))
    expected = len(ids) * math.log2(tok.vocab_size) / len(text.encode("utf-8"))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)


def test_eval_metrics_agree_with_each_other():
    tok = ByteTokenizer()
    metrics = eval_metrics(torch.as_tensor(tok.token_bytes()))
    torch.manual_seed(1)
    logits = torch.randn(2, 5, tok.vocab_size)
    labels = torch.randint(0, 256, (2, 5))  # no EOS: every target is one byte
    for m in metrics.values():
        m.update(logits, labels)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten()).item()
    assert metrics["LanguageCrossEntropy"].compute().item() == pytest.approx(ce, rel=1e-5)
    assert metrics["LanguagePerplexity"].compute().item() == pytest.approx(math.exp(ce), rel=1e-5)
    assert metrics["BitsPerByte"].compute().item() == pytest.approx(ce / math.log(2), rel=1e-5)
    acc = (logits.argmax(-1) == labels).float().mean().item()
    assert metrics["TokenAccuracy"].compute().item() == pytest.approx(acc)
