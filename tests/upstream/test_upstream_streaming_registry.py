"""upstream/streaming.py ``registering_shared_memory``: the machine-wide registry lock is held around the look for
a free shared-memory prefix and its creation, never across a collective. Upstream waits in a torch.distributed
barrier between the two, so a lock around its whole call would be held across that barrier."""
from __future__ import annotations

import pytest
import torch.distributed as torch_dist
from filelock import FileLock, Timeout

from tests.helpers import free_port
from upstream.streaming import REGISTRY_LOCK, registering_shared_memory, registry_lock


def _lock_held() -> bool:
    """Whether someone holds the registry lock (a second flock on its own file description fails if so)."""
    try:
        FileLock(str(REGISTRY_LOCK), timeout=0).acquire()
    except Timeout:
        return True
    FileLock(str(REGISTRY_LOCK)).release()
    return False


@pytest.fixture
def one_rank_group():
    """A real 1-rank gloo process group, so that Streaming's collectives run."""
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    torch_dist.destroy_process_group()


@pytest.fixture
def events(monkeypatch):
    """Records, in order: each look for a free prefix, the creation of the prefix, and each collective with
    whether the registry lock was held during it."""
    import streaming.base.shared.prefix as prefix

    seen: list[tuple[str, bool]] = []
    look = prefix._check_and_find_retrying

    def recorded_look(*args, **kwargs):
        seen.append(("look", _lock_held()))
        return look(*args, **kwargs)

    def recorded(name, collective):
        def call(*args, **kwargs):
            seen.append((name, _lock_held()))
            return collective(*args, **kwargs)
        return call

    monkeypatch.setattr(prefix, "_check_and_find_retrying", recorded_look)
    monkeypatch.setattr(torch_dist, "barrier", recorded("barrier", torch_dist.barrier))
    monkeypatch.setattr(torch_dist, "all_gather_object", recorded("all_gather", torch_dist.all_gather_object))
    return seen


def _build(local: str, guard) -> None:
    from streaming import StreamingDataset

    with guard():
        dataset = StreamingDataset(local=local, split="train", batch_size=1)
    del dataset


@pytest.fixture
def upstream_picker(monkeypatch):
    """Streaming's own prefix picker (conftest puts ours in place for every in-process dataset)."""
    import streaming.base.dataset as dataset_module
    import streaming.base.shared.prefix as prefix

    monkeypatch.setattr(dataset_module, "get_shm_prefix", prefix.get_shm_prefix)


def test_upstream_waits_in_a_barrier_between_the_look_and_the_create(dataset, one_rank_group, events,
                                                                     upstream_picker):
    _build(str(dataset), registry_lock)  # a lock around the whole upstream call, as ours was
    first_barrier = next(i for i, (name, _) in enumerate(events) if name == "barrier")
    assert any(name == "look" for name, _ in events[:first_barrier])
    assert events[first_barrier][1], "upstream no longer waits in a barrier inside get_shm_prefix: simplify"


def test_ours_holds_the_lock_around_the_look_and_no_collective(dataset, one_rank_group, events):
    _build(str(dataset), registering_shared_memory)
    looks = [held for name, held in events if name == "look"]
    collectives = [(name, held) for name, held in events if name != "look"]
    assert looks and all(looks), "the look for a free prefix runs under the registry lock"
    assert ("all_gather", False) in collectives and not any(held for _, held in collectives), collectives
    assert not _lock_held()


def test_without_a_process_group_ours_registers_with_no_collective(dataset, events):
    _build(str(dataset), registering_shared_memory)
    assert events and all(name == "look" and held for name, held in events), events


_FD_PROBE = """
import contextlib, os, sys
sys.path.insert(0, {repo!r})
from streaming import StreamingDataset
from upstream.streaming import registering_shared_memory

guard = contextlib.nullcontext if {upstream} else registering_shared_memory
opened, alive = [], []
for _ in range(6):
    before = len(os.listdir("/proc/self/fd"))
    with guard():
        alive.append(StreamingDataset(local={local!r}, split="train", batch_size=1))
    opened.append(len(os.listdir("/proc/self/fd")) - before)
print(*opened)
"""


def _fds_per_dataset(dataset, tmp_path, upstream: bool) -> list[int]:
    """File descriptors each of 6 datasets, built one after another in one process, left open (in a fresh
    /dev/shm and TMPDIR, so that only these 6 prefixes exist)."""
    import subprocess

    from tests.helpers import PYTHON, REPO, private_shm_cmd, train_env

    (tmp_path / "tmp").mkdir()
    code = _FD_PROBE.format(repo=str(REPO), local=str(dataset), upstream=upstream)
    proc = subprocess.run(private_shm_cmd([PYTHON, "-c", code]), capture_output=True, text=True, cwd=tmp_path,
                          env={**train_env(), "TMPDIR": str(tmp_path / "tmp")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [int(n) for n in proc.stdout.split()]


@pytest.mark.slow  # a subprocess that imports Streaming
def test_upstream_prefix_look_leaks_a_descriptor_per_registered_segment(dataset, tmp_path):
    """Each look for a free prefix opens every registered prefix's segments and keeps them open (atexit holds
    them): the k-th dataset of a process leaks more than the first, without end."""
    opened = _fds_per_dataset(dataset, tmp_path, upstream=True)
    assert opened[-1] > opened[0] and opened == sorted(opened), opened


@pytest.mark.slow
def test_our_prefix_look_closes_its_probes(dataset, tmp_path):
    opened = _fds_per_dataset(dataset, tmp_path, upstream=False)
    # each dataset keeps its own segments open and nothing else (the first also opens the registry lock's file)
    assert len(set(opened[1:])) == 1 and opened[-1] <= opened[0], opened
