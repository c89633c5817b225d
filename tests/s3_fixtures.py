"""pytest fixtures around :mod:`tests.s3`; import them into a test module (``from tests.s3_fixtures import *``)."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.s3 import MotoS3, s3_vars, start_moto

__all__ = ["moto_s3", "s3_process_env"]


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
