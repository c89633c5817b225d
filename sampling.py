"""Sampling from gpt.py's :class:`~gpt.GPT`: the generation loop over its KV cache, and the text-in text-out call.

Kept out of ``gpt.py`` (which stays the model only) and below ``callbacks/`` so that generate.py, eval and the
training-time sample callback share one loop. Shapes: ``B`` batch, ``T`` tokens so far, ``V`` vocab_size.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import torch
from torch.nn import functional as F

from gpt import GPT, KVCache


class TextCodec(Protocol):
    """What sampling needs of a tokenizer (core.tokenizer.Tokenizer is one; the model room does not import it)."""

    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.LongTensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
) -> torch.LongTensor:
    """Append up to ``max_new_tokens`` sampled tokens to ``idx`` (B, T) and return (B, T + new).

    The prompt is run once (prefill) into a :class:`KVCache`; after that each step runs only the new token,
    so the cost is linear in the length. The context is nanoGPT's: every token so far, cropped to the last
    block_size. Once the cache is full, the step re-runs the last block_size tokens from position 0 (the exact
    crop, at block_size positions a step; absolute position embeddings cannot slide a cache).

    ``temperature == 0`` is greedy argmax; ``top_k`` / ``top_p`` restrict sampling (see :func:`sample_next`);
    ``generator`` keeps sampling off the global RNG. With ``eos_id``, a sequence that produced it is padded
    with it, and generation stops early once every sequence has. Call ``model.eval()`` first, or dropout
    stays active. Padded ids are never produced (forward drops them).
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"generate needs a prompt of shape (B, T) with T >= 1, got {tuple(idx.shape)}")
    block_size = model.config.block_size
    cache = KVCache(model.config)
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,) sequences that ended
    idx_next = None
    for _ in range(max_new_tokens):
        if idx_next is None or cache.length == block_size:
            cache.reset()
            logits = model(idx[:, -block_size:], cache)[:, -1, :]  # (B, V): prefill the (cropped) context
        else:
            logits = model(idx_next, cache)[:, -1, :]  # (B, V): the new token only, attending to the cache
        idx_next = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        if eos_id is not None:
            idx_next = idx_next.masked_fill(done[:, None], eos_id)
            done |= idx_next[:, 0] == eos_id
        idx = torch.cat((idx, idx_next), dim=1)  # (B, T + 1)
        if done.all():
            break
    return idx


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse settings that would fail mid-generation, or silently mean something else."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p}")


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """The next ids (B, 1) from last-position logits (B, V).

    Greedy argmax at ``temperature == 0``; otherwise a draw from softmax(logits / temperature) restricted to the
    ``top_k`` most likely ids, then to the ``top_p`` nucleus (:func:`top_p_filter`, Holtzman et al. 2020), in
    the order transformers applies its sampling warpers.
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k)
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits (B, V) with every id outside the nucleus set to -inf: the nucleus is the fewest most likely ids
    whose probability adds up to at least ``top_p``; the most likely id always stays."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
    probs = F.softmax(sorted_logits, dim=-1)  # (B, V)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V): probability of the ids ranked above; 0 for the top id
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return logits.scatter(-1, order, sorted_logits)  # (B, V): back to vocab order


@torch.no_grad()
def sample_text(model: GPT, tokenizer: TextCodec, prompt: str, max_new_tokens: int = 200,
                temperature: float = 0.8, top_k: Optional[int] = 40, seed: int = 0, top_p: Optional[float] = None,
                stop_at_eos: bool = False) -> str:
    """Continue ``prompt`` (an empty one starts a new document); seeded so the demo prints the same text on every
    machine. The seed drives a private generator: the global RNG is left alone, so sampling during training
    (callbacks/samples.py) does not change the run."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
    out = generate(model, torch.tensor([ids], device=device), max_new_tokens, temperature=temperature, top_k=top_k,
                   top_p=top_p, generator=torch.Generator(device).manual_seed(seed),
                   eos_id=tokenizer.eos_id if stop_at_eos else None)
    return tokenizer.decode(out[0].tolist())
