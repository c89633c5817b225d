"""One run, one writer (training/resume/lock.py): a second process on a live run's folder is refused with one line
naming the live run's host and PID and writes nothing; a killed run's lock is taken over by re-running the same
command; a lock from another host counts by its heartbeat; ``run_lock_wait`` waits for the live run to end; several
contenders for a stale lock leave exactly one winner. Real processes, real files, nothing mocked.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from core.errors import ConfigError, RunLockedError
from tests.helpers import (
    TINY_YAML,
    free_port,
    kill_when,
    last_step,
    make_dataset,
    one_error,
    run_train,
    start_train,
    tiny_args,
    train_cmd,
    train_env,
    wait_until,
    workdir,
)
from training.config import load_config, seconds
from training.resume.lock import LOCK_FILE, acquire, lock_path, read_holder

LEASE = 300.0
ELSEWHERE = "node-elsewhere"  # a host name that is not this machine's


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shakespeare_text) -> Path:
    return make_dataset(tmp_path_factory.mktemp("lock_ds"), shakespeare_text[:40_000], seq_len=32)


def lock_args(ds: Path, runs: Path, *extra: str) -> list[str]:
    """Four steps; the first eval (step 3) comes after the checkpoint of step 2, so a run parked there resumes."""
    return tiny_args(ds, runs, "run_name=r", "max_duration=4ba", "save_interval=2ba", "eval_interval=3ba",
                     "eval_subset_num_batches=2", *extra)


def write_lock(path: Path, host: str, pid: int, start_time: float = 0.0, age: float = 0.0) -> None:
    """A lock file in the documented format (training/resume/lock.py), its heartbeat (mtime) ``age`` s old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"host": host, "pid": pid, "start_time": start_time, "token": f"t{pid}-{time.time()}", "lease": LEASE,
              "since": "2024-06-10 08:13:20"}
    path.write_text(json.dumps(holder) + "\n")
    beat = time.time() - age
    os.utime(path, (beat, beat))


def rank_env(rank: int, port: int) -> dict[str, str]:
    """The environment Composer's launcher gives rank ``rank`` of two single-rank nodes (started here directly, so
    that each rank's own stderr and exit code can be read)."""
    return {**train_env(), "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
            "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def folder_state(folder: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``folder``: what a refused run must leave as it found it."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def start_parked(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A first run, live and holding the lock: parked in its first eval batch until killed (helpers.start_train)."""
    marker = tmp_path / "in-eval"
    proc = start_train(args, tmp_path / "first.log", pause=("eval:1", marker))
    wait_until(marker.exists, "the first run reaches its first eval", timeout=180, proc=proc)
    return proc, marker


# ------------------------------------------------------------------------------------------------ whole script runs


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_first_lives_and_takes_over_once_it_is_killed(dataset, tmp_path):
    args, run = lock_args(dataset, tmp_path), tmp_path / "r"
    first, marker = start_parked(args, tmp_path)
    before = folder_state(run)
    second = run_train(args, check=False)
    one_error(second, f"the run folder {run} is in use by pid {first.pid} on host {socket.gethostname()}",
              "wait for that run to end, stop it, or set run_lock_wait=")
    assert folder_state(run) == before, "the refused run wrote into the run folder"
    kill_when(first, marker.exists)  # SIGKILL: the lock file stays, naming a process that is gone
    assert read_holder(str(run / LOCK_FILE))[0].pid == first.pid
    out = run_train(args).stdout  # the same command again
    assert f"taking over the stale run lock {run / LOCK_FILE} of pid {first.pid} on host {socket.gethostname()} " \
           "(that process no longer runs)" in out
    assert last_step(run) == 4
    assert not (run / LOCK_FILE).exists(), "a finished run releases its lock"


@pytest.mark.slow
def test_a_lock_from_another_host_counts_by_its_heartbeat_and_every_rank_hears_it(dataset, tmp_path):
    """Fresh heartbeat: refused, here by two ranks on two "nodes" (127.0.0.1), where global rank 0 alone reads the
    lock and both ranks exit with its one line (none waits in a collective). Heartbeat older than the lease: the same
    command takes over."""
    args, run = lock_args(dataset, tmp_path), tmp_path / "r"
    lock = run / LOCK_FILE
    write_lock(lock, ELSEWHERE, 4242, age=10)
    port = free_port()
    ranks = [subprocess.Popen(train_cmd(args), cwd=workdir(), env=rank_env(rank, port), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [rank.communicate(timeout=180)[1] for rank in ranks]
    lines = [one_error(rank, f"in use by pid 4242 on host {ELSEWHERE}", "last heartbeat", "run_lock_wait=",
                       stderr=err) for rank, err in zip(ranks, outs)]
    assert lines[0] == lines[1] and re.search(r"last heartbeat \d+ s ago", lines[0]), lines
    assert sorted(os.listdir(run)) == [LOCK_FILE]
    write_lock(lock, ELSEWHERE, 4242, age=LEASE + 60)  # that host stopped beating a lease ago: its run was killed
    out = run_train(args).stdout
    assert f"of pid 4242 on host {ELSEWHERE} (no heartbeat within its lease of {LEASE:g} s)" in out
    assert last_step(run) == 4 and not lock.exists()


@pytest.mark.slow
def test_run_lock_wait_waits_for_the_live_holder_to_end_then_proceeds(dataset, tmp_path):
    """The holder is a live process of this host (a ``sleep``: the lock names it in the documented format)."""
    args, run = lock_args(dataset, tmp_path), tmp_path / "r"
    holder = subprocess.Popen(["sleep", "600"])
    write_lock(run / LOCK_FILE, socket.gethostname(), holder.pid, psutil.Process(holder.pid).create_time())
    log = tmp_path / "waiting.log"
    waiting = start_train([*args, "run_lock_wait=2m"], log)
    wait_until(lambda: f"held by pid {holder.pid}" in log.read_text(), "the run waits", proc=waiting)
    assert "waiting up to 120 s for that run to end (run_lock_wait)" in log.read_text()
    assert sorted(os.listdir(run)) == [LOCK_FILE], "a waiting run writes nothing"
    holder.kill()  # the live run ends
    holder.wait()
    assert waiting.wait(timeout=180) == 0, log.read_text()[-3000:]
    assert f"taking over the stale run lock {run / LOCK_FILE} of pid {holder.pid}" in log.read_text()
    assert last_step(run) == 4 and not (run / LOCK_FILE).exists()


# ---------------------------------------------------------------------------------------------------- in-process


def _contend(path: str, barrier, results, done) -> None:
    """One contender (a forked process): take the lock at once or be refused; a winner holds until ``done``."""
    barrier.wait()
    try:
        lock = acquire(path, wait=0, lease=LEASE)
    except RunLockedError as e:
        results.put(("refused", str(e)))
        return
    results.put(("won", os.getpid()))
    done.wait(60)
    lock.release()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _old_garbage(path: Path) -> None:
    path.write_text("not a lock\n")
    beat = time.time() - LEASE - 60
    os.utime(path, (beat, beat))


STALE = {  # the ways a lock goes stale, each written as a killed run would have left it
    "dead process": lambda path: write_lock(path, socket.gethostname(), _dead_pid(), time.time()),
    "pid reused": lambda path: write_lock(path, socket.gethostname(), os.getpid(),
                                          psutil.Process().create_time() - 3600),  # a live pid, another start
    "old heartbeat": lambda path: write_lock(path, ELSEWHERE, 4242, age=LEASE + 60),
    "unreadable and old": _old_garbage,
}


@pytest.mark.parametrize("kind", STALE)
def test_several_contenders_for_a_stale_lock_leave_exactly_one_winner(tmp_path, kind):
    path = tmp_path / LOCK_FILE
    STALE[kind](path)
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, results, done = ctx.Barrier(n), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_contend, args=(str(path), barrier, results, done)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in range(n)]
    winners = [who for kind_, who in outcomes if kind_ == "won"]
    assert len(winners) == 1, outcomes
    refusals = [msg for kind_, msg in outcomes if kind_ == "refused"]
    assert all(f"in use by pid {winners[0]} on host {socket.gethostname()}" in msg for msg in refusals), refusals
    assert sorted(os.listdir(tmp_path)) == [LOCK_FILE], "no claim or temporary file is left behind"
    done.set()
    for p in procs:
        p.join(timeout=60)
    assert os.listdir(tmp_path) == [], "the winner released its lock"


def test_a_live_lock_from_another_host_is_refused_in_process(tmp_path):
    write_lock(tmp_path / LOCK_FILE, ELSEWHERE, 4242, age=5)
    with pytest.raises(RunLockedError, match=rf"in use by pid 4242 on host {ELSEWHERE} \(since 2024-06-10 08:13:20, "
                                             r"last heartbeat 5 s ago; lock file"):
        acquire(lock_path(str(tmp_path)), wait=0, lease=LEASE)


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    path = lock_path(str(tmp_path))
    lock = acquire(path, wait=0, lease=LEASE)
    os.unlink(path)
    write_lock(Path(path), ELSEWHERE, 4242)  # as after a take-over by another host
    lock.release()
    assert read_holder(path)[0].host == ELSEWHERE


@pytest.mark.parametrize("override, message", [
    ("run_lock_wait=soon", r"run_lock_wait='soon' is not a duration; use seconds \(600\) or a number with s, m or h"),
    ("run_lock_wait=-5", r"run_lock_wait='-5' is not a duration"),
    ("run_lock_lease=0", r"run_lock_lease='0' must be longer than 0"),
    ("run_lock_lease=5 min", r"run_lock_lease='5 min' is not a duration"),
])
def test_a_bad_run_lock_duration_is_one_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(str(TINY_YAML), ["data.path=/data/one", override])


def test_run_lock_durations_take_seconds_or_a_unit():
    cfg = load_config(str(TINY_YAML), ["data.path=/data/one", "run_lock_wait=10m", "run_lock_lease=90"])
    assert (seconds(cfg.run_lock_wait, "run_lock_wait"), seconds(cfg.run_lock_lease, "run_lock_lease")) == (600, 90)
    assert seconds(load_config(str(TINY_YAML), ["data.path=/data/one"]).run_lock_wait, "run_lock_wait") == 0
