"""Exact resume after real SIGKILLs of real runs (1 process and `composer -n 2`), across epochs and world sizes.

Each test trains an uninterrupted reference run A and a run B that is killed and re-run with the same command,
then compares per-step losses (==) and final weights (torch.equal). Dropout is on (0.1) so that the RNG state
must be restored too.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from evaluation.checkpoints import readable
from tests.helpers import (
    PrivateShm,
    assert_same_run,
    kill_when,
    last_step,
    losses,
    make_dataset,
    run_train,
    sample_ids,
    start_train,
    tiny_args,
)

pytestmark = pytest.mark.slow  # every test here trains (and kills) real runs


def resume_args(ds: Path, runs: Path, name: str, *extra: str) -> list[str]:
    """A model big enough that a step takes tens of ms, so a kill lands between two checkpoints."""
    return tiny_args(ds, runs, f"run_name={name}", "model.n_layer=2", "model.n_head=4", "model.n_embd=128",
                     "model.dropout=0.1", "global_train_batch_size=32", "device_train_microbatch_size=16",
                     "max_duration=40ba", "save_interval=10ba", "eval_interval=20ba", "save_num_checkpoints_to_keep=3",
                     "eval_subset_num_batches=20", "log_sample_ids=true", *extra)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("ref")
    run_train(resume_args(dataset, runs, "a"))
    return runs / "a"


def _kill_and_rerun(args: list[str], run_dir: Path, ready, nproc: int = 0, rerun_nproc: int | None = None) -> str:
    log = run_dir.parent / f"{run_dir.name}.first.log"
    kill_when(start_train(args, log, nproc=nproc), ready)
    proc = run_train(args, nproc=nproc if rerun_nproc is None else rerun_nproc, timeout=300)
    return proc.stdout + proc.stderr


def test_sigkill_between_checkpoints_resumes_bit_identically(dataset, reference, tmp_path):
    run = tmp_path / "b"
    args = resume_args(dataset, tmp_path, "b")
    _kill_and_rerun(args, run, lambda: last_step(run) >= 15)
    assert_same_run(reference, run)


def test_sigkill_during_checkpoint_save(dataset, reference, tmp_path):
    run = tmp_path / "b"
    target = run / "checkpoints" / "ep0-ba20-rank0.pt"
    args = resume_args(dataset, tmp_path, "b")
    marker = tmp_path / "writing-ep0-ba20"  # the run parks half-way through writing ep0-ba20 (helpers.start_train)
    kill_when(start_train(args, tmp_path / "first.log", pause=(f"checkpoint:{target.name}", marker)), marker.exists)
    assert readable(target) is not None, "the kill should land while ep0-ba20 is being written"
    assert (run / "checkpoints" / "latest-rank0.pt").resolve().name == "ep0-ba10-rank0.pt"
    out = run_train(args).stdout
    assert "ep0-ba20-rank0.pt is unreadable" in out  # moved aside, then saved again at step 20
    assert_same_run(reference, run)


def test_sigkill_during_eval(dataset, reference, tmp_path):
    run = tmp_path / "b"
    first_log = tmp_path / "first.log"
    args = resume_args(dataset, tmp_path, "b")
    marker = tmp_path / "in-eval"  # the run parks in the 2nd batch of its first eval (step 20; helpers.start_train)
    kill_when(start_train(args, first_log, pause=("eval:2", marker)), marker.exists)
    assert "Eval metrics/val" not in first_log.read_text(), "the kill should land inside the eval"
    run_train(args)
    assert_same_run(reference, run)


def test_truncated_latest_checkpoint_falls_back_and_says_so(dataset, reference, tmp_path):
    run = tmp_path / "a"  # the finished reference run, copied: its last checkpoint then gets truncated
    shutil.copytree(reference, run, symlinks=True)
    args = resume_args(dataset, tmp_path, "a")
    latest = run / "checkpoints" / "latest-rank0.pt"
    path = latest.resolve()
    assert path.name == "ep0-ba40-rank0.pt"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    out = run_train(args).stdout  # the run is not finished any more: steps 31-40 are redone from ep0-ba30
    assert f"checkpoint {path} is unreadable" in out and "resuming from" in out and "ep0-ba30-rank0.pt" in out
    assert_same_run(reference, run)


def test_two_ranks_sigkill_resumes_bit_identically(dataset, tmp_path):
    ref = tmp_path / "ref"
    run_train(resume_args(dataset, ref, "a2"), nproc=2)
    run = tmp_path / "b2"
    args = resume_args(dataset, tmp_path, "b2")
    with PrivateShm(tmp_path / "tmpdir") as shm:  # both runs in one /dev/shm that only they use
        kill_when(start_train(args, tmp_path / "first.log", nproc=2, shm=shm), lambda: last_step(run) >= 15)
        assert any(shm.path.glob("0*_locals")) or any(shm.path.glob("0*_barrier")), \
            "a SIGKILLed Streaming run leaves shared memory behind"
        run_train(args, nproc=2, timeout=180, shm=shm)  # and the next start neither needs a manual step nor hangs
    assert_same_run(ref / "a2", run)


@pytest.fixture(scope="module")
def no_dropout_reference(dataset, tmp_path_factory) -> Path:
    """One process, dropout off: the samples and losses any world size must reproduce."""
    runs = tmp_path_factory.mktemp("ref_nodrop")
    run_train(resume_args(dataset, runs, "a", "model.dropout=0"))
    return runs / "a"


def test_elastic_resume_sees_the_same_samples(dataset, no_dropout_reference, tmp_path):
    """Started with `composer -n 2`, killed, resumed with one process, killed again, finished with `-n 2`: each
    world size resumes the other's checkpoint at the same global batch.

    Dropout is off here: each rank draws its own dropout masks, so only without it can the losses be compared.
    """
    ref = no_dropout_reference
    run = tmp_path / "b"
    args = resume_args(dataset, tmp_path, "b", "model.dropout=0")
    kill_when(start_train(args, tmp_path / "first.log", nproc=2), lambda: last_step(run) >= 15)
    assert (run / "checkpoints" / "latest-rank0.pt").resolve().name == "ep0-ba10-rank0.pt"
    kill_when(start_train(args, tmp_path / "second.log", nproc=0), lambda: last_step(run) >= 25)
    assert (run / "checkpoints" / "latest-rank0.pt").resolve().name == "ep0-ba20-rank0.pt"  # saved by 1 process
    run_train(args, nproc=2)
    ids_ref, ids = sample_ids(ref), sample_ids(run)
    assert sorted(ids) == list(range(1, 41))
    assert all(sorted(ids[s]) == sorted(ids_ref[s]) for s in ids), "a step saw different samples"
    la, lb = losses(ref), losses(run)
    worst = max(abs(la[s] - lb[s]) / la[s] for s in la)
    assert worst <= 1e-4, f"the resumed run left the loss curve (worst relative difference {worst:.2e})"


def test_resume_across_epochs_including_an_epoch_end_checkpoint(tmp_path, shakespeare_text):
    ds = make_dataset(tmp_path / "small", shakespeare_text[:20_000], seq_len=32)
    args = lambda name: resume_args(ds, tmp_path, name, "max_duration=3ep", "save_interval=1ep",  # noqa: E731
                                    "eval_interval=1ep", "eval_subset_num_batches=2")
    run_train(args("a"))
    ends = sorted(int(p.name.split("-ba")[1].split("-")[0]) for p in (tmp_path / "a" / "checkpoints").glob("ep*"))
    epoch_len = ends[0]
    assert ends == [epoch_len, 2 * epoch_len, 3 * epoch_len]
    run = tmp_path / "b"
    kill_when(start_train(args("b"), tmp_path / "first.log"), lambda: last_step(run) >= epoch_len + 5)
    run_train(args("b"))  # resumes from the checkpoint taken exactly at the end of epoch 0
    assert_same_run(tmp_path / "a", run)
    # the same with a batch checkpoint on the epoch's last batch (taken before Composer's epoch end)
    run_c = tmp_path / "c"
    args_c = [*args("c"), f"save_interval={epoch_len}ba"]
    kill_when(start_train(args_c, tmp_path / "c.log"), lambda: last_step(run_c) >= epoch_len + 5)
    run_train(args_c)
    assert_same_run(tmp_path / "a", run_c)
    ids = sample_ids(run)
    epoch0 = {i for s in range(1, epoch_len + 1) for i in ids[s]}
    epoch1 = {i for s in range(epoch_len + 1, 2 * epoch_len + 1) for i in ids[s]}
    assert len(epoch0) == len(epoch1) == epoch_len * 32  # no sample twice within an epoch
    assert [ids[s] for s in range(1, 4)] != [ids[epoch_len + s] for s in range(1, 4)]


def test_progress_bar_starts_at_the_resumed_step(dataset, tmp_path):
    run = tmp_path / "pb"
    args = tiny_args(dataset, tmp_path, "run_name=pb", "max_duration=200ba", "save_interval=10ba",
                     "eval_interval=1000ba", "progress_bar=true")
    kill_when(start_train(args, tmp_path / "first.log"), lambda: last_step(run) >= 25)
    resumed_from = int((run / "checkpoints" / "latest-rank0.pt").resolve().name.split("-ba")[1].split("-")[0])
    proc = run_train(args)
    bars = [int(n) for n in re.findall(r"train +\d+%\|[^\n]*?\| (\d+)/200 \[", proc.stderr)]
    shown = [n for n in bars if n]  # (tqdm draws an empty bar once before Composer moves it to the timestamp)
    assert shown and shown[0] == resumed_from >= 20 and shown[-1] == 200, bars[:5]
