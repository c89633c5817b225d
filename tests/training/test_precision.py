"""precision=auto: rank 0 times the real model in fp32 and in bf16 autocast, every rank takes its answer, and a run
keeps the choice of its first start."""
from __future__ import annotations

import json
import re

import pytest
import torch

from gpt import GPT, GPTConfig
from tests.helpers import final_weights, metrics_rows, run_train, tiny_args
from training.precision import probe_cpu

CHOSE = re.compile(r"^precision    (fp32|amp_bf16) \(auto: a forward \+ backward of 4 x 32 took [\d.]+ ms in fp32, "
                   r"[\d.]+ ms in bf16 on this CPU", re.M)


def test_the_probe_leaves_no_gradients_no_rng_draws_and_the_same_weights():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fp32, bf16 = probe_cpu(model, 2, 16)
    assert fp32 > 0 and bf16 > 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew inside a forked RNG: training draws the same
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_auto_records_its_choice_and_a_requeued_run_keeps_it(dataset, tmp_path):
    args = tiny_args(dataset, tmp_path, "run_name=auto", "precision=auto", "eval_interval=1000ba",
                     "save_interval=4ba")
    first = run_train([*args, "max_duration=4ba"]).stdout
    chosen = CHOSE.search(first)
    assert chosen, first
    run = tmp_path / "auto"
    recorded = json.loads((run / "precision.json").read_text())
    assert recorded["precision"] == chosen.group(1)
    assert f"\nprecision: {chosen.group(1)}\n" in (run / "config.yaml").read_text()  # what ran, not "auto"
    again = run_train([*args, "max_duration=8ba"]).stdout
    assert f"precision    {chosen.group(1)} (auto: kept from this run's first start, where a forward" in again
    assert [r["step"] for r in metrics_rows(run)] == list(range(1, 9))


@pytest.mark.slow
def test_a_run_whose_first_start_chose_bf16_trains_in_bf16(dataset, tmp_path):
    """The record wins over a new measurement: the same arithmetic as before the requeue, whatever the timing."""
    run = tmp_path / "kept"
    run.mkdir()
    (run / "precision.json").write_text(json.dumps({"precision": "amp_bf16", "why": "bf16 was faster"}))
    out = run_train(tiny_args(dataset, tmp_path, "run_name=kept", "precision=auto", "max_duration=3ba",
                              "eval_interval=1000ba")).stdout
    assert "precision    amp_bf16 (auto: kept from this run's first start, where bf16 was faster)" in out
    bf16 = run_train(tiny_args(dataset, tmp_path, "run_name=explicit", "precision=amp_bf16", "max_duration=3ba",
                               "eval_interval=1000ba")).stdout
    assert "precision    amp_bf16 (set in the config)" in bf16
    losses = [[r["loss/train/total"] for r in metrics_rows(tmp_path / name)] for name in ("kept", "explicit")]
    assert losses[0] == losses[1]  # the bf16 run, bit for bit


@pytest.mark.slow
def test_two_ranks_take_rank_zeros_choice(dataset, tmp_path):
    """Only rank 0 reads the record (or measures): rank 1 computes in bf16 only if it got rank 0's answer, and
    otherwise its fp32 gradients would change the averaged ones, and so the weights."""
    run = tmp_path / "ddp-auto"
    run.mkdir()
    (run / "precision.json").write_text(json.dumps({"precision": "amp_bf16", "why": "bf16 was faster"}))
    common = ["max_duration=3ba", "eval_interval=1000ba", "save_interval=3ba"]
    out = run_train(tiny_args(dataset, tmp_path, "run_name=ddp-auto", "precision=auto", *common), nproc=2).stdout
    assert out.count("precision    amp_bf16 (auto: kept from this run's first start") == 1, out  # rank 0 says it
    run_train(tiny_args(dataset, tmp_path, "run_name=ddp-bf16", "precision=amp_bf16", *common), nproc=2)
    auto, bf16 = final_weights(run), final_weights(tmp_path / "ddp-bf16")
    assert sorted(auto) == sorted(bf16) and all(torch.equal(auto[k], bf16[k]) for k in auto)
