"""``optimizer.name=muon`` (training/muon.py): Muon equals Keller Jordan's reference (the ``muon-optimizer`` package,
a dev dependency) on separate matrices, the Q/K/V split equals three separate matrices, Newton-Schulz maps a spread
spectrum near 1, the AdamW groups equal torch's AdamW, the routing goes by role, a run trains with it and a SIGKILLed
2-rank run re-run replays the uninterrupted one (Muon's momentum buffers in the checkpoint), and bad settings are
one error each."""
from __future__ import annotations

import pytest
import torch

from core.errors import ConfigError
from gpt import GPT, GPTConfig
from tests.helpers import (
    assert_same_run,
    kill_when,
    last_step,
    losses,
    rows_by_step,
    run_train,
    start_train,
    tiny_args,
)
from training.config import load_config
from training.muon import Muon, muon_groups, newton_schulz, route

SHAPES = [(64, 64), (256, 64), (64, 256)]  # square, tall (scale 2, exact in bf16), wide


def _muon(params: list[torch.nn.Parameter], splits: list[int], dtype: str, **kw) -> Muon:
    group = {"params": params, "splits": splits, "muon": True, "lr": 0.02, "momentum": 0.95, "nesterov": True,
             "ns_steps": 5, "lr_scale": "spectral", "weight_decay": 0.01, "ns_dtype": dtype, **kw}
    return Muon([group])


def _grads(steps: int, shapes: list[tuple[int, int]]) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]


def test_muon_equals_the_reference_within_1e_6_over_20_steps():
    from muon import SingleDeviceMuon  # the reference: its Newton-Schulz runs in bf16

    torch.manual_seed(0)
    start = [torch.randn(s) for s in SHAPES]
    ours = [torch.nn.Parameter(w.clone()) for w in start]
    ref = [torch.nn.Parameter(w.clone()) for w in start]
    opt = _muon(ours, [1, 1, 1], "bfloat16")
    ref_opt = SingleDeviceMuon(ref, lr=0.02, weight_decay=0.01, momentum=0.95)
    for step, grads in enumerate(_grads(20, SHAPES)):
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()  # the reference updates its gradient in place
        opt.step()
        ref_opt.step()
        worst = max((p - q).abs().max().item() for p, q in zip(ours, ref))
        assert worst <= 1e-6, f"step {step + 1}: {worst}"
    assert max((p - w).abs().max().item() for p, w in zip(ours, start)) > 0.05  # it did move


def test_the_qkv_split_equals_three_separate_matrices():
    torch.manual_seed(0)
    qkv = torch.nn.Parameter(torch.randn(96, 32))
    parts = [torch.nn.Parameter(w.clone()) for w in qkv.detach().split(32)]
    joint, separate = _muon([qkv], [3], "float32"), _muon(parts, [1, 1, 1], "float32")
    for (g,) in _grads(10, [(96, 32)]):
        qkv.grad = g.clone()
        for p, gp in zip(parts, g.split(32)):
            p.grad = gp.clone()
        joint.step()
        separate.step()
    torch.testing.assert_close(qkv.detach(), torch.cat([p.detach() for p in parts]), rtol=0, atol=1e-6)
    whole = _muon([torch.nn.Parameter(qkv.detach().clone())], [1], "float32")  # not split: a different update
    whole.param_groups[0]["params"][0].grad = g.clone()
    before = whole.param_groups[0]["params"][0].detach().clone()
    whole.step()
    qkv.grad = g.clone()
    joint.step()
    assert not torch.allclose(whole.param_groups[0]["params"][0] - before, qkv.detach() - before, atol=1e-4)


@pytest.mark.parametrize("shape", [(128, 128), (256, 64), (64, 256)])
def test_newton_schulz_maps_a_spectrum_over_two_decades_into_0_6_to_1_25(shape):
    torch.manual_seed(0)
    rows, cols = shape
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(rows, k))
    v, _ = torch.linalg.qr(torch.randn(cols, k))
    spread = torch.logspace(-2, 0, k)  # singular values from 0.01 to 1
    G = u @ torch.diag(spread) @ v.T * 7.0  # any overall scale: it is normalized first
    out = torch.linalg.svdvals(newton_schulz(G, 5))
    assert out.min() >= 0.6 and out.max() <= 1.25, (out.min().item(), out.max().item())
    assert torch.linalg.svdvals(G).max() / torch.linalg.svdvals(G).min() > 99  # the input really spread


def test_the_adamw_groups_equal_torch_adamw():
    torch.manual_seed(0)
    shapes = [(16, 8), (8,)]
    start = [torch.randn(s) for s in shapes]
    ours = [torch.nn.Parameter(w.clone()) for w in start]
    ref = [torch.nn.Parameter(w.clone()) for w in start]
    opt = Muon([{"params": ours, "muon": False, "lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8,
                 "weight_decay": 0.1}])
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False)
    for grads in _grads(20, shapes):
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_the_routing_goes_by_role_not_by_shape():
    gpt = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    r = route(gpt.named_parameters())
    muon = {n: k for n, _, k in r.muon}
    assert len(muon) == 8 and all(k == (3 if n.endswith("c_attn.weight") else 1) for n, k in muon.items())
    assert sorted(n for n, _ in r.adamw_decay) == ["transformer.wpe.weight", "transformer.wte.weight"]  # head: tied
    assert all(p.dim() == 1 for _, p in r.adamw_no_decay)
    seen = [id(p) for _, p, _ in r.muon] + [id(p) for _, p in r.adamw_decay + r.adamw_no_decay]
    assert sorted(seen) == sorted(id(p) for p in gpt.parameters())  # every parameter once
    groups = muon_groups(r, lr=0.02, momentum=0.95, ns_steps=5, lr_scale="spectral", weight_decay=0.0,
                         adamw_lr=6e-4, betas=(0.9, 0.95), eps=1e-8, adamw_weight_decay=0.1, ns_dtype="float32")
    assert [g["muon"] for g in groups] == [True, False, False] and groups[2]["weight_decay"] == 0.0
    assert "Muon on 8 hidden matrices (c_attn, c_proj, c_fc; the 2 c_attn as Q, K, V)" in r.describe()


@pytest.mark.parametrize("override, message", [
    ("optimizer.muon.lr_scale=rms", "optimizer.muon.lr_scale='rms'; valid: spectral, match_adamw"),
    ("optimizer.muon.ns_steps=0", "optimizer.muon.ns_steps=0 is out of range; valid: >= 1"),
    ("optimizer.muon.momentum=1.0", "optimizer.muon.momentum=1.0 is out of range; valid: 0 <= momentum < 1"),
    ("optimizer.muon.lr=0", "optimizer.muon.lr=0.0 is out of range; valid: > 0"),
    ("optimizer.name=lion", "optimizer.name='lion'; valid: decoupled_adamw, adamw, muon"),
    ("scheduler.name=trapezoid", "scheduler.name='trapezoid'; valid: cosine, wsd"),
    ("scheduler.decay_fraction=0", "scheduler.decay_fraction=0.0 is out of range; valid: 0 < decay_fraction <= 1"),
    ("optimizer.muon.momentum_warmup=300", "optimizer.muon.momentum_warmup='300' is not a duration >= 0 in ba"),
])
def test_bad_muon_settings_are_one_error_naming_the_fix(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        load_config(None, ["data.path=x", "optimizer.name=muon", override])


def _wsd(batch: int, warmup: int, total: int, decay_fraction: float, alpha_f: float) -> float:
    """The warmup-stable-decay multiplier after ``batch`` batches, written out."""
    if batch < warmup:
        return batch / warmup
    start = total * (1 - decay_fraction)
    return 1.0 if batch < start else 1.0 + (batch - start) / (total - start) * (alpha_f - 1.0)


@pytest.mark.slow
def test_a_muon_run_with_wsd_and_momentum_warmup_trains_and_a_sigkilled_two_rank_run_replays_it(dataset, tmp_path):
    """Muon's state, the WSD schedule and the momentum warmup all come back on resume: the re-run's losses, lrs,
    momenta and weights are the uninterrupted run's. Both ranks of the DDP run end with bit-identical weights."""
    def args(name: str) -> list[str]:
        return tiny_args(dataset, tmp_path, f"run_name={name}", "optimizer.name=muon", "max_duration=24ba",
                         "save_interval=8ba", "eval_interval=1000ba", "model.dropout=0.1", "scheduler.name=wsd",
                         "scheduler.t_warmup=4ba", "scheduler.decay_fraction=0.25", "scheduler.alpha_f=0.1",
                         "optimizer.muon.momentum_warmup=10ba")

    first = run_train(args("a"), nproc=2, digests=tmp_path / "digests")
    assert first.stdout.count("optimizer: Muon on 8 hidden matrices") == 1  # rank 0 only
    ranks = [(tmp_path / "digests" / f"weights-rank{r}.sha256").read_text() for r in (0, 1)]
    assert ranks[0] == ranks[1]  # DDP: both ranks end with bit-identical weights (the same all-reduced gradient)
    la = losses(tmp_path / "a")
    assert sum(la[s] for s in range(20, 25)) < sum(la[s] for s in range(1, 6)) - 1.0  # it learns
    rows = rows_by_step(tmp_path / "a")  # step s trains batch s - 1: its lr and momentum are those of s - 1
    assert [rows[s]["lr-Muon/group0"] for s in range(1, 25)] == pytest.approx(
        [0.02 * _wsd(s - 1, 4, 24, 0.25, 0.1) for s in range(1, 25)], rel=1e-6, abs=1e-12)
    assert [rows[s]["lr-Muon/group1"] for s in range(1, 25)] == pytest.approx(  # AdamW's groups too
        [1.5e-3 * _wsd(s - 1, 4, 24, 0.25, 0.1) for s in range(1, 25)], rel=1e-6, abs=1e-12)
    assert [rows[s]["optimizer/muon_momentum"] for s in range(1, 25)] == pytest.approx(
        [0.85 + 0.1 * min(s - 1, 10) / 10 for s in range(1, 25)], rel=1e-9)

    run = tmp_path / "b"
    kill_when(start_train(args("b"), tmp_path / "first.log", nproc=2), lambda: last_step(run) >= 12)
    run_train(args("b"), nproc=2)
    assert_same_run(tmp_path / "a", run)
    again = rows_by_step(run)
    for key in ("lr-Muon/group0", "lr-Muon/group1", "optimizer/muon_momentum"):
        assert [again[s][key] for s in range(1, 25)] == [rows[s][key] for s in range(1, 25)], key


def test_the_fingerprint_keeps_muon_settings_out_of_adamw_runs_and_refuses_a_switch(dataset):
    """An AdamW run's fingerprint is what it was before Muon existed (no ``muon`` entry: its old checkpoints resume
    without a warning); a muon run's holds its settings (a change warns, as the schedule's do); switching the
    optimizer on resume is refused before Composer loads the checkpoint."""
    from core.errors import ResumeMismatchError
    from core.metadata import read_metadata
    from core.streams import StreamSource
    from training.resume.guard import SOFT_KEYS, check_fingerprint, run_fingerprint

    meta = read_metadata(dataset)

    def fingerprint(*overrides: str) -> dict:
        cfg = load_config(None, [f"data.path={dataset}", *overrides])
        gpt = GPTConfig(block_size=meta.seq_len, vocab_size=meta.vocab_size, n_layer=2, n_head=2, n_embd=32)
        return run_fingerprint(cfg, meta, {StreamSource(str(dataset)): meta}, gpt)

    adamw, muon = fingerprint(), fingerprint("optimizer.name=muon")
    assert "muon" not in adamw["optimizer"] and "optimizer.muon" not in adamw
    assert muon["optimizer.muon"]["lr"] == 0.02
    with pytest.raises(ResumeMismatchError, match=r"optimizer.name: checkpoint 'decoupled_adamw' -> now 'muon'"):
        check_fingerprint(adamw, muon, strict=True, soft=SOFT_KEYS)
    with pytest.warns(UserWarning, match=r"optimizer.muon: checkpoint"):
        check_fingerprint(muon, fingerprint("optimizer.name=muon", "optimizer.muon.lr=0.01"), strict=True,
                          soft=SOFT_KEYS)


def test_the_lr_scales_and_archs_are_the_configs():
    from gpt_modern import ARCHS
    from training import config
    from training.muon import LR_SCALES

    assert config.LR_SCALES == LR_SCALES and config.ARCHS == ARCHS
