"""Shared test setup: the repo root importable (``import loaders``), the process pinned to the CPU and wandb offline,
every test run from a scratch folder (never the repo), and the fixtures tests share (real data, a real S3 endpoint).

Fixtures here need no import in test modules.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

# Before anything imports torch: the tests behave on a GPU machine exactly as on a CPU-only one. Set through a
# MonkeyPatch that is undone when pytest ends (pytest_unconfigure).
_SESSION_ENV = pytest.MonkeyPatch()
_SESSION_ENV.setenv("CUDA_VISIBLE_DEVICES", "")
_SESSION_ENV.setenv("WANDB_MODE", "offline")  # in-process code that reaches wandb (the workaround tests)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 and "OMP_NUM_THREADS" not in os.environ:
    # Several workers share the cores, each starting training processes: one intra-op thread per process, or
    # OpenMP's spinning threads wait on each other (measured: 22 % less CPU time for the TensorBoard and spike tests
    # side by side on 2 workers). The subprocesses inherit it (tests/helpers.py train_env).
    _SESSION_ENV.setenv("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from tests import helpers  # noqa: E402
from tests.helpers import MotoS3, make_dataset, s3_vars, start_moto  # noqa: E402

ASSETS = REPO_ROOT / "assets"  # shipped with the project (assets/README.md): every test runs on a fresh clone


def pytest_unconfigure(config: pytest.Config) -> None:
    _SESSION_ENV.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with the most ``slow`` tests first (each module keeps its own order). pytest-xdist's ``--dist
    loadfile`` hands modules to workers in this order, so the long ones start first and the run ends with short ones
    on both workers, instead of one worker finishing a long module alone."""
    slow: dict[Path, int] = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    first_seen = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
    items.sort(key=lambda item: (-slow[item.path], first_seen[item.path]))


@pytest.fixture(scope="session", autouse=True)
def _run_outside_the_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests and every subprocess they start run in a scratch folder: nothing lands in the working tree, and a
    test that leans on the repo being the working directory fails here as it would for a user elsewhere."""
    scratch = tmp_path_factory.mktemp("cwd")
    helpers._WORKDIR = scratch
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(scratch)
        yield scratch


@pytest.fixture(scope="session", autouse=True)
def _locked_shared_memory_prefixes() -> Iterator[None]:
    """Every StreamingDataset a test builds in its own process picks its shared-memory prefix under the machine's
    registry lock, as the product's do (upstream/streaming.py): with `make test`'s parallel workers, an upstream
    pick in one worker could take the prefix a run in the other is creating (Streaming 0.13.0's collision)."""
    from upstream.streaming import registering_shared_memory

    with registering_shared_memory():
        yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """The real GPT-2 BPE files (vocab.json + merges.txt)."""
    return ASSETS / "gpt2"


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return (ASSETS / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory, shakespeare_text: str) -> Path:
    """The training tests' dataset: the first 300,000 characters of Tiny Shakespeare, bytes tokenizer, seq 32, 10 %
    val. Built once per session; no test writes into it (a module needing another one overrides ``dataset``)."""
    return make_dataset(tmp_path_factory.mktemp("dataset"), shakespeare_text[:300_000], seq_len=32)


@pytest.fixture
def read_split():
    """``read_split(dir) -> (samples, seq_len + 1) array`` read back with the real StreamingDataset, in order."""

    def read(directory: Path) -> np.ndarray:
        from streaming import StreamingDataset

        ds = StreamingDataset(local=str(directory), shuffle=False, batch_size=1)
        return np.stack([ds[i]["tokens"] for i in range(len(ds))])

    return read


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hugging Face offline (env flags and module constants) for this test only."""
    helpers.hf_offline(monkeypatch)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server for the session, on 127.0.0.1 and a port the OS picked."""
    s3 = start_moto()
    yield s3
    s3.server.stop()


@pytest.fixture
def s3_process_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """Point in-process code (core.remote, Streaming) at the server for one test; undone afterwards."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for name, value in s3_vars(moto_s3.endpoint).items():
        monkeypatch.setenv(name, value)
    return moto_s3


@pytest.fixture(autouse=True)
def _reap_children():
    """Kill whatever a test left running (a timed-out run and its launcher's workers), so that a failure stays
    one failure instead of holding shared memory, ports and CPU for the tests after it."""
    import psutil

    yield
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "multiprocessing" not in " ".join(child.cmdline()):  # spare Python's own resource tracker
                left.append(child)
        except psutil.NoSuchProcess:
            pass
    for child in left:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=10)
