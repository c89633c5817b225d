"""`activation_checkpointing=true` for DDP (and one process) as for FSDP: each block recomputes its activations in
backward, and the run's losses are those of the same run without it; `fsdp.activation_checkpointing` stays its
alias under FSDP."""
from __future__ import annotations

import copy

import pytest
import torch

from gpt import GPT, GPTConfig
from tests.helpers import REPO, losses, run_train, tiny_args
from training.config import load_config
from training.model import checkpoint_blocks

YAML = str(REPO / "yamls" / "tiny.yaml")


def _gpt(dropout: float = 0.1) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=257, n_layer=2, n_head=2, n_embd=32, dropout=dropout))


def _forward_calls(gpt: GPT) -> list[int]:
    """A counter of every attention forward of every block (the recomputation in backward runs them again)."""
    calls = [0]

    def count(*_):
        calls[0] += 1

    for block in gpt.blocks():
        block.attn.register_forward_pre_hook(count)
    return calls


def test_checkpointed_blocks_recompute_in_backward_with_the_same_gradients():
    plain = _gpt()
    checkpointed = copy.deepcopy(plain)
    checkpoint_blocks(checkpointed)
    calls = _forward_calls(checkpointed)
    idx = torch.randint(0, 257, (4, 16), generator=torch.Generator().manual_seed(1))
    grads = []
    for model in (plain, checkpointed):
        torch.manual_seed(2)  # the same dropout masks: the recomputation must draw them again, not new ones
        model(idx).float().pow(2).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert calls[0] == 2 * 2  # two blocks, each in forward and again in backward
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=0, msg=name)


def test_checkpointing_keeps_names_and_state_dict_and_skips_eval():
    plain, checkpointed = _gpt(), _gpt()
    checkpoint_blocks(checkpointed)
    assert [n for n, _ in checkpointed.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    calls = _forward_calls(checkpointed)
    with torch.no_grad():
        checkpointed(torch.zeros(1, 4, dtype=torch.long))
    assert calls[0] == 2  # nothing kept, nothing recomputed


@pytest.mark.parametrize("overrides, on", [
    ([], False),
    (["activation_checkpointing=true"], True),
    (["activation_checkpointing=true", "parallelism=fsdp"], True),
    (["fsdp.activation_checkpointing=true", "parallelism=fsdp"], True),  # the older key, under FSDP
    (["fsdp.activation_checkpointing=true"], False),  # fsdp.* options count for FSDP only, as before
])
def test_the_top_level_key_and_its_fsdp_alias(overrides, on):
    from training.trainer import parallelism_config

    cfg = load_config(YAML, ["data.path=unused", *overrides])
    assert cfg.checkpoints_activations is on
    if cfg.parallelism == "fsdp":
        assert parallelism_config(cfg)["fsdp"].activation_checkpointing is on


@pytest.mark.slow
def test_ddp_with_activation_checkpointing_gives_the_same_losses(dataset, tmp_path):
    """`composer -n 2`, dropout on: only the memory differs (the recomputation replays each block's dropout)."""
    def run(name: str, *extra: str) -> dict[int, float]:
        proc = run_train(tiny_args(dataset, tmp_path, f"run_name={name}", "model.n_layer=2", "model.n_head=4",
                            "model.n_embd=64", "model.dropout=0.1", "global_train_batch_size=16",
                            "device_train_microbatch_size=4", "max_duration=20ba", "eval_interval=20ba",
                            "save_interval=20ba", *extra), nproc=2)
        assert ("activation checkpointing (each block" in proc.stdout) == bool(extra)  # the start-up summary
        return losses(tmp_path / name)

    plain, checkpointed = run("plain"), run("ac", "activation_checkpointing=true")
    assert sorted(plain) == sorted(checkpointed) == list(range(1, 21))
    worst = max(abs(plain[s] - checkpointed[s]) / plain[s] for s in plain)
    assert worst <= 1e-6, f"activation checkpointing changed the losses ({worst:.2e})"
