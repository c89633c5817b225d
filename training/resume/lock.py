"""One run, one writer: the run lock ``{run_dir}/run.lock``.

A job re-submitted while the first still runs, or requeued by SLURM before the first has died, would otherwise
train into the same run folder beside it: two writers of ``metrics.jsonl`` and of the checkpoints. Before anything
is written into the run folder, global rank 0 takes the lock (:func:`run_lock`); a second process is refused with
one ``error:`` line naming the live run's host and PID, or waits up to ``run_lock_wait`` for it to end.

The lock file is JSON written once, complete, before it gets its name (a hard link: atomic, also on NFS)::

    {"host": "node17", "pid": 4242, "start_time": 1718000000.12, "token": "9f0c...", "lease": 300.0,
     "since": "2024-06-10 08:13:20"}

``start_time`` is the holder's process start (``psutil.Process(pid).create_time()``), ``token`` is unique per
take, ``lease`` the holder's ``run_lock_lease`` in seconds. The holder's heartbeat is the file's mtime: a daemon
thread touches it every ``lease / 10`` seconds. A lock is stale (its run was killed) when

- it was taken on this host (same ``socket.gethostname()``) and no process with that PID and start time lives
  (the start time guards against the PID being reused by another process), or
- it was taken on another host and its mtime is older than its ``lease`` (hosts sharing the run folder over a
  network filesystem cannot see each other's processes; the lease of minutes also absorbs attribute caching and
  modest clock skew between hosts).

A stale lock is taken over with no manual step; the take-over is safe with several contenders (:func:`take_over`).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

import psutil

from core.errors import RunLockedError
from core.files import write_atomic
from training.config import TrainConfig, seconds

LOCK_FILE = "run.lock"
POLL_S = 0.5  # how often a waiting process looks at the lock again
ROUND_S = 60.0  # ranks agree at least this often while rank 0 waits: well inside the process group's timeout


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a run lock: the lock file's content."""

    host: str
    pid: int
    start_time: float
    token: str
    lease: float
    since: str = ""


def lock_path(run_dir: str) -> str:
    return os.path.join(run_dir, LOCK_FILE)


def this_process(lease: float) -> Holder:
    """This process as a holder, with a fresh token (a take is told apart from every other, threads included)."""
    pid = os.getpid()
    return Holder(socket.gethostname(), pid, psutil.Process(pid).create_time(), uuid.uuid4().hex, lease,
                  time.strftime("%Y-%m-%d %H:%M:%S"))


def read_holder(path: str) -> Optional[tuple[Holder, float]]:
    """(the holder, its last heartbeat as a Unix time) or None when there is no lock. A file that is not a lock of
    ours reads as a holder of an unknown host, so that only its age can make it stale."""
    try:
        with open(path, encoding="utf-8") as f:
            heartbeat = os.fstat(f.fileno()).st_mtime
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return Holder(**json.loads(text)), heartbeat
    except (ValueError, TypeError):
        digest = hashlib.sha1(text.encode()).hexdigest()[:16]  # the same token in every contender: one claim name
        return Holder("?", 0, 0.0, f"unreadable-{digest}", 0.0), heartbeat


def process_lives(pid: int, start_time: float) -> bool:
    """Whether the process ``pid`` that started at ``start_time`` still runs on this host (not a reused PID)."""
    try:
        return abs(psutil.Process(pid).create_time() - start_time) < 0.1
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's live process
        return True


def is_stale(holder: Holder, heartbeat: float, lease: float) -> bool:
    """Whether the holder's run has ended: by its process on this host, by its heartbeat's age on another
    (against the holder's own lease, the promise it beats by; ``lease`` when the file does not say)."""
    if holder.host == socket.gethostname():
        return not process_lives(holder.pid, holder.start_time)
    return time.time() - heartbeat > (holder.lease or lease)


class RunLock:
    """A taken lock: its heartbeat thread runs until :meth:`release`."""

    def __init__(self, path: str, holder: Holder, fd: int):
        self.path, self.holder, self.fd = path, holder, fd
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def holds(self) -> bool:
        """Whether the lock file is still ours (not taken over after a heartbeat missed the lease)."""
        found = read_holder(self.path)
        return found is not None and found[0].token == self.holder.token

    def _beat(self) -> None:
        """Touch the file we created (by descriptor: never a file that replaced it) every tenth of the lease."""
        warned = False
        while not self._stop.wait(self.holder.lease / 10):
            with contextlib.suppress(OSError):
                os.utime(self.fd)
            if not warned and not self.holds():
                warned = True
                print(f"warning: the run lock {self.path} was taken over by another process; two processes may now "
                      "write this run: stop one of them", file=sys.stderr, flush=True)

    def release(self) -> None:
        """Stop the heartbeat; remove the lock file only if it still holds our token."""
        self._stop.set()
        self._thread.join()
        if self.holds():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)


def try_create(path: str, lease: float) -> Optional[RunLock]:
    """Create the lock if there is none: the content is written complete under a unique name, then hard-linked to
    ``path``, which fails when ``path`` exists (atomic, as O_CREAT|O_EXCL, and on NFS too). None if it existed."""
    holder = this_process(lease)
    tmp = f"{path}.{holder.token}"
    write_atomic(tmp, json.dumps(asdict(holder)) + "\n")
    fd = os.open(tmp, os.O_RDONLY)  # the heartbeat touches this file by descriptor
    try:
        os.link(tmp, path)
    except FileExistsError:
        os.close(fd)
        return None
    finally:
        os.unlink(tmp)
    return RunLock(path, holder, fd)


def take_over(path: str, stale: Holder, lease: float) -> bool:
    """Remove the stale lock ``stale`` so that a new one can be created; True when this call removed it.

    Contenders never move or remove each other's files. Each claims the stale lock by hard-linking ``path`` to
    ``{path}.claim-{token}-{i}``, which fails if that name exists: one contender per stale lock holds claim ``i``.
    The claim must hold the stale token (``path`` may have changed since it was read: then the claim names another
    file and is just dropped). Only the claimant unlinks ``path``. A claim older than the lease belongs to a
    contender killed mid-claim (a claim lives for microseconds); the next index is claimed then."""
    for i in range(1000):
        claim = f"{path}.claim-{stale.token}-{i}"
        try:
            os.link(path, claim)
        except FileNotFoundError:
            return False  # the stale lock is gone already
        except FileExistsError:
            if _claim_is_live(claim, stale.lease or lease):
                return False
            continue
        try:
            found = read_holder(claim)
            if found is None or found[0].token != stale.token:
                return False  # the lock changed since it was read
            os.unlink(path)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(claim)
    return False


def _claim_is_live(claim: str, lease: float) -> bool:
    try:
        return time.time() - os.stat(claim).st_ctime <= lease  # ctime: when the claim's link was made
    except FileNotFoundError:
        return True  # just dropped by its claimant: look at the lock again


def try_acquire(path: str, lease: float) -> tuple[Optional[RunLock], Optional[tuple[Holder, float]]]:
    """One look: (the lock, None) when there was none or it was stale, else (None, (live holder, heartbeat)).
    Writes nothing while a live holder has the lock (a refused process leaves the run folder as it was)."""
    while True:
        found = read_holder(path)
        if found is None:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            if (lock := try_create(path, lease)) is not None:
                return lock, None
            continue
        holder, heartbeat = found
        if not is_stale(holder, heartbeat, lease):
            return None, found
        if take_over(path, holder, lease):
            print(f"taking over the stale run lock {path} of pid {holder.pid} on host {holder.host} "
                  f"({stale_reason(holder)})", flush=True)
        else:
            time.sleep(POLL_S / 10)  # another contender is taking it over: look again shortly


def acquire(path: str, wait: float, lease: float, started: Optional[float] = None, round_s: float = math.inf,
            announce: bool = True, poll: float = POLL_S) -> Optional[RunLock]:
    """Take the lock at ``path``: at once, after taking over a stale holder, or when a live holder ends within
    ``wait`` seconds of ``started`` (``time.monotonic()``; default now). Raises :class:`RunLockedError` naming the
    live holder after that. Returns None when ``round_s`` seconds pass first (the caller comes back)."""
    started = time.monotonic() if started is None else started
    deadline, round_end = started + wait, time.monotonic() + round_s
    while True:
        lock, live = try_acquire(path, lease)
        if lock is not None:
            return lock
        assert live is not None
        now = time.monotonic()
        if now >= deadline:
            raise RunLockedError(locked_message(path, *live, wait))
        if now >= round_end:
            return None
        if announce:
            announce = False
            print(f"the run lock {path} is held by pid {live[0].pid} on host {live[0].host}; waiting up to "
                  f"{wait:g} s for that run to end (run_lock_wait)", flush=True)
        time.sleep(min(poll, deadline - now, max(0.0, round_end - now)))


def stale_reason(holder: Holder) -> str:
    if holder.host == socket.gethostname():
        return "that process no longer runs"
    return f"no heartbeat within its lease of {holder.lease:g} s"


def locked_message(path: str, holder: Holder, heartbeat: float, wait: float) -> str:
    """The one line for a refused run: who holds the run, and the three ways forward."""
    waited = f" after waiting {wait:g} s" if wait > 0 else ""
    beat = "" if holder.host == socket.gethostname() else f", last heartbeat {time.time() - heartbeat:.0f} s ago"
    return (f"the run folder {os.path.dirname(path)} is in use by pid {holder.pid} on host {holder.host} (since "
            f"{holder.since or '?'}{beat}; lock file {path}){waited}: wait for that run to end, stop it, or set "
            "run_lock_wait=10m (any duration) to wait for it and then continue the run")


@contextlib.contextmanager
def run_lock(cfg: TrainConfig) -> Iterator[Optional[RunLock]]:
    """Hold the run folder's lock for the block (rank 0 takes it; the lock is released on any exit). Every rank
    learns the outcome from rank 0, so on a refusal each raises the same RunLockedError and none waits in a
    collective. While rank 0 waits, the ranks meet every ``ROUND_S`` seconds (a wait of many minutes would
    otherwise outlast the process group's timeout)."""
    from composer.utils import dist

    path, lease = lock_path(cfg.run_dir), seconds(cfg.run_lock_lease, "run_lock_lease")
    wait, started = seconds(cfg.run_lock_wait, "run_lock_wait"), time.monotonic()
    lock: Optional[RunLock] = None
    for round_ in itertools.count():
        outcome: list[Optional[str]] = [None]  # None: taken; "": rank 0 still waits; else the error
        if dist.get_global_rank() == 0:
            try:
                lock = acquire(path, wait, lease, started, round_s=ROUND_S, announce=round_ == 0)
                outcome = [None if lock is not None else ""]
            except RunLockedError as e:
                outcome = [str(e)]
            except OSError as e:  # an unwritable runs_root: every rank must hear it, not wait in the broadcast
                outcome = [f"cannot take the run lock {path} ({e}): make runs_root writable or choose another"]
        dist.broadcast_object_list(outcome)
        if outcome[0]:
            raise RunLockedError(outcome[0])
        if outcome[0] is None:
            break
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
