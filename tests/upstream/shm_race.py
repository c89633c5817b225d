"""K processes open a StreamingDataset over one local folder at the same instant (tests/upstream/test_workarounds.py).

    python tests/upstream/shm_race.py K LOCAL upstream|ours     -> prints how many of the K failed with FileExistsError

Streaming picks a free shared-memory prefix (its "look", one per name in SHM_TO_CLEAN) and then creates it. Each
child, after its last look, waits
until every other child has looked too, or is provably blocked on the registry lock of ``registering_shared_memory``
(its lock attempt failed while another held it): without the lock all K look before any creates, so the race is
certain instead of likely; with it they take turns. Each child keeps its dataset alive until every child is done,
so that a later look still sees the earlier prefixes taken. The order comes from marker files, not from sleeps.
Run it in a private /dev/shm and TMPDIR, so that nothing else on the machine registers prefixes meanwhile.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 120  # seconds: a hang guard only


def _wait_for(ready, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"shm_race: timed out waiting for {what}")
        time.sleep(0.001)


def child(local: str, tmp: Path, i: int, k: int, mode: str) -> None:
    sys.path.insert(0, str(REPO))
    import filelock
    import streaming.base.shared.prefix as prefix
    from streaming import StreamingDataset
    from streaming.base.constant import SHM_TO_CLEAN

    from upstream.streaming import REGISTRY_LOCK, registering_shared_memory

    others = [j for j in range(k) if j != i]
    look = prefix._check_and_find_retrying
    looks = []  # get_shm_prefix looks once per name in SHM_TO_CLEAN, then creates the prefix it found

    def look_then_wait(*args, **kwargs):
        found = look(*args, **kwargs)
        looks.append(found)
        if len(looks) == len(SHM_TO_CLEAN):  # its last look: hold it until every other job has looked too
            (tmp / f"looked{i}").touch()
            _wait_for(lambda: all((tmp / f"looked{j}").exists() or (tmp / f"blocked{j}").exists() for j in others),
                      "the other jobs to look (or wait on the registry lock)")
        return found

    prefix._check_and_find_retrying = look_then_wait

    acquire = filelock.FileLock.acquire

    def acquire_or_say_blocked(self, *args, **kwargs):
        if self.lock_file != str(REGISTRY_LOCK):
            return acquire(self, *args, **kwargs)
        try:
            return acquire(self, timeout=0)
        except filelock.Timeout:
            (tmp / f"blocked{i}").touch()  # another job holds the lock: this one waits its turn
            return acquire(self, *args, **kwargs)

    filelock.FileLock.acquire = acquire_or_say_blocked

    guard = registering_shared_memory if mode == "ours" else contextlib.nullcontext
    (tmp / f"ready{i}").touch()
    _wait_for((tmp / "go").exists, "the go signal")
    try:
        with guard():
            dataset = StreamingDataset(local=local, batch_size=1)
    finally:
        (tmp / f"done{i}").touch()  # created its prefix, or died trying
    _wait_for(lambda: all((tmp / f"done{j}").exists() for j in others), "the other jobs to finish")
    del dataset


def parent(k: int, local: str, mode: str) -> int:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        procs = [subprocess.Popen([sys.executable, __file__, "child", local, name, str(i), str(k), mode],
                                  stderr=subprocess.PIPE, text=True) for i in range(k)]
        _wait_for(lambda: all((tmp / f"ready{i}").exists() or procs[i].poll() is not None for i in range(k)),
                  "the jobs to start")
        (tmp / "go").touch()
        errors = [p.communicate(timeout=DEADLINE)[1] for p in procs]
    failed = [e for p, e in zip(procs, errors) if p.returncode]
    if any("FileExistsError" not in e for e in failed):
        raise SystemExit("unexpected failure:\n" + "\n".join(failed))
    return len(failed)


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        print(parent(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
