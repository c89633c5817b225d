"""gpt_modern.py: the speedrun architecture behind gpt.py's interface. Its first loss is ln(vocab) (zero head), the
KV-cache forward equals the full forward with every change on and with each one off, each change is really there
(parameters and state-dict keys), bad configs are one ValueError each, and Muon routes its parameters by role."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gpt import KVCache, next_token_loss
from gpt_modern import ModernConfig, ModernGPT, build_gpt, config_from_dict
from training.muon import route

TINY = dict(block_size=32, vocab_size=97, n_layer=4, n_head=2, n_embd=32)
FLAGS = ["rotary", "qk_norm", "relu2", "zero_init_proj", "untied_head", "embed_shortcut", "value_residual",
         "unet_skips"]


def _trained_like(config: ModernConfig) -> ModernGPT:
    """Random weights everywhere (the zero inits would hide the blocks and the head from the comparison)."""
    torch.manual_seed(0)
    model = ModernGPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_the_first_loss_is_ln_vocab():
    model = ModernGPT(ModernConfig(**TINY))
    idx = torch.randint(0, TINY["vocab_size"], (3, 16))
    loss = next_token_loss(model(idx), torch.roll(idx, -1, 1))
    assert loss.item() == pytest.approx(math.log(TINY["vocab_size"]), abs=1e-5)


@pytest.mark.parametrize("off", [None, *FLAGS, "window"])
def test_the_kv_cache_forward_equals_the_full_forward(off):
    """With every change on, each one off, and with a sliding window of 5 (the cache path masks it too)."""
    config = ModernConfig(**TINY, **({"window": 5} if off == "window" else {off: False} if off else {}))
    model = _trained_like(config)
    idx = torch.randint(0, TINY["vocab_size"], (2, 20))
    with torch.no_grad():
        full = model(idx)  # (B, T, V)
        cache = KVCache(config)
        steps = [model(idx[:, :7], cache)]  # a prefill, then a token at a time, then two at once
        steps += [model(idx[:, t : t + 1], cache) for t in range(7, 18)]
        steps.append(model(idx[:, 18:20], cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
    greedy_full = full[:, -1].argmax(-1)
    assert torch.equal(steps[-1][:, -1].argmax(-1), greedy_full)


def test_each_change_is_in_the_weights():
    on, off = ModernGPT(ModernConfig(**TINY)), ModernGPT(ModernConfig(**TINY, **{f: False for f in FLAGS}))
    keys_on, keys_off = set(on.state_dict()), set(off.state_dict())
    assert "transformer.wpe.weight" in keys_off and "transformer.wpe.weight" not in keys_on  # rotary: no wpe
    assert {"skip_weights", "transformer.h.0.x0_mix", "transformer.h.1.attn.v_mix"} <= keys_on - keys_off
    assert "transformer.h.0.attn.v_mix" not in keys_on  # the first block's values are v1: nothing to mix
    assert on.lm_head.weight is not on.transformer.wte.weight and off.lm_head.weight is off.transformer.wte.weight
    assert not any("bias" in k or "ln_" in k for k in keys_on)  # no biases, weightless norms
    assert on.skip_weights.numel() == TINY["n_layer"] // 2
    assert all(b.attn.c_proj.weight.abs().sum() == 0 and b.mlp.c_proj.weight.abs().sum() == 0 for b in on.blocks())
    assert on.lm_head.weight.abs().sum() == 0
    logits = _trained_like(ModernConfig(**TINY, softcap=2.0))(torch.randint(0, 97, (1, 8)))
    assert logits.abs().max() < 2.0  # the softcap


def test_the_interface_matches_gpt_py():
    model = build_gpt(ModernConfig(**TINY))
    assert isinstance(model, ModernGPT) and len(model.blocks()) == TINY["n_layer"]
    n = model.num_params()
    assert n == sum(p.numel() for p in model.parameters()) - model.transformer.wte.weight.numel()
    assert model.flops_per_token(16) == 6 * n + 12 * 4 * 32 * 16
    assert model(torch.randint(0, 97, (2, 8)), last_only=True).shape == (2, 1, 97)
    with torch.device("meta"):
        meta = ModernGPT(ModernConfig(**TINY))
    meta.to_empty(device="cpu")
    meta.init_weights()  # after a meta-device build, the rotary tables are real again
    assert torch.equal(meta.transformer.h[0].attn.rotary.cos, model.transformer.h[0].attn.rotary.cos)
    fields = dataclasses.asdict(ModernConfig(**TINY, softcap=30.0))
    assert config_from_dict(fields) == ModernConfig(**TINY, softcap=30.0)
    assert type(config_from_dict({**TINY})).__name__ == "GPTConfig"  # a GPT-2 run's model.json: no arch


@pytest.mark.parametrize("fields, message", [
    (dict(window=33), "window must be 1..block_size \\(32\\), got 33: a window longer than the sequence"),
    (dict(flex_attention="yes"), "flex_attention must be one of auto, true, false"),
    (dict(fp8_head="on"), "fp8_head must be one of auto, true, false"),
    (dict(softcap=0.0), "softcap must be > 0"),
    (dict(n_head=4, n_embd=36), "rotary needs an even head size, got n_embd / n_head = 9"),
    (dict(rotary_base=-1.0), "rotary_base must be > 0"),
])
def test_bad_modern_configs_are_one_error(fields, message):
    with pytest.raises(ValueError, match=message):
        ModernConfig(**{**TINY, **fields})


def test_muon_routes_the_modern_parameters_by_role():
    r = route(ModernGPT(ModernConfig(**TINY)).named_parameters())
    assert len(r.muon) == 4 * TINY["n_layer"]
    assert sorted(n for n, _ in r.adamw_decay) == ["lm_head.weight", "transformer.wte.weight"]
    assert {n.split(".")[-1] for n, _ in r.adamw_no_decay} == {"x0_mix", "v_mix", "skip_weights"}


def test_it_learns_a_pattern_faster_than_chance():
    """A few AdamW steps on a repeating sequence drive the loss well below ln(vocab): the blocks do work."""
    torch.manual_seed(0)
    model = ModernGPT(ModernConfig(**TINY))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = torch.arange(32).remainder(5).repeat(4, 1)  # (4, 32)
    for _ in range(60):
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * math.log(97)


@pytest.mark.parametrize("mix", ["skip_weights", "transformer.h.1.x0_mix", "transformer.h.1.attn.v_mix"])
def test_each_learned_mix_changes_the_output(mix):
    model = _trained_like(ModernConfig(**TINY))
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        before = model(idx)
        dict(model.named_parameters())[mix].add_(0.5)
        assert (model(idx) - before).abs().max() > 1e-3, mix


@pytest.mark.parametrize("T, window", [(16, 4), (32, 1), (24, 24)])
def test_flex_attention_eager_and_the_masked_sdpa_agree(T, window):
    """FlexAttention (what CUDA runs) and SDPA with the explicit band mask (what CPU runs) give the same output."""
    from gpt_modern import window_mask, windowed_flex

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, T, 8) for _ in range(3))
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(T, 0, window, q.device))
    torch.testing.assert_close(windowed_flex(q, k, v, window), dense, rtol=1e-5, atol=1e-5)
    if window < T:  # the window really cuts: not full causal attention
        assert not torch.allclose(dense, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-3)


def test_a_window_changes_the_model_only_past_its_width():
    """Within the first ``window`` positions a windowed model is the full-causal one; after, it is not."""
    full = _trained_like(ModernConfig(**TINY))
    windowed = _trained_like(ModernConfig(**TINY, window=6))
    idx = torch.randint(0, 97, (1, 20))
    with torch.no_grad():
        a, b = full(idx), windowed(idx)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


def reference_scaled_mm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                        out_dtype: torch.dtype, use_fast_accum: bool = False) -> torch.Tensor:
    """``torch._scaled_mm``'s contract, on CPU where torch 2.7 has no kernel for it: ``a`` row-major, ``b``
    column-major, every dimension a multiple of 16, not both operands e5m2, fp32 scalar scales that multiply the
    float8 values back."""
    assert a.is_contiguous() and b.t().is_contiguous(), "a row-major, b column-major"
    assert all(d % 16 == 0 for d in (*a.shape, b.size(1))), (a.shape, b.shape)
    assert {a.dtype, b.dtype} <= {torch.float8_e4m3fn, torch.float8_e5m2}
    assert not a.dtype == b.dtype == torch.float8_e5m2, "e5m2 @ e5m2 has no kernel"
    assert scale_a.dtype == scale_b.dtype == torch.float32 and scale_a.numel() == scale_b.numel() == 1
    return ((a.float() * scale_a) @ (b.float() * scale_b)).to(out_dtype)


def _fp8_case(M: int = 64, K: int = 32, N: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(M, K, requires_grad=True), torch.randn(N, K, requires_grad=True), torch.randn(M, N)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_the_fp8_head_matmul_keeps_scaled_mm_layouts_and_tracks_the_fp32_matmul():
    """The FP8 head's forward and both gradients, through a CPU stand-in that enforces ``torch._scaled_mm``'s
    layouts and dtypes: within float8's precision of the fp32 matmul (e4m3: 3 mantissa bits, e5m2: 2)."""
    from gpt_modern import Fp8Matmul

    x, w, g = _fp8_case()
    out = Fp8Matmul.apply(x, w, reference_scaled_mm)
    out.backward(g)
    assert out.dtype == torch.bfloat16 and out.shape == (64, 128)
    x32, w32 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (x32 @ w32.t()).backward(g)
    assert _rel(out, x32 @ w32.t()) < 0.05  # measured 0.038; bf16 operands give 0.004
    assert _rel(x.grad, x32.grad) < 0.09 and x.grad.dtype == torch.float32
    assert _rel(w.grad, w32.grad) < 0.09 and w.grad.dtype == torch.float32
    zero = torch.zeros(128, 32, requires_grad=True)  # the zero-init head: a zero scale must not make NaNs
    Fp8Matmul.apply(x.detach(), zero, reference_scaled_mm).backward(g)
    assert torch.isfinite(zero.grad).all() and _rel(zero.grad, g.t() @ x.detach()) < 0.09


def test_the_fp8_head_matmul_compiles():
    """torch.compile traces the autograd function (what the GPU's compiled runs do with ``torch._scaled_mm``)."""
    from gpt_modern import Fp8Matmul

    x, w, g = _fp8_case()
    eager = Fp8Matmul.apply(x, w, reference_scaled_mm)
    eager.backward(g)
    grads = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    compiled = torch.compile(lambda a, b: Fp8Matmul.apply(a, b, reference_scaled_mm), fullgraph=True)(x, w)
    compiled.backward(g)
    assert _rel(compiled, eager) < 1e-2 and _rel(x.grad, grads[0]) < 1e-2 and _rel(w.grad, grads[1]) < 1e-2


def test_the_fp8_head_is_off_where_unsupported_and_at_generation():
    """``fp8_head=auto`` on CPU, and any mode outside training, run the plain head (torch has no CPU float8 matmul)."""
    from gpt_modern import fp8_supported

    assert not fp8_supported(torch.device("cpu"))
    idx = torch.randint(0, 97, (2, 16))
    auto, off = (_trained_like(ModernConfig(**TINY, fp8_head=mode)) for mode in ("auto", "false"))
    auto.train(), off.train()
    assert torch.equal(auto(idx), off(idx))
    forced = _trained_like(ModernConfig(**TINY, fp8_head="true"))  # eval: generation's rows are not a multiple of 16
    assert torch.equal(forced(idx), off.eval()(idx))
    with pytest.raises(NotImplementedError, match="_scaled_mm"):  # in training it would call the kernel CPU lacks
        forced.train()(idx)


def test_the_fp8_head_passes_torch_scaled_mm_own_checks_on_the_meta_device():
    """A training step of a modern model with ``fp8_head=true`` on the meta device: every one of the head's three
    matmuls goes through ``torch._scaled_mm`` itself, whose meta kernel checks what the CUDA one needs (row-major
    first operand, column-major second, dimensions of 16, fp32 scalar scales) and returns the output's shape and
    dtype; torch has no CPU kernel to run, but these checks run here. The same kernel refuses a wrong layout."""
    with torch.device("meta"):
        model = ModernGPT(ModernConfig(**TINY, fp8_head="true")).train()
        idx = torch.randint(0, TINY["vocab_size"], (2, 16))
    logits = model(idx)
    next_token_loss(logits, idx).backward()
    assert logits.shape == (2, 16, TINY["vocab_size"])
    assert model.lm_head.weight.grad.shape == model.lm_head.weight.shape
    a, b = (torch.empty(n, 32, device="meta", dtype=torch.float8_e4m3fn) for n in (64, 128))
    one = torch.ones((), device="meta")
    with pytest.raises(RuntimeError, match="mat2 must be col_major"):
        torch._scaled_mm(a, b.t().contiguous(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
