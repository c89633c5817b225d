"""The "modern" GPT of the modded-nanogpt speedrun records (Jordan et al. 2024), beside gpt.py's GPT-2, with the
same interface (``blocks()``, ``init_weights()``, KV-cache ``forward``, ``num_params``, ``flops_per_token``) so that
FSDP, compile, checkpointing, generation and eval treat both alike. Each change is a field of ``ModernConfig``, so
any one can be switched off (an ablation):

* ``rotary``: rotary position embeddings on q and k (Su et al. 2021) instead of the learned ``wpe``;
* weightless RMSNorm everywhere (no gains, no biases anywhere: ``bias`` is always False);
* ``qk_norm``: q and k RMS-normalized per head before attention;
* ``relu2``: the MLP's activation is ReLU(x)^2 (So et al. 2021) instead of GELU;
* ``zero_init_proj``: every block's output projections start at zero (each block starts as the identity);
* ``untied_head``: ``lm_head`` is its own matrix, zero at init (the first loss is ln(vocab));
* ``softcap``: logits squashed to (-softcap, softcap) by ``softcap * tanh(logits / softcap)`` (Gemma 2);
* ``embed_shortcut``: each block's input is ``a * x + b * x0``, x0 the normalized embedding (learned a, b: 1, 0);
* ``value_residual``: each block's values are mixed with the first block's, ``(1 - l) v + l v1`` (learned l: 0.5;
  Zhou et al. 2024);
* ``unet_skips``: the second half of the blocks adds the first half's outputs in reverse order, each by a learned
  weight (1 at init);
* ``window`` (off by default): sliding-window causal attention, each query seeing its last ``window`` positions,
  through FlexAttention on GPU (``flex_attention: auto``) and SDPA with the window's explicit mask elsewhere (torch
  2.7 compiles only FlexAttention's forward on CPU);
* ``fp8_head`` (``auto``: on where supported): in training, the head's matmuls run in float8 through
  ``torch._scaled_mm`` (CUDA, compute capability >= 8.9; torch has no CPU kernel), as the records' FP8 head does,
  with per-tensor scales from each tensor's absolute max instead of the records' hand-tuned constants.

Shapes: ``B`` batch, ``T`` sequence length, ``C`` n_embd, ``H`` n_head, ``D`` = C // H, ``V`` vocab_size.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt import GPT, INIT_STD, GPTConfig, KVCache, LayerKV, first_position

ARCHS = ("gpt2", "modern")
# ModernConfig's own fields: model.* keys that only model.arch=modern takes
MODERN_FIELDS = ("rotary", "rotary_base", "qk_norm", "relu2", "zero_init_proj", "untied_head", "softcap",
                 "embed_shortcut", "value_residual", "unet_skips", "window", "flex_attention", "fp8_head")
FLEX_CHOICES = ("auto", "true", "false")  # flex_attention's and fp8_head's
FP8_CAPABILITY = (8, 9)  # the first CUDA compute capability with float8 matmuls (Ada, Hopper)


@dataclass
class ModernConfig(GPTConfig):
    """GPTConfig's sizes, plus one field per change (all on by default). ``bias`` and ``gelu_approximate`` are
    GPT-2's and unused here."""

    arch: str = "modern"  # what model.json records: read_model_config builds this class from it
    rotary: bool = True
    rotary_base: float = 10000.0
    qk_norm: bool = True
    relu2: bool = True
    zero_init_proj: bool = True
    untied_head: bool = True
    softcap: float = 15.0
    embed_shortcut: bool = True
    value_residual: bool = True
    unet_skips: bool = True
    window: int | None = None  # sliding-window attention over this many positions; None: full causal
    flex_attention: str = "auto"  # auto: FlexAttention for the window on CUDA | true | false: SDPA + mask
    fp8_head: str = "auto"  # auto: float8 head matmuls in training where supported (fp8_supported) | true | false

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window is not None and not (isinstance(self.window, int) and 1 <= self.window <= self.block_size):
            raise ValueError(f"ModernConfig.window must be 1..block_size ({self.block_size}), got {self.window!r}: a "
                             "window longer than the sequence is full attention; drop it (window=None)")
        for name in ("flex_attention", "fp8_head"):
            if getattr(self, name) not in FLEX_CHOICES:
                raise ValueError(f"ModernConfig.{name} must be one of {', '.join(FLEX_CHOICES)}, "
                                 f"got {getattr(self, name)!r}")
        if self.arch != "modern":
            raise ValueError(f"ModernConfig.arch must be 'modern', got {self.arch!r}")
        if not (isinstance(self.softcap, (int, float)) and self.softcap > 0):
            raise ValueError(f"ModernConfig.softcap must be > 0 (15 in the speedrun), got {self.softcap!r}")
        if self.rotary and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"ModernConfig: rotary needs an even head size, got n_embd / n_head = "
                             f"{self.n_embd // self.n_head}; pick n_head so that it is even, or rotary=False")
        if self.rotary_base <= 0:
            raise ValueError(f"ModernConfig.rotary_base must be > 0, got {self.rotary_base!r}")


def norm(x: torch.Tensor) -> torch.Tensor:
    """Weightless RMSNorm over the last dimension."""
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """cos / sin tables for positions 0..block_size-1 (a buffer, not a parameter: not in the state dict)."""

    def __init__(self, head_dim: int, block_size: int, base: float) -> None:
        super().__init__()
        self.head_dim, self.block_size, self.base = head_dim, block_size, base
        self.register_buffer("cos", torch.empty(block_size, head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(block_size, head_dim // 2), persistent=False)
        self.reset_tables()

    def reset_tables(self) -> None:
        """(Re)compute the tables in place, on the buffers' device (after a meta-device build and ``to_empty`` too)."""
        device = self.cos.device
        inv_freq = self.base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
                                 / self.head_dim)  # (D/2,)
        angles = torch.outer(torch.arange(self.block_size, dtype=torch.float32, device=device), inv_freq)
        with torch.no_grad():
            self.cos.copy_(angles.cos())  # (block_size, D/2)
            self.sin.copy_(angles.sin())

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate x (B, H, T, D) as positions ``start .. start+T-1``: each pair (x1, x2) of halves by its angle."""
        T = x.size(2)
        cos, sin = self.cos[start : start + T].to(x.dtype), self.sin[start : start + T].to(x.dtype)  # (T, D/2)
        x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)  # (B, H, T, D)


class ModernAttention(nn.Module):
    """Causal self-attention with QK-norm, rotary positions and the value residual."""

    def __init__(self, config: ModernConfig, layer: int) -> None:
        super().__init__()
        self.n_head, self.n_embd, self.config = config.n_head, config.n_embd, config
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # Q, K, V stacked by rows
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.rotary = Rotary(config.n_embd // config.n_head, config.block_size, config.rotary_base) \
            if config.rotary else None
        # the first block's values are v1 itself: no mix there (a parameter without a gradient would stall DDP);
        # shape (1,), not a scalar, which FSDP2 cannot shard
        self.v_mix = nn.Parameter(torch.full((1,), 0.5)) if config.value_residual and layer > 0 else None
        self.attn_dropout = config.dropout

    def forward(self, x: torch.Tensor, v1: torch.Tensor | None, kv: LayerKV | None = None,
                start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the output (B, T, C) and this block's values (B, H, T, D), the first block's ``v1`` for the rest."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if self.config.qk_norm:
            q, k = norm(q), norm(k)
        if self.rotary is not None:
            q, k = self.rotary(q, start), self.rotary(k, start)
        if self.v_mix is not None and v1 is not None:
            v = (1 - self.v_mix) * v + self.v_mix * v1  # mixed per token: the cache holds the mixed values
        own_v = v
        if kv is not None:
            k, v = kv.store(k, v, start)  # (B, H, start + T, D)
        dropout_p = self.attn_dropout if self.training else 0.0
        window = self.config.window
        if window is not None and kv is None and dropout_p == 0.0 and self._flex(q):
            y = windowed_flex(q, k, v, window)  # (B, H, T, D)
        elif window is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(T, start, window, x.device),
                                               dropout_p=dropout_p)
        elif kv is None or start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)  # (B, H, T, D)
        else:  # as gpt.py: new query i at position start + i sees the cache and the new keys up to itself
            mask = None if T == 1 else torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y), own_v

    def _flex(self, q: torch.Tensor) -> bool:
        return self.config.flex_attention == "true" or (self.config.flex_attention == "auto" and q.is_cuda)


def window_mask(T: int, start: int, window: int, device: torch.device) -> torch.Tensor:
    """(T, start + T) bool: query i (position start + i) sees key j iff j <= start + i and j > start + i - window."""
    q = torch.arange(start, start + T, device=device)[:, None]
    k = torch.arange(start + T, device=device)[None, :]
    return (k <= q) & (q - k < window)


@functools.cache
def compiled_flex() -> Callable:
    """``torch.compile(flex_attention)``, built once on first use."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def windowed_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Sliding-window causal attention through FlexAttention (its block mask skips the blocks outside the band).
    On CUDA through ``torch.compile(flex_attention)``, its fused kernel, even in an eager model (eager
    FlexAttention is a reference implementation that materializes the scores); a compiled model compiles it with
    the rest."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def band(b, h, q_idx, kv_idx):  # noqa: ANN001 - FlexAttention's mask_mod signature
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    attend = compiled_flex() if q.is_cuda and not torch.compiler.is_compiling() else flex_attention
    T = q.size(2)
    return attend(q, k, v, block_mask=create_block_mask(band, None, None, T, T, device=q.device))


class ModernMLP(nn.Module):
    """C -> 4C -> ReLU^2 (or GELU) -> C, no biases."""

    def __init__(self, config: ModernConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.relu2 = config.relu2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, 4C)
        x = F.relu(x).square() if self.relu2 else F.gelu(x)
        return self.c_proj(x)  # (B, T, C)


class ModernBlock(nn.Module):
    def __init__(self, config: ModernConfig, layer: int) -> None:
        super().__init__()
        self.attn = ModernAttention(config, layer)
        self.mlp = ModernMLP(config)
        self.x0_mix = nn.Parameter(torch.tensor([1.0, 0.0])) if config.embed_shortcut else None
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, x0: torch.Tensor, v1: torch.Tensor | None, kv: LayerKV | None = None,
                start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x0_mix is not None:
            x = self.x0_mix[0] * x + self.x0_mix[1] * x0  # (B, T, C)
        y, v = self.attn(norm(x), v1, kv, start)
        x = x + self.drop(y)
        x = x + self.drop(self.mlp(norm(x)))
        return x, v


def fp8_supported(device: torch.device) -> bool:
    """Whether ``torch._scaled_mm`` runs here: a CUDA device of compute capability >= 8.9 (none on CPU)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_CAPABILITY


def fp8_available() -> bool:
    """Whether this process has a CUDA device that runs ``torch._scaled_mm`` (where ``fp8_head=auto`` turns it on)."""
    return torch.cuda.is_available() and fp8_supported(torch.device("cuda"))


def to_fp8(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` as ``dtype`` (a float8) scaled so that its absolute max lands on the format's largest value, and the
    fp32 scale that multiplies it back."""
    scale = (t.detach().abs().amax().float() / torch.finfo(dtype).max).clamp(min=1e-12)
    return (t.float() / scale).to(dtype), scale


def col_major(t: torch.Tensor) -> torch.Tensor:
    """The same matrix, stored column by column (``torch._scaled_mm``'s layout for its second operand)."""
    return t.t().contiguous().t()


class Fp8Matmul(torch.autograd.Function):
    """``x @ w.T`` for x (M, K) and w (N, K) in float8: x and w as e4m3, the output's gradient as e5m2 (its wider
    range), each with a per-tensor scale, fp32 accumulation. ``mm`` is ``torch._scaled_mm``'s signature; it wants its
    first operand row-major, its second column-major and every dimension a multiple of 16."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, mm: Callable) -> torch.Tensor:  # noqa: ANN001 - ctx
        x8, x_s = to_fp8(x, torch.float8_e4m3fn)
        w8, w_s = to_fp8(w, torch.float8_e4m3fn)
        ctx.save_for_backward(x8, x_s, w8, w_s)
        ctx.mm, ctx.dtypes = mm, (x.dtype, w.dtype)
        return mm(x8, w8.t(), scale_a=x_s, scale_b=w_s, out_dtype=torch.bfloat16, use_fast_accum=True)  # (M, N)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # noqa: ANN001 - ctx
        x8, x_s, w8, w_s = ctx.saved_tensors
        g8, g_s = to_fp8(grad, torch.float8_e5m2)  # (M, N)
        grad_x = ctx.mm(g8, col_major(w8), scale_a=g_s, scale_b=w_s, out_dtype=torch.bfloat16)  # (M, K)
        grad_w = ctx.mm(g8.t().contiguous(), col_major(x8), scale_a=g_s, scale_b=x_s, out_dtype=torch.float32)
        return grad_x.to(ctx.dtypes[0]), grad_w.to(ctx.dtypes[1]), None  # (M, K), (N, K)


class ModernGPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size), the speedrun's architecture (module docstring)."""

    def __init__(self, config: ModernConfig) -> None:
        super().__init__()
        self.config = config
        vp = config.padded_vocab_size
        parts: dict[str, nn.Module] = dict(wte=nn.Embedding(vp, config.n_embd),
                                           h=nn.ModuleList([ModernBlock(config, i) for i in range(config.n_layer)]))
        if not config.rotary:
            parts["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(config.n_embd, vp, bias=False)
        if not config.untied_head:
            self.transformer.wte.weight = self.lm_head.weight
        n_skips = config.n_layer // 2 if config.unet_skips else 0
        # decided once (not in every forward, where torch.compile would trace the device query): auto = a CUDA
        # device of this process supports it
        self.use_fp8_head = config.fp8_head == "true" or (config.fp8_head == "auto" and fp8_available())
        self.skip_weights = nn.Parameter(torch.ones(n_skips)) if n_skips else None
        self.init_weights()

    def blocks(self) -> list[ModernBlock]:
        """The transformer blocks, in order (what FSDP, checkpointing and compile wrap)."""
        return list(self.transformer.h)

    def init_weights(self) -> None:
        """(Re-)initialise in place: N(0, 0.02) matrices; projections and an untied head at zero where configured;
        the learned mixes at their neutral values."""
        cfg = self.config
        if not cfg.untied_head and self.transformer.wte.weight is not self.lm_head.weight:
            self.transformer.wte.weight = self.lm_head.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") and cfg.zero_init_proj:
                nn.init.zeros_(p)
            elif name.endswith("c_proj.weight"):  # GPT-2's depth-scaled init
                nn.init.normal_(p, std=INIT_STD / math.sqrt(2 * cfg.n_layer))
        if cfg.untied_head:
            nn.init.zeros_(self.lm_head.weight)
        for block in self.blocks():
            if block.x0_mix is not None:
                block.x0_mix.data.copy_(torch.tensor([1.0, 0.0]))
            if block.attn.v_mix is not None:
                block.attn.v_mix.data.fill_(0.5)
        if self.skip_weights is not None:
            self.skip_weights.data.fill_(1.0)
        for block in self.blocks():  # buffers are not parameters: recompute them (after a meta-device build too)
            if block.attn.rotary is not None:
                block.attn.rotary.reset_tables()

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """As gpt.py's ``GPT.forward``: logits for every position (the last only with ``last_only``); with a
        ``cache``, ``idx`` follows the ``cache.length`` cached tokens."""
        start, T = first_position(idx, cache, self.config.block_size), idx.size(1)
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))  # (B, T, C)
        x = x0 = norm(x)
        v1, skips, n_skips = None, [], 0 if self.skip_weights is None else self.skip_weights.numel()
        for i, block in enumerate(self.transformer.h):
            if n_skips and i >= len(self.transformer.h) - n_skips:
                x = x + self.skip_weights[len(self.transformer.h) - 1 - i] * skips.pop()  # (B, T, C)
            x, v = block(x, x0, v1, None if cache is None else cache.layers[i], start)
            v1 = v if v1 is None and self.config.value_residual else v1
            if n_skips and i < n_skips:
                skips.append(x)
        if cache is not None:
            cache.length += T
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        V, cap = self.config.vocab_size, self.config.softcap
        logits = self.head(norm(x))[..., :V].float()  # (B, T, V) in fp32: the softcap's tanh needs the range
        return cap * torch.tanh(logits / cap)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, padded vocab): ``lm_head``, in float8 when training where ``fp8_head`` allows it and
        the shape suits ``torch._scaled_mm`` (B * T and C multiples of 16, as the padded vocab is; generation's
        single rows stay as they are)."""
        B, T, C = x.size()
        fits = (B * T) % 16 == 0 and C % 16 == 0
        if self.training and self.use_fp8_head and (x.is_cuda or self.config.fp8_head == "true") and fits:
            return Fp8Matmul.apply(x.reshape(B * T, C), self.lm_head.weight, torch._scaled_mm).view(B, T, -1)
        return self.lm_head(x)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; without the embedding lookups (wte when the head is untied, wpe) when
        ``non_embedding``, as gpt.py counts: a matrix that only does lookups does no FLOPs."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.config.untied_head:
                n -= self.transformer.wte.weight.numel()
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """``6 N + 12 n_layer n_embd T`` as gpt.py's (N: the matrices that do matmuls, the head included)."""
        T = self.config.block_size if seq_len is None else seq_len
        if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        return 6 * self.num_params(non_embedding=True) + 12 * self.config.n_layer * self.config.n_embd * T


def build_gpt(config: GPTConfig) -> nn.Module:
    """gpt.py's GPT for a GPTConfig, ModernGPT for a ModernConfig."""
    return ModernGPT(config) if isinstance(config, ModernConfig) else GPT(config)


def config_from_dict(fields: dict[str, Any]) -> GPTConfig:
    """A model.json's dict back into its config class (``arch: modern`` -> ModernConfig; none -> GPT-2's)."""
    known = {f.name for f in dataclasses.fields(ModernConfig)}
    if fields.get("arch", "gpt2") == "modern":
        return ModernConfig(**{k: v for k, v in fields.items() if k in known})
    return GPTConfig(**fields)
