"""Guard rails around resuming: changed configs, bad load paths, and shared memory left by dead runs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import (
    PrivateShm,
    make_dataset,
    metrics_rows,
    one_error,
    run_train,
    script_cmd,
    start_train,
    tiny_args,
    train_env,
    wait_until,
    workdir,
)

pytestmark = pytest.mark.slow  # every test here starts real training runs


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, list[str]]:
    runs = tmp_path_factory.mktemp("runs")
    args = tiny_args(dataset, runs, "run_name=g", "max_duration=6ba", "save_interval=6ba", "eval_interval=6ba")
    run_train(args)
    return runs, args


@pytest.mark.parametrize("change,key", [
    ("global_train_batch_size=16", "global_train_batch_size: checkpoint 8 -> now 16"),
    ("model.n_embd=64", "model.n_embd: checkpoint 32 -> now 64"),
    ("data.shuffle_seed=5", "data.shuffle_seed: checkpoint 17 -> now 5"),
])
def test_changed_config_is_refused_with_the_keys(trained, change, key):
    _, args = trained
    one_error(run_train([*args, "max_duration=8ba", change], check=False), key, "load_path")


def test_changed_dataset_is_refused(trained, tmp_path, shakespeare_text):
    runs, args = trained
    other = make_dataset(tmp_path, shakespeare_text[200_000:260_000], seq_len=32)
    one_error(run_train([*args, "max_duration=8ba", f"data.path={other}"], check=False), "data: checkpoint {'content'")


def test_longer_max_duration_is_allowed(trained, tmp_path):
    runs, args = trained
    copy = tmp_path / "g"
    shutil.copytree(runs / "g", copy, symlinks=True)
    run_train([*args, f"runs_root={tmp_path}", "max_duration=8ba"])
    assert [r["step"] for r in metrics_rows(copy)] == list(range(1, 9))


def test_missing_load_path_is_a_clear_error(dataset, tmp_path):
    proc = run_train(tiny_args(dataset, tmp_path, "load_path=/nope/ep0-ba5-rank0.pt"), check=False)
    one_error(proc, "load_path /nope/ep0-ba5-rank0.pt does not exist")


def test_load_path_starts_a_new_run_from_a_checkpoint(trained, tmp_path):
    runs, args = trained
    ckpt = runs / "g" / "checkpoints" / "ep0-ba6-rank0.pt"
    run_train(tiny_args(Path(args[1].split("=", 1)[1]), tmp_path, "run_name=fork", f"load_path={ckpt}",
                        "max_duration=9ba", "save_interval=9ba", "eval_interval=9ba"))
    rows = metrics_rows(tmp_path / "fork")
    assert [r["step"] for r in rows] == [7, 8, 9]  # weights, optimizer and position came from the checkpoint


def test_clean_shared_memory_spares_a_live_run(dataset, tmp_path):
    """The run is parked in its first eval (alive, its loaders' shared memory registered) while the cleaner runs."""
    marker = tmp_path / "parked"
    with PrivateShm(tmp_path / "tmpdir") as shm:  # the run and the cleaner share a /dev/shm nothing else uses
        proc = start_train(tiny_args(dataset, tmp_path, "run_name=live", "max_duration=50ba", "eval_interval=5ba"),
                           tmp_path / "live.log", shm=shm, pause=("eval:1", marker))
        try:
            wait_until(marker.exists, "the run reaches its first eval", timeout=120, proc=proc)
            segments = sorted(p.name for p in shm.path.glob("0*_*"))
            assert segments, "a live Streaming run holds shared memory"
            out = subprocess.run(shm.cmd(script_cmd("clean_shared_memory.py"), workdir()), env=shm.env(train_env()),
                                 cwd=workdir(), capture_output=True, text=True, check=True, timeout=120).stdout
            assert proc.poll() is None
            for name in segments:
                assert name not in out and (shm.path / name).exists()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
