"""K processes open a StreamingDataset over one local folder at the same instant (tests/test_workarounds.py).

    python tests/shm_race.py K LOCAL upstream|ours     -> prints how many of the K failed with FileExistsError

Each child pauses 0.5 s between Streaming's look for a free prefix and its creation of it, as a loaded machine may:
that makes the race certain instead of likely, without changing what either step does. Run it in a private
/dev/shm and TMPDIR, so that nothing else on the machine registers prefixes meanwhile.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child(local: str, ready: Path, go: Path, mode: str) -> None:
    sys.path.insert(0, str(REPO))
    import streaming.base.shared.prefix as prefix
    from streaming import StreamingDataset

    from upstream.streaming import registering_shared_memory

    look = prefix._check_and_find_retrying

    def slow_look(*args, **kwargs):
        found = look(*args, **kwargs)
        time.sleep(0.5)
        return found

    prefix._check_and_find_retrying = slow_look

    guard = registering_shared_memory if mode == "ours" else contextlib.nullcontext
    ready.touch()
    while not go.exists():
        time.sleep(0.0005)
    with guard():
        dataset = StreamingDataset(local=local, batch_size=1)
    time.sleep(0.2)  # still registered when the next one looks
    del dataset


def parent(k: int, local: str, mode: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        procs = [subprocess.Popen([sys.executable, __file__, "child", local, f"{tmp}/ready{i}", str(go), mode],
                                  stderr=subprocess.PIPE, text=True) for i in range(k)]
        while not all(Path(f"{tmp}/ready{i}").exists() for i in range(k)):
            time.sleep(0.01)
        go.touch()
        errors = [p.communicate()[1] for p in procs]
    failed = [e for p, e in zip(procs, errors) if p.returncode]
    if any("FileExistsError" not in e for e in failed):
        raise SystemExit("unexpected failure:\n" + "\n".join(failed))
    return len(failed)


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
    else:
        print(parent(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
