"""Shared test setup: make the repo root importable (``import loaders``) and give tests real-data fixtures."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

ASSETS = REPO_ROOT / "assets"  # shipped with the project (assets/README.md): every test runs on a fresh clone


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


@pytest.fixture
def read_split():
    """``read_split(dir) -> (samples, seq_len + 1) array`` read back with the real StreamingDataset, in order."""

    def read(directory: Path) -> np.ndarray:
        from streaming import StreamingDataset

        ds = StreamingDataset(local=str(directory), shuffle=False, batch_size=1)
        return np.stack([ds[i]["tokens"] for i in range(len(ds))])

    return read


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
