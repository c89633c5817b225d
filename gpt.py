"""GPT-2 (Radford et al. 2019) as a plain torch module, laid out like nanoGPT's ``model.py``.

Pure torch on purpose: no Composer, no data, no parallelism. FSDP, ``torch.compile`` and activation
checkpointing are applied from outside (torchtitan style), which is why the model exposes :meth:`GPT.blocks`
(the unit to wrap) and :meth:`GPT.init_weights` (re-run after a meta-device build + ``to_empty``).

The :class:`KVCache` (each layer's keys and values of the tokens so far) lives here because it touches the attention
math; the sampling loop that uses it, so that after the prompt each new token costs a forward of one position
instead of the whole context, is ``sampling.py``.

Shapes: ``B`` batch, ``T`` sequence length, ``C`` n_embd, ``H`` n_head, ``D`` = C // H, ``V`` vocab_size,
``Vp`` padded_vocab_size.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

# GPU matmuls run fastest when the vocab dimension is a multiple of 64 (nanoGPT: 50257 -> 50304).
VOCAB_MULTIPLE = 64
# nn.GELU's ``approximate``: "tanh" is GPT-2's (HF "gelu_new"), "none" the exact erf form (nanoGPT's model.py,
# llm-foundry's MPT, HF "gelu"); on CPU the exact one is the faster kernel (BENCHMARKS.md).
GELU_APPROXIMATIONS = ("tanh", "none")
INIT_STD = 0.02

# Architecture sizes only; block_size / vocab_size / dropout / bias come from GPTConfig defaults or overrides.
PRESETS: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # Small CPU-friendly sizes. "nano" is the nanoGPT README's CPU run.
    "nano": dict(n_layer=4, n_head=4, n_embd=128),
    "micro": dict(n_layer=2, n_head=2, n_embd=64),
    "mini": dict(n_layer=6, n_head=6, n_embd=384),
}


@dataclass
class GPTConfig:
    """Model hyperparameters; defaults are GPT-2 small (124M)."""

    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linear and LayerNorm layers, as GPT-2; False is a bit faster and no worse
    gelu_approximate: str = "tanh"  # "tanh" (GPT-2) | "none" (exact erf GELU): see GELU_APPROXIMATIONS

    def __post_init__(self) -> None:
        """Fail at construction with a message naming the bad field, not deep inside a matmul."""
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            valid = [h for h in range(1, self.n_embd + 1) if self.n_embd % h == 0]
            raise ValueError(
                f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                f"n_head must be one of {', '.join(map(str, valid))}"
            )
        dropout_ok = isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
        if not dropout_ok or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be a float in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"GPTConfig.bias must be a bool, got {self.bias!r}")
        if self.gelu_approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f"GPTConfig.gelu_approximate must be one of {', '.join(GELU_APPROXIMATIONS)}, "
                             f"got {self.gelu_approximate!r}")

    @property
    def padded_vocab_size(self) -> int:
        """vocab_size rounded up to a multiple of 64: rows of wte / lm_head (the extra ids are never predicted)."""
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """Build a config from a named size in :data:`PRESETS`, with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT preset {name!r}; valid presets: {', '.join(PRESETS)}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {', '.join(unknown)}; valid fields: {', '.join(fields)}")
        return cls(**{**PRESETS[name], **overrides})


class LayerKV:
    """One layer's cached keys and values: (B, H, block_size, D) buffers, filled from position 0.

    Allocated at the first write, with the dtype and device of the keys (under autocast or mixed precision they
    need not be the parameters' dtype).
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def store(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions' k, v (B, H, T, D) at ``start``; return every position so far (B, H, start+T, D)."""
        B, H, T, D = k.size()
        if self.k is None or self.k.shape[:2] != (B, H) or self.k.dtype != k.dtype or self.k.device != k.device:
            self.k = k.new_zeros(B, H, self.block_size, D)
            self.v = v.new_zeros(B, H, self.block_size, D)
        assert self.v is not None
        self.k[:, :, start : start + T] = k
        self.v[:, :, start : start + T] = v
        return self.k[:, :, : start + T], self.v[:, :, : start + T]


class KVCache:
    """Keys and values of every layer for the tokens seen so far, and how many there are.

    GPT-2's position embeddings are absolute, so the cache holds at most block_size tokens; ``sampling.generate``
    starts it over (a fresh prefill of the last block_size tokens) when it is full.
    """

    def __init__(self, config: GPTConfig, size: int | None = None) -> None:
        """``size``: the positions to hold, when fewer than block_size will ever be (smaller buffers)."""
        self.layers = [LayerKV(size or config.block_size) for _ in range(config.n_layer)]
        self.length = 0  # positions filled: the position of the next token

    def broadcast(self, batch: int) -> None:
        """A cache filled for one sequence becomes ``batch`` copies of it (several continuations of one prefix)."""
        for layer in self.layers:
            assert layer.k is not None and layer.v is not None and layer.k.shape[0] == 1
            layer.k = layer.k.expand(batch, -1, -1, -1).contiguous()
            layer.v = layer.v.expand(batch, -1, -1, -1).contiguous()

    def reset(self) -> None:
        """Forget the cached tokens (the buffers are kept and overwritten)."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through SDPA (flash / memory-efficient kernels where available)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # q, k, v projections for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # Dropout on the attention probabilities: a float handed to SDPA, since SDPA never exposes them.
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None, start: int = 0) -> torch.Tensor:
        """``x`` holds positions ``start .. start+T-1``; with ``kv`` they also attend to the cached positions."""
        B, T, C = x.size()  # (B, T, C)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        dropout_p = self.attn_dropout if self.training else 0.0
        if kv is not None:
            k, v = kv.store(k, v, start)  # (B, H, start + T, D): the cached positions, then the new ones
        if kv is None or start == 0:  # training, or a prefill from position 0: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)  # (B, H, T, D)
        else:
            # New query i sits at position start + i: it sees every cached key and the new keys up to itself.
            # (SDPA's is_causal aligns the triangle top-left, wrong when keys outnumber queries.) One query sees all.
            mask = None if T == 1 else torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU (GPT-2's tanh approximation unless configured exact) -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """One pre-LN transformer block (GPT-2 moved LayerNorm to the input of each sub-block)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None, start: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv, start)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


def first_position(idx: torch.Tensor, cache: KVCache | None, block_size: int) -> int:
    """The position of idx's first token: 0, or the cache's length. One clear error for anything but (B, T) ids or
    a sequence that would run past block_size."""
    if idx.dim() != 2:
        raise ValueError(f"forward expects idx of shape (B, T), got {tuple(idx.shape)}")
    start, T = 0 if cache is None else cache.length, idx.size(1)
    if start + T > block_size:
        where = "" if cache is None else f" after {start} cached tokens"
        raise ValueError(f"cannot forward a sequence of length {T}{where}: block_size is {block_size}")
    return start


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) labels, in fp32 whatever the logits' dtype. On GPU the
    logits are a view of the padded (B, T, Vp) matmul: eager torch copies it twice here (flatten, float); a compiled
    run compiles this function too (training/compile.py), which fuses those copies into the softmax."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


class GPT(nn.Module):
    """GPT-2 language model: token ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        vp = config.padded_vocab_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vp, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, vp, bias=False)
        # Weight tying (Press & Wolf 2017): input embedding and output projection share one matrix.
        self.transformer.wte.weight = self.lm_head.weight
        self.init_weights()

    def blocks(self) -> list[Block]:
        """The transformer blocks, in order: the unit an outside caller wraps (FSDP, checkpointing, compile)."""
        return list(self.transformer.h)

    def init_weights(self) -> None:
        """(Re-)initialise every parameter in place, GPT-2 style.

        Callable from outside: after building on the ``meta`` device and ``to_empty()``, parameters hold garbage
        and ``to_empty`` has untied wte / lm_head, so this re-ties them first.
        """
        if self.transformer.wte.weight is not self.lm_head.weight:
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual-stream output projections by 1/sqrt(N residual additions) = 1/sqrt(2 * n_layer)
        # so the residual stream's variance does not grow with depth.
        proj_std = INIT_STD / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=proj_std)

    def _init_weights(self, module: nn.Module) -> None:
        """Per-module init (nanoGPT): N(0, 0.02) weights, zero biases, LayerNorm back to identity."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        elif isinstance(module, nn.LayerNorm):
            # Needed for meta-device init: torch's own LayerNorm init only ran on the meta tensors.
            module.reset_parameters()

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits for every position of ``idx``; the caller computes the loss. ``last_only``: the last position's
        only, (B, 1, V) (a prefill whose other logits nobody reads: the vocab matmul is ~30 % of GPT-2 small's).

        With a ``cache``, ``idx`` holds the tokens that follow the ``cache.length`` cached ones: they are placed at
        positions ``cache.length ..``, attend to the cached tokens too, and are added to the cache.

        Padded ids can never be predicted: only the real vocab's logits are returned. On GPU they come from the
        padded matmul (its aligned width is the fast one) as a non-contiguous view: use ``reshape`` (or
        ``F.cross_entropy`` directly), not ``view``, if its layout matters. On CPU the width buys nothing and the
        view costs a copy in the loss and a zero-filled gradient, so the matmul uses the real rows only.
        """
        B, T = idx.size()
        start = first_position(idx, cache, self.config.block_size)
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over B
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache.layers[i], start)  # (B, T, C)
        if cache is not None:
            cache.length += T
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        V = self.config.vocab_size
        if x.device.type == "cpu":
            return F.linear(x, self.lm_head.weight[:V])  # (B, T, V): the first V rows are contiguous
        return self.lm_head(x)[..., :V]  # (B, T, Vp) -> (B, T, V)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count, as nanoGPT's get_num_params.

        The tied wte / lm_head matrix (padded rows included) is counted once and kept in the non-embedding count,
        because it does real work as the output projection; only the position embeddings are subtracted.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied Parameter once
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training (forward + backward) FLOPs per token, for MFU and compute budgets.

        ``6 * N + 12 * n_layer * n_embd * T`` (PaLM appendix B, nanoGPT's estimate_mfu), where

        * ``N = num_params(non_embedding=True)``: every weight does one multiply-add (2 FLOPs) per token in the
          forward pass and twice that in the backward pass, hence 6N. N includes the tied lm_head matrix once,
          i.e. its matmul is ``2 * n_embd * padded_vocab_size`` forward FLOPs; the position-embedding lookup is
          free and excluded. Biases and LayerNorm gains are included (negligible, as nanoGPT).
        * ``12 * n_layer * n_embd * T``: the attention scores ``q @ k^T`` and ``att @ v`` (2 * 2 * T * n_embd
          forward FLOPs per token per layer, times 3 for forward + backward). Causal masking is not discounted.

        ``T`` (``seq_len``) defaults to block_size.
        """
        T = self.config.block_size if seq_len is None else seq_len
        if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        cfg = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_embd * T
