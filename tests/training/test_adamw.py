"""`optimizer.name=adamw` (torch.optim.AdamW) against `decoupled_adamw` (Composer's DecoupledAdamW) on real runs:
the same losses over 50 steps, exact resume after a SIGKILL, and a resume with the other optimizer refused.

Dropout is on (0.1), as in test_resume.py, so that the resume must restore the RNG state too.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import (
    assert_same_run,
    kill_when,
    last_step,
    losses,
    metrics_rows,
    one_error,
    run_train,
    start_train,
    tiny_args,
)

pytestmark = pytest.mark.slow  # every test here trains real runs

STEPS = 50


def adamw_args(ds: Path, runs: Path, name: str, optimizer: str, *extra: str) -> list[str]:
    """A model big enough that a step takes tens of ms (a kill lands between two checkpoints), small enough that
    50 steps take seconds; weight decay on, so that both decay paths are exercised."""
    return tiny_args(ds, runs, f"run_name={name}", f"optimizer.name={optimizer}", "model.n_layer=2",
                     "model.n_head=4", "model.n_embd=64", "model.dropout=0.1", "global_train_batch_size=16",
                     "device_train_microbatch_size=8", f"max_duration={STEPS}ba", "save_interval=10ba",
                     "eval_interval=25ba", "optimizer.weight_decay=0.1", "optimizer.lr=2e-3", *extra)


@pytest.fixture(scope="module")
def adamw_run(dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("adamw")
    run_train(adamw_args(dataset, runs, "a", "adamw"))
    return runs / "a"


def test_adamw_gives_decoupled_adamws_losses(dataset, adamw_run, tmp_path):
    """The same update in two implementations: only float rounding differs (foreach vs a per-parameter loop, and
    lr_t * wd computed in two ways)."""
    run_train(adamw_args(dataset, tmp_path, "d", "decoupled_adamw"))
    ours, composers = losses(adamw_run), losses(tmp_path / "d")
    assert sorted(ours) == sorted(composers) == list(range(1, STEPS + 1))
    worst = max(abs(ours[s] - composers[s]) / composers[s] for s in ours)
    assert worst <= 1e-5, f"adamw left decoupled_adamw's loss curve (worst relative difference {worst:.2e})"
    assert ours[STEPS] < ours[1] - 0.5  # and it trains
    # LRMonitor names the lr by the optimizer's class; nothing of ours reads these keys but the tests
    assert "lr-AdamW/group0" in metrics_rows(adamw_run)[0]
    assert "lr-DecoupledAdamW/group0" in metrics_rows(tmp_path / "d")[0]


def test_adamw_resumes_bit_identically_after_sigkill(dataset, adamw_run, tmp_path):
    run = tmp_path / "a"
    args = adamw_args(dataset, tmp_path, "a", "adamw")
    kill_when(start_train(args, tmp_path / "first.log"), lambda: last_step(run) >= 15)
    assert (run / "checkpoints" / "latest-rank0.pt").resolve().name == "ep0-ba10-rank0.pt"
    run_train(args)
    assert_same_run(adamw_run, run)


def test_resuming_with_the_other_optimizer_is_refused(dataset, adamw_run, tmp_path):
    """Composer files the optimizer state under its class name: the other optimizer would start from empty moments,
    so the run could not replay its checkpoint."""
    shutil.copytree(adamw_run, tmp_path / "a", symlinks=True)  # the refused start still writes its config.yaml
    args = adamw_args(dataset, tmp_path, "a", "decoupled_adamw", f"max_duration={STEPS + 10}ba")
    one_error(run_train(args, check=False), "optimizer.name: checkpoint 'adamw' -> now 'decoupled_adamw'",
              "load_path")


def test_a_checkpoint_from_before_the_key_was_decoupled_adamw():
    """Checkpoints written before optimizer.name existed have no such key in their fingerprint: they were all
    DecoupledAdamW's, so resuming one with adamw is refused and with decoupled_adamw is not."""
    from core.errors import ResumeMismatchError
    from training.resume.guard import SCHEDULE_KEYS, check_fingerprint

    old = {"global_train_batch_size": 16, "optimizer": {"lr": 1e-3}}
    now = {**old, "optimizer.name": "decoupled_adamw"}
    check_fingerprint(old, now, strict=True, soft=SCHEDULE_KEYS)
    with pytest.raises(ResumeMismatchError, match=r"optimizer.name: checkpoint 'decoupled_adamw' -> now 'adamw'"):
        check_fingerprint(old, {**now, "optimizer.name": "adamw"}, strict=True, soft=SCHEDULE_KEYS)
