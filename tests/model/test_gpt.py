"""Tests for gpt.py: shapes, padded vocab, tying, init, causality, attention math, counts, generation, config."""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so plain `pytest` finds gpt.py too

from gpt import GPT, MLP, PRESETS, Block, CausalSelfAttention, GPTConfig  # noqa: E402
from sampling import generate  # noqa: E402

VOCAB = 257  # byte tokenizer: 256 bytes + EOS, not a multiple of 64
PADDED = 320


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_config(**overrides) -> GPTConfig:
    kwargs = dict(block_size=16, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32)
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


def tiny_model(**overrides) -> GPT:
    return GPT(tiny_config(**overrides)).eval()


def expected_num_params(cfg: GPTConfig, vocab_rows: int, non_embedding: bool = True) -> int:
    """Count by hand: per block 12C^2 + 13C (with biases), plus the tied (vocab_rows x C) matrix once, plus ln_f."""
    C, L = cfg.n_embd, cfg.n_layer
    per_block = (
        2 * C  # ln_1
        + C * 3 * C + 3 * C  # c_attn
        + C * C + C  # attn c_proj
        + 2 * C  # ln_2
        + C * 4 * C + 4 * C  # c_fc
        + 4 * C * C + C  # mlp c_proj
    )
    assert per_block == 12 * C * C + 13 * C
    n = L * per_block + vocab_rows * C + 2 * C
    if not non_embedding:
        n += cfg.block_size * C
    return n


# ---------------------------------------------------------------- shapes and the padded vocab


def test_forward_shape_and_padded_vocab() -> None:
    model = tiny_model()
    assert model.config.padded_vocab_size == PADDED
    assert model.lm_head.weight.shape == (PADDED, 32)
    assert model.transformer.wte.weight.shape == (PADDED, 32)
    idx = torch.randint(0, VOCAB, (3, 11))
    logits = model(idx)
    assert logits.shape == (3, 11, VOCAB)
    assert logits.dtype == torch.float32
    # The kept columns are exactly the first VOCAB columns of the full padded projection.
    with torch.no_grad():
        full = model.lm_head(model.transformer.ln_f(_hidden(model, idx)))
    torch.testing.assert_close(logits, full[..., :VOCAB])
    # Loss can be computed directly on the (non-contiguous) logits.
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx.reshape(-1))
    assert torch.isfinite(loss)


def _hidden(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(idx.size(1))
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)
    for block in model.blocks():
        x = block(x)
    return x


@pytest.mark.parametrize("vocab, padded", [(257, 320), (50257, 50304), (64, 64), (1, 64), (65, 128)])
def test_padded_vocab_size(vocab: int, padded: int) -> None:
    assert GPTConfig(vocab_size=vocab, n_layer=1, n_head=1, n_embd=8).padded_vocab_size == padded


def test_padded_ids_never_predicted_or_sampled() -> None:
    model = tiny_model()
    with torch.no_grad():
        # Rig the head so the padded rows would win every argmax if they were not dropped:
        # ln_f outputs all-ones, real rows score 0, padded rows score n_embd.
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[VOCAB:] = 1.0
        assert model.lm_head(torch.ones(32)).argmax().item() >= VOCAB  # the rig works
    idx = torch.randint(0, VOCAB, (4, 5))
    assert model(idx).argmax(dim=-1).max().item() < VOCAB
    for kwargs in (dict(temperature=0.0), dict(temperature=1.0), dict(temperature=2.0, top_k=50)):
        out = generate(model, idx, max_new_tokens=20, **kwargs)
        assert out.max().item() < VOCAB, kwargs


# ---------------------------------------------------------------- weight tying


def test_weight_tying_shares_one_parameter() -> None:
    model = tiny_model()
    assert model.transformer.wte.weight is model.lm_head.weight
    names = [n for n, _ in model.named_parameters()]
    assert sum("wte.weight" in n or "lm_head.weight" in n for n in names) == 1


def test_weight_tying_gradients_flow_into_one_tensor() -> None:
    model = tiny_model()
    untied = copy.deepcopy(model)
    untied.transformer.wte.weight = nn.Parameter(untied.lm_head.weight.detach().clone())
    assert untied.transformer.wte.weight is not untied.lm_head.weight

    idx = torch.randint(0, VOCAB, (2, 9))
    targets = torch.randint(0, VOCAB, (2, 9))
    for m in (model, untied):
        F.cross_entropy(m(idx).reshape(-1, VOCAB), targets.reshape(-1)).backward()

    tied_grad = model.lm_head.weight.grad
    assert model.transformer.wte.weight.grad is tied_grad
    emb_grad, head_grad = untied.transformer.wte.weight.grad, untied.lm_head.weight.grad
    assert emb_grad.abs().sum() > 0 and head_grad.abs().sum() > 0
    torch.testing.assert_close(tied_grad, emb_grad + head_grad)
    # Padded rows get no gradient: never looked up, never predicted.
    assert tied_grad[VOCAB:].abs().sum().item() == 0.0


# ---------------------------------------------------------------- init


def _check_init_stats(model: GPT) -> None:
    cfg = model.config
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert proj_std < 0.02 * 0.5  # the two targets are far apart relative to the 5% tolerance

    def check_std(t: torch.Tensor, target: float, what: str) -> None:
        std = t.float().std().item()
        assert abs(std - target) < 0.05 * target, f"{what}: std {std:.5f} vs {target:.5f}"
        assert abs(t.float().mean().item()) < 0.05 * target, what

    for i, block in enumerate(model.blocks()):
        check_std(block.attn.c_proj.weight, proj_std, f"h.{i}.attn.c_proj")
        check_std(block.mlp.c_proj.weight, proj_std, f"h.{i}.mlp.c_proj")
        check_std(block.attn.c_attn.weight, 0.02, f"h.{i}.attn.c_attn")
        check_std(block.mlp.c_fc.weight, 0.02, f"h.{i}.mlp.c_fc")
    check_std(model.lm_head.weight, 0.02, "lm_head/wte")
    check_std(model.transformer.wpe.weight, 0.02, "wpe")
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            assert torch.count_nonzero(p).item() == 0, name
        elif ".ln_" in name or "ln_f" in name:
            assert torch.equal(p, torch.ones_like(p)), name


def init_stats_config() -> GPTConfig:
    # c_proj: 256x256 and 256x1024 per block -> std estimates good to well under 1%.
    return GPTConfig(block_size=256, vocab_size=VOCAB, n_layer=4, n_head=4, n_embd=256)


def test_init_statistics() -> None:
    model = GPT(init_stats_config())
    _check_init_stats(model)


def test_init_weights_after_meta_device_build() -> None:
    """The FSDP path: build on meta, materialise with to_empty (which unties and leaves garbage), re-init."""
    with torch.device("meta"):
        model = GPT(init_stats_config())
    assert model.lm_head.weight.is_meta
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)  # make sure nothing below passes by accident
    model.init_weights()
    assert model.transformer.wte.weight is model.lm_head.weight
    assert not model.lm_head.weight.is_meta
    _check_init_stats(model)


def test_blocks_returns_the_blocks_in_order() -> None:
    model = tiny_model(n_layer=3)
    blocks = model.blocks()
    assert isinstance(blocks, list) and len(blocks) == 3
    assert all(isinstance(b, Block) for b in blocks)
    assert all(a is b for a, b in zip(blocks, model.transformer.h))


# ---------------------------------------------------------------- causality and attention math


def test_causal_future_tokens_do_not_change_past_logits() -> None:
    model = tiny_model()
    T = 12
    idx = torch.randint(0, VOCAB, (2, T))
    base = model(idx)
    for t in (0, 4, T - 2):
        changed = idx.clone()
        changed[:, t + 1 :] = (idx[:, t + 1 :] + 1 + torch.randint(0, VOCAB - 1, (2, T - t - 1))) % VOCAB
        assert (changed[:, t + 1 :] != idx[:, t + 1 :]).all()
        out = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1], base[:, t + 1])  # the change is visible from t+1 on


def manual_attention(attn: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Reference: explicit masked softmax(q k^T / sqrt(D)) v."""
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    return attn.c_proj(y)


def test_sdpa_matches_manual_attention() -> None:
    cfg = tiny_config(n_head=4, n_embd=64, dropout=0.2)
    attn = CausalSelfAttention(cfg).eval()
    x = torch.randn(3, 10, 64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), manual_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training() -> None:
    model = tiny_model(dropout=0.3)
    idx = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), model(idx))
        reference = copy.deepcopy(model)
        for m in reference.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
            if isinstance(m, CausalSelfAttention):
                m.attn_dropout = 0.0
        torch.testing.assert_close(model(idx), reference(idx))
        model.train()
        assert not torch.allclose(model(idx), model(idx))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_mlp_uses_the_configured_gelu(approximate) -> None:
    mlp = MLP(tiny_config(gelu_approximate=approximate)).eval()
    with torch.no_grad():
        mlp.c_fc.weight.normal_(0.0, 0.5)  # pre-activations of order 1, where the two GELUs differ
    x = torch.randn(2, 7, 32)
    h = mlp.c_fc(x)
    gelu_tanh = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h**3)))  # GPT-2's
    gelu_erf = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact
    with torch.no_grad():
        expected, other = (gelu_tanh, gelu_erf) if approximate == "tanh" else (gelu_erf, gelu_tanh)
        torch.testing.assert_close(mlp(x), mlp.c_proj(expected))
        assert not torch.allclose(mlp(x), mlp.c_proj(other))


def test_gelu_choices_are_the_configs():
    from gpt import GELU_APPROXIMATIONS
    from training import config

    assert config.GELU_APPROXIMATIONS == GELU_APPROXIMATIONS and GPTConfig().gelu_approximate == "tanh"
    with pytest.raises(ValueError, match="gelu_approximate must be one of tanh, none, got 'fast'"):
        tiny_config(gelu_approximate="fast")


@pytest.mark.parametrize("vocab_size", [100, 128])  # 100: padded to 128 rows
def test_cpu_logits_come_contiguous_from_the_real_vocab_rows(vocab_size) -> None:
    """On CPU the head multiplies by the real rows only: the same logits as the padded matmul's first columns,
    contiguous (no copy in the loss, no zero-filled gradient in backward), and the same gradients."""
    model = tiny_model(vocab_size=vocab_size)
    idx = torch.randint(0, vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    logits = model(idx)
    assert logits.shape == (2, 16, vocab_size) and logits.is_contiguous()
    x = model.transformer.ln_f(model.transformer.h[1](model.transformer.h[0](
        model.transformer.wte(idx) + model.transformer.wpe(torch.arange(16)))))
    padded = model.lm_head(x)[..., :vocab_size]
    torch.testing.assert_close(logits, padded)
    (grad,) = torch.autograd.grad(logits.square().sum(), model.lm_head.weight)
    (grad_padded,) = torch.autograd.grad(padded.square().sum(), model.lm_head.weight)
    torch.testing.assert_close(grad, grad_padded)
    assert not grad[vocab_size:].any()  # the padded rows get no gradient from the head


def test_block_is_pre_layernorm_residual() -> None:
    block = Block(tiny_config()).eval()
    with torch.no_grad():
        for ln in (block.ln_1, block.ln_2):  # non-trivial LayerNorm params so ln placement matters
            ln.weight.normal_(1.0, 0.5)
            ln.bias.normal_(0.0, 0.5)
        x = torch.randn(2, 7, 32) * 3.0
        h = x + block.attn(block.ln_1(x))
        expected = h + block.mlp(block.ln_2(h))
        torch.testing.assert_close(block(x), expected)


# ---------------------------------------------------------------- parameter and FLOP counts


def test_num_params_gpt2_124m() -> None:
    with torch.device("meta"):
        model = GPT(GPTConfig.from_preset("gpt2"))
    cfg = model.config
    assert cfg.vocab_size == 50257 and cfg.padded_vocab_size == 50304
    n = model.num_params()
    # nanoGPT's count for vocab 50257 (123.65M), plus the 47 padded rows of the tied matrix.
    nanogpt_50257 = expected_num_params(cfg, vocab_rows=50257)
    assert n == nanogpt_50257 + (50304 - 50257) * cfg.n_embd
    assert n == expected_num_params(cfg, vocab_rows=50304)
    assert 85_000_000 < n < 125_000_000
    assert model.num_params(non_embedding=False) == n + 1024 * 768
    assert model.num_params(non_embedding=False) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_num_params_every_preset(name: str) -> None:
    with torch.device("meta"):
        model = GPT(GPTConfig.from_preset(name))
    cfg = model.config
    assert model.num_params() == expected_num_params(cfg, cfg.padded_vocab_size)
    assert model.num_params(False) == expected_num_params(cfg, cfg.padded_vocab_size, non_embedding=False)


def test_num_params_without_bias() -> None:
    model = tiny_model(bias=False)
    C, L = 32, 2
    assert model.num_params() == L * 12 * C * C + L * 2 * C + PADDED * C + C


def test_flops_per_token() -> None:
    with torch.device("meta"):
        model = GPT(GPTConfig.from_preset("gpt2"))
    L, C, V = 12, 768, 50304
    n = expected_num_params(model.config, V)
    assert model.flops_per_token() == 6 * n + 12 * L * C * 1024
    assert model.flops_per_token(256) == 6 * n + 12 * L * C * 256
    assert isinstance(model.flops_per_token(), int)
    # The tied matrix counts once: its forward matmul is 2 * C * V FLOPs, x3 for forward + backward.
    n_without_head = n - V * C
    assert model.flops_per_token(1) - 6 * n_without_head - 12 * L * C == 3 * (2 * C * V)
    # ~6 * 124M per token plus attention, the usual rule of thumb.
    assert 0.75e9 < model.flops_per_token() < 0.9e9
    with pytest.raises(ValueError, match="seq_len must be a positive int, got 0"):
        model.flops_per_token(0)


# ---------------------------------------------------------------- generation


def test_generate_length_and_prefix() -> None:
    model = tiny_model()
    idx = torch.randint(0, VOCAB, (2, 10))
    out = generate(model, idx, max_new_tokens=12)  # 22 > block_size 16: the context gets cropped
    assert out.shape == (2, 22)
    assert out.dtype == torch.long
    assert torch.equal(out[:, :10], idx)
    assert torch.equal(generate(model, idx, max_new_tokens=0), idx)


def test_generate_greedy_is_deterministic_and_matches_argmax() -> None:
    model = tiny_model()
    idx = torch.randint(0, VOCAB, (2, 6))
    torch.manual_seed(1)
    a = generate(model, idx, max_new_tokens=15, temperature=0.0)
    torch.manual_seed(2)
    b = generate(model, idx, max_new_tokens=15, temperature=0.0)
    assert torch.equal(a, b)
    # Every greedy step is the argmax of forward on the (cropped) context.
    for t in range(6, 21):
        ctx = a[:, max(0, t - 16) : t]
        assert torch.equal(a[:, t], model(ctx)[:, -1].argmax(-1))
    torch.manual_seed(3)
    assert torch.equal(generate(model, idx, max_new_tokens=15, top_k=1), a)
    torch.manual_seed(4)
    assert torch.equal(generate(model, idx, max_new_tokens=15, temperature=0.7, top_k=1), a)


def test_generate_low_temperature_approaches_greedy() -> None:
    model = tiny_model()
    idx = torch.randint(0, VOCAB, (4, 6))
    greedy = generate(model, idx, max_new_tokens=8, temperature=0.0)
    for t in range(6, 14):  # the top-2 gap at each greedy step is far above the temperature
        top2 = model(greedy[:, :t])[:, -1].topk(2).values
        assert (top2[:, 0] - top2[:, 1]).min().item() > 1e-4
    assert torch.equal(generate(model, idx, max_new_tokens=8, temperature=1e-7), greedy)


def test_generate_sampling_respects_top_k_and_varies() -> None:
    model = tiny_model()
    prompt = torch.randint(0, VOCAB, (1, 5))
    top3 = set(model(prompt)[0, -1].topk(3).indices.tolist())
    out = generate(model, prompt.expand(200, -1), max_new_tokens=1, temperature=5.0, top_k=3)
    sampled = set(out[:, -1].tolist())
    assert sampled <= top3
    assert len(sampled) > 1  # high temperature over 3 ids: not a point mass
    wide = generate(model, prompt.expand(200, -1), max_new_tokens=1, temperature=5.0)
    assert len(set(wide[:, -1].tolist())) > 3


def test_generate_rejects_bad_arguments() -> None:
    model = tiny_model()
    idx = torch.zeros(1, 1, dtype=torch.long)
    for kwargs, message in ((dict(temperature=-1.0), r"temperature must be >= 0 \(0 = greedy\), got -1.0"),
                            (dict(top_k=0), "top_k must be None or >= 1, got 0"),
                            (dict(max_new_tokens=-1), "max_new_tokens must be >= 0, got -1")):
        with pytest.raises(ValueError, match=message):
            generate(model, idx, **{"max_new_tokens": 1, **kwargs})


# ---------------------------------------------------------------- config and presets


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("gpt2", (12, 12, 768)),
        ("gpt2-medium", (24, 16, 1024)),
        ("gpt2-large", (36, 20, 1280)),
        ("gpt2-xl", (48, 25, 1600)),
        ("nano", (4, 4, 128)),
        ("micro", (2, 2, 64)),
        ("mini", (6, 6, 384)),
    ],
)
def test_presets(name: str, sizes: tuple[int, int, int]) -> None:
    cfg = GPTConfig.from_preset(name)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd) == sizes
    assert cfg.block_size == 1024 and cfg.vocab_size == 50257


def test_defaults_are_gpt2_small() -> None:
    cfg = GPTConfig()
    assert (cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (1024, 50257, 12, 12, 768)
    assert cfg.dropout == 0.0 and cfg.bias is True
    assert cfg == GPTConfig.from_preset("gpt2")


def test_preset_overrides() -> None:
    cfg = GPTConfig.from_preset("nano", block_size=64, vocab_size=VOCAB, dropout=0.1, bias=False)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (4, 4, 128, 64, VOCAB)
    assert cfg.dropout == 0.1 and cfg.bias is False
    assert GPTConfig.from_preset("nano", n_layer=1).n_layer == 1


def test_unknown_preset_lists_valid_presets() -> None:
    with pytest.raises(ValueError, match="unknown GPT preset 'gpt3'; valid presets: ") as err:
        GPTConfig.from_preset("gpt3")
    msg = str(err.value)
    assert "gpt3" in msg
    for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "nano", "micro", "mini"):
        assert name in msg


def test_unknown_field_lists_valid_fields() -> None:
    with pytest.raises(ValueError, match="unknown GPTConfig field.* n_layers; valid fields: ") as err:
        GPTConfig.from_preset("nano", n_layers=3)
    msg = str(err.value)
    assert "n_layers" in msg
    for field in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias"):
        assert field in msg


def test_bad_n_head_lists_valid_choices() -> None:
    with pytest.raises(ValueError, match="n_embd=128 is not divisible by n_head=3; n_head must be one of ") as err:
        GPTConfig(n_layer=1, n_head=3, n_embd=128)
    msg = str(err.value)
    assert "n_head=3" in msg and "n_embd=128" in msg
    assert "1, 2, 4, 8, 16, 32, 64, 128" in msg
    with pytest.raises(ValueError, match="n_embd=64 is not divisible by n_head=3"):
        GPTConfig.from_preset("micro", n_head=3)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(n_layer=0),
        dict(n_head=-2),
        dict(n_embd=0),
        dict(vocab_size=0),
        dict(block_size=0),
        dict(n_layer=2.0),
        dict(n_layer=True),
        dict(dropout=1.0),
        dict(dropout=-0.1),
    ],
)
def test_invalid_config_values(overrides: dict) -> None:
    field = next(iter(overrides))
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


# ---------------------------------------------------------------- bias=False and length limit


def test_bias_false_has_no_bias_parameters() -> None:
    model = tiny_model(bias=False)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "bias" in n]
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.LayerNorm)):
            assert m.bias is None, m
    assert model(torch.randint(0, VOCAB, (1, 5))).shape == (1, 5, VOCAB)
    assert any(n.endswith(".bias") for n, _ in tiny_model().named_parameters())


def test_sequence_longer_than_block_size_raises() -> None:
    model = tiny_model()
    assert model(torch.zeros(1, 16, dtype=torch.long)).shape == (1, 16, VOCAB)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
