"""README, "Train": `optimizer.weight_decay` is in PyTorch-AdamW units (decay per step = lr x wd), converted for
Composer's DecoupledAdamW (`optimizer.name=decoupled_adamw`) and as it is for torch.optim.AdamW (`adamw`); decay
applies to matrices only, not to biases or LayerNorm weights; the schedule is linear warmup (`scheduler.t_warmup`)
then cosine to `scheduler.alpha_f x lr`.

In-process: the optimizer is built by training/trainer.py's build_optimizer from a real config and stepped against
torch.optim.AdamW's formula; the schedule is Composer's scheduler built as build_trainer builds it.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.helpers import REPO
from training.config import load_config

YAML = str(REPO / "yamls" / "tiny.yaml")


def _model(bias: bool = True):
    from gpt import GPTConfig
    from training.model import ComposerGPT

    torch.manual_seed(0)
    config = GPTConfig(block_size=16, vocab_size=257, n_layer=2, n_head=2, n_embd=32, bias=bias)
    return ComposerGPT(config, torch.ones(257, dtype=torch.long))


def _optimizer(model, *overrides: str):
    from training.trainer import build_optimizer

    cfg = load_config(YAML, ["data.path=unused", *overrides])
    return cfg, build_optimizer(cfg, model)


NAMES = ("decoupled_adamw", "adamw")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bias", [True, False])
def test_weight_decay_applies_to_matrices_only(bias, name):
    model = _model(bias)
    cfg, opt = _optimizer(model, "optimizer.weight_decay=0.1", "optimizer.lr=1e-3", f"optimizer.name={name}")
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    undecayed = [g for g in opt.param_groups if g["weight_decay"] == 0]
    assert len(decayed) == 1 and len(undecayed) == 1
    decayed_names = {names[id(p)] for p in decayed[0]["params"]}
    undecayed_names = {names[id(p)] for p in undecayed[0]["params"]}
    # every parameter is in exactly one group (the tied lm_head / wte weight once)
    assert decayed_names | undecayed_names == set(names.values())
    assert not decayed_names & undecayed_names
    assert all(p.dim() >= 2 for p in decayed[0]["params"])
    assert all(p.dim() < 2 for p in undecayed[0]["params"])
    assert {"model.transformer.wte.weight", "model.transformer.h.0.attn.c_attn.weight",
            "model.transformer.h.1.mlp.c_proj.weight"} <= decayed_names
    # LayerNorm gains are never decayed, and with bias=True neither is any bias
    assert {"model.transformer.h.0.ln_1.weight", "model.transformer.ln_f.weight"} <= undecayed_names
    assert not any("ln_" in n for n in decayed_names)
    assert not any(n.endswith(".bias") for n in decayed_names)
    assert any(n.endswith(".bias") for n in undecayed_names) == bias


@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_is_in_pytorch_adamw_units_through_a_schedule(name):
    """Either optimizer, as built from the config, moves every parameter exactly as torch.optim.AdamW(lr, wd) with
    the same two groups would, while the lr changes from step to step (as the scheduler changes it)."""
    lr, wd = 2e-3, 0.1
    ours_model = _model()
    ref_model = copy.deepcopy(ours_model)
    _, ours = _optimizer(ours_model, f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}",
                         "optimizer.betas=[0.9,0.95]", "optimizer.eps=1e-8", f"optimizer.name={name}")
    matrices = [p for p in ref_model.parameters() if p.dim() >= 2]
    vectors = [p for p in ref_model.parameters() if p.dim() < 2]
    ref = torch.optim.AdamW([{"params": matrices, "weight_decay": wd}, {"params": vectors, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(1)
    for step, factor in enumerate([1.0, 0.5, 0.25, 0.8]):
        for opt in (ours, ref):  # what a scheduler does: scale each group's lr
            for group in opt.param_groups:
                group["lr"] = lr * factor
        for p, q in zip(ours_model.parameters(), ref_model.parameters()):
            g = torch.randn(p.shape, generator=gen) * 1e-2
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        for (name, p), q in zip(ours_model.named_parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8, msg=f"{name} differs at step {step}")


@pytest.mark.parametrize("name", NAMES)
def test_decay_per_step_is_lr_times_weight_decay(name):
    """With zero gradients Adam's update is zero, so one step shows the decay alone: p *= 1 - lr_t x wd on
    matrices, nothing on the rest; lr_t is the scheduled lr, not the initial one."""
    lr, wd = 1e-2, 0.5
    model = _model()
    _, opt = _optimizer(model, f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}", f"optimizer.name={name}")
    for group in opt.param_groups:
        group["lr"] = lr * 0.3
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 0.3 * lr * wd) if p.dim() >= 2 else before[n]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-7, atol=0, msg=n)


def test_optimizer_name_picks_the_implementation():
    """decoupled_adamw: Composer's DecoupledAdamW; adamw: torch.optim.AdamW with its fused kernel on CPU (run
    here) and GPU."""
    from composer.optim import DecoupledAdamW

    from training.trainer import ADAMW_KERNEL

    assert type(_optimizer(_model())[1]) is DecoupledAdamW  # the default
    model = _model()
    adamw = _optimizer(model, "optimizer.name=adamw")[1]
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["fused"] and not adamw.defaults["foreach"]
    assert ADAMW_KERNEL == {"fused": True}  # on every device
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    adamw.step()  # the fused CPU kernel runs (torch < 2.4 had none: it would raise here)
    assert all(int(adamw.state[p]["step"]) == 1 for p in model.parameters())


def test_the_gpu_yamls_use_torch_adamw_and_compile_per_block_and_the_cpu_yamls_neither():
    gpu = ["gpt2.yaml", "gpt2-single.yaml", "experiments/pile-cc-only.yaml", "experiments/pile-mixture.yaml"]
    for name in gpu:
        cfg = load_config(str(REPO / "yamls" / name), ["data.streams=null", "data.path=x"])
        assert cfg.optimizer.name == "adamw" and cfg.compile.enabled and cfg.compile.per_block
    for name, optimizer in (("tiny.yaml", "decoupled_adamw"), ("nanogpt-cpu.yaml", "adamw"),
                            ("nanogpt-cpu-fast.yaml", "adamw")):  # nanoGPT's own optimizer, fused on CPU too
        cfg = load_config(str(REPO / "yamls" / name), ["data.path=x"])
        assert cfg.optimizer.name == optimizer and not cfg.compile.enabled


def _closed_form(t: int, lr: float, t_warmup: int, total: int, alpha_f: float) -> float:
    if t < t_warmup:
        return lr * t / t_warmup
    frac = (t - t_warmup) / (total - t_warmup)
    return lr * (alpha_f + (1 - alpha_f) * 0.5 * (1 + math.cos(math.pi * frac)))


def test_scheduler_is_linear_warmup_then_cosine_to_alpha_f():
    """Composer's scheduler as build_trainer builds it from scheduler.t_warmup / alpha_f, against the closed form
    (the logged lr of a real run is checked in test_readme_train_knobs.py)."""
    from composer.core import State, Time
    from composer.optim import CosineAnnealingWithWarmupScheduler

    cfg = load_config(YAML, ["data.path=unused", "scheduler.t_warmup=10ba", "scheduler.alpha_f=0.2",
                             "max_duration=50ba", "optimizer.lr=1e-3"])
    scheduler = CosineAnnealingWithWarmupScheduler(t_warmup=cfg.scheduler.t_warmup, alpha_f=cfg.scheduler.alpha_f)
    model = torch.nn.Linear(2, 2)
    state = State(model=model, rank_zero_seed=0, run_name="x", device="cpu", max_duration=cfg.max_duration)
    for t in range(0, 51):
        state.timestamp = state.timestamp.copy(batch=Time.from_batch(t))
        want = _closed_form(t, 1.0, 10, 50, 0.2)
        assert scheduler(state) == pytest.approx(want, abs=1e-12), t
    assert scheduler(state) == pytest.approx(0.2)  # the end of max_duration: alpha_f x lr
