"""Checkpoints in a bucket (``save_folder=s3://…/{run_name}``) on a real S3 endpoint (moto's server on loopback):
resume from the bucket on a machine with an empty local folder, bit-identically; the endpoint dying mid-run
stops the run with a clear error, and re-running after it returns loses nothing that reached the bucket."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.s3 import HOST, error_line, start_moto
from tests.s3_fixtures import moto_s3  # noqa: F401 - fixture
from tests.helpers import PYTHON, REPO, make_dataset, metrics_rows, run_train, tiny_args

STEPS, EVERY = 100, 20
pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shakespeare_text) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), shakespeare_text[:150_000], seq_len=32)


def _args(ds: Path, runs: Path, *extra: str) -> list[str]:
    return tiny_args(ds, runs, "run_name=bk", f"max_duration={STEPS}ba", f"save_interval={EVERY}ba",
                     f"eval_interval={EVERY}ba", "model.dropout=0.1", *extra)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """The same run, uninterrupted, with local checkpoints."""
    runs = tmp_path_factory.mktemp("ref")
    run_train(_args(dataset, runs))
    return runs / "bk"


def _final_weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["model"]


def _bucket_latest(s3, bucket: str) -> int:
    """The batch of the checkpoint the bucket's latest pointer names (0 when there is none yet)."""
    try:
        target = s3.get(bucket, "runs/bk/latest-rank0.pt.symlink").decode()
    except Exception:  # noqa: BLE001 - not written yet
        return 0
    return int(target.rsplit("-ba", 1)[1].split("-")[0])


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {HOST}:{port}"
            time.sleep(0.05)


def test_endpoint_dies_mid_run_then_resume_from_bucket_on_an_empty_machine(dataset, reference, moto_s3, tmp_path):
    own = start_moto()  # shares moto's in-process state with the session server: buckets outlive a restart
    port, bucket = own.port, moto_s3.new_bucket()
    env = own.env()
    args = _args(dataset, tmp_path / "machine1", f"save_folder=s3://{bucket}/runs/{{run_name}}")
    proc = subprocess.Popen([PYTHON, "gpt_pile_composer.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not own.keys(bucket, "runs/bk"):  # the first checkpoint reached the bucket
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    own.server.stop()  # the endpoint dies mid-run
    died_at = time.monotonic()
    _, err = proc.communicate(timeout=240)
    line = error_line(err)
    assert proc.returncode == 2, err[-3000:]
    assert f"uploading a checkpoint to s3://{bucket}/runs/bk failed after retries" in line, line
    assert "cannot connect to the endpoint" in line and "re-run the same command" in line, line
    stopped_after = time.monotonic() - died_at
    last = metrics_rows(tmp_path / "machine1" / "bk")[-1]["step"]

    from moto.server import ThreadedMotoServer

    revived = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    revived.start()  # the endpoint is back, with what it held
    try:
        _wait_for_port(port)
        pointer = _bucket_latest(own, bucket)
        saved = [int(k.split("-ba")[1].split("-")[0]) for k in own.keys(bucket, "runs/bk") if k.startswith("ep")]
        latest = max(saved)  # Composer's pointer lags its uploads: resume from the newest checkpoint object
        assert latest >= max(pointer, EVERY) and latest < STEPS, (saved, pointer)
        empty = tmp_path / "machine2"  # another machine: no run folder, no data cache, no local checkpoint
        proc2 = run_train(_args(dataset, empty, f"save_folder=s3://{bucket}/runs/{{run_name}}"), env=env)
    finally:
        revived.stop()
    assert not list(Path(REPO).glob("s3:*")), "Composer's stale ./s3: download folder must not appear"
    rows = metrics_rows(empty / "bk")
    assert rows[0]["step"] == latest + 1 and rows[-1]["step"] == STEPS  # resumed from the bucket's latest
    ref = {r["step"]: r["loss/train/total"] for r in metrics_rows(reference)}
    assert all(r["loss/train/total"] == ref[r["step"]] for r in rows), "losses differ from the uninterrupted run"
    ours = _final_weights(empty / "bk" / "checkpoints" / "latest-rank0.pt")
    theirs = _final_weights(reference / "checkpoints" / "latest-rank0.pt")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert f"ep0-ba{STEPS}-rank0.pt" in moto_s3.keys(bucket, "runs/bk"), proc2.stdout[-2000:]
    print(f"stopped {stopped_after:.1f} s after the endpoint died, at step {last}; pointer {pointer}, resumed from "
          f"step {latest}")


def test_unusable_checkpoint_bucket_fails_at_start(dataset, moto_s3, tmp_path):
    args = _args(dataset, tmp_path, "save_folder=s3://no-such-bucket-xyz/runs/{run_name}", "max_duration=2ba")
    proc = run_train(args, env=moto_s3.env(), check=False)
    line = error_line(proc.stderr)
    assert proc.returncode == 2
    assert "save_folder s3://no-such-bucket-xyz/runs/bk" in line and "no-such-bucket-xyz does not exist" in line, line
    assert not (tmp_path / "bk" / "metrics.jsonl").exists()


def _wait_returns(wait, uploader, seconds: float) -> tuple[bool, BaseException | None]:
    """Run ``wait(uploader)`` in a thread: (returned within ``seconds``, what it raised)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            wait(uploader)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    return not thread.is_alive(), (raised or [None])[0]


def test_upstream_uploader_wait_hangs_on_an_existence_check_when_the_endpoint_dies(monkeypatch, tmp_path):
    """Composer 0.32.1's RemoteUploader.wait() blocks on the existence check of an uploaded checkpoint (it polls a
    dead endpoint for up to an hour) before it looks at the upload that failed; our fit_end sees the failure."""
    from composer.utils.remote_uploader import RemoteUploader

    from tests.s3 import s3_vars
    from upstream.composer import raise_first_upload_failure

    s3 = start_moto()
    bucket = s3.new_bucket()
    for name, value in {**s3_vars(s3.endpoint), "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)  # the uploader's worker processes inherit this environment
    uploader = RemoteUploader(remote_folder=f"s3://{bucket}/ck")
    payload = tmp_path / "ckpt.pt"
    payload.write_bytes(b"checkpoint")
    uploader.upload_file_async("ck/ep0-ba10-rank0.pt", payload, overwrite=True)
    uploader.wait()  # the first checkpoint reached the bucket
    s3.server.stop()  # then the endpoint dies
    uploader.check_remote_files_exist_async(["ck/ep0-ba10-rank0.pt"], wait_before_next_try_in_seconds=0.5)
    uploader.upload_file_async("ck/ep0-ba20-rank0.pt", payload, overwrite=True)
    try:
        returned, _ = _wait_returns(RemoteUploader.wait, uploader, 8)
        assert not returned, "upstream wait() no longer blocks: drop BucketCheckpointSaver.fit_end"
        returned, raised = _wait_returns(raise_first_upload_failure, uploader, 30)
        assert returned and raised is not None and "Could not connect" in str(raised), raised
    finally:
        uploader.is_remote_upload_failed.set()  # lets the existence check (and a blocked wait) end
        uploader.upload_executor.shutdown(wait=True, cancel_futures=True)
        uploader.check_remote_files_exist_executor.shutdown(wait=True, cancel_futures=True)
