"""Checkpoints in a bucket (``save_folder=s3://…/{run_name}``) on a real S3 endpoint (moto's server on loopback):
resume from the bucket on a machine with an empty local folder, bit-identically; the endpoint dying mid-run
stops the run with a clear error, and re-running after it returns loses nothing that reached the bucket."""
from __future__ import annotations

import concurrent.futures
import socket
import sys
import threading
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    HOST,
    REPO,
    final_weights,
    metrics_rows,
    one_error,
    run_train,
    s3_vars,
    start_moto,
    start_train,
    tiny_args,
    wait_until,
)

STEPS, EVERY = 100, 20
pytestmark = pytest.mark.timeout(400)


def _args(ds: Path, runs: Path, *extra: str) -> list[str]:
    return tiny_args(ds, runs, "run_name=bk", f"max_duration={STEPS}ba", f"save_interval={EVERY}ba",
                     f"eval_interval={EVERY}ba", "model.dropout=0.1", *extra)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """The same run, uninterrupted, with local checkpoints."""
    runs = tmp_path_factory.mktemp("ref")
    run_train(_args(dataset, runs))
    return runs / "bk"


def _bucket_latest(s3, bucket: str) -> int:
    """The batch of the checkpoint the bucket's latest pointer names (0 when there is none yet)."""
    try:
        target = s3.get(bucket, "runs/bk/latest-rank0.pt.symlink").decode()
    except Exception:  # noqa: BLE001 - not written yet
        return 0
    return int(target.rsplit("-ba", 1)[1].split("-")[0])


def _listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_endpoint_dies_mid_run_then_resume_from_bucket_on_an_empty_machine(dataset, reference, moto_s3, tmp_path):
    own = start_moto()  # shares moto's in-process state with the session server: buckets outlive a restart
    port, bucket = own.port, moto_s3.new_bucket()
    env = own.env()
    args = _args(dataset, tmp_path / "machine1", f"save_folder=s3://{bucket}/runs/{{run_name}}")
    cwd = tmp_path / "cwd"  # where Composer's stale ./s3: download folder would appear
    cwd.mkdir()
    log = tmp_path / "machine1.log"
    proc = start_train(args, log, env=env, cwd=cwd)
    wait_until(lambda: own.keys(bucket, "runs/bk"), "the first checkpoint reached the bucket", timeout=240,
               poll=0.05, proc=proc)
    own.server.stop()  # the endpoint dies mid-run
    proc.wait(timeout=240)
    one_error(proc, f"uploading a checkpoint to s3://{bucket}/runs/bk failed after retries",
              "cannot connect to the endpoint", "re-run the same command", stderr=log.read_text())
    last = metrics_rows(tmp_path / "machine1" / "bk")[-1]["step"]

    from moto.server import ThreadedMotoServer

    revived = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    revived.start()  # the endpoint is back, with what it held
    try:
        wait_until(lambda: _listening(port), f"something listens on {HOST}:{port}", timeout=30, poll=0.05)
        pointer = _bucket_latest(own, bucket)
        saved = [int(k.split("-ba")[1].split("-")[0]) for k in own.keys(bucket, "runs/bk") if k.startswith("ep")]
        latest = max(saved)  # Composer's pointer lags its uploads: resume from the newest checkpoint object
        assert latest >= max(pointer, EVERY) and latest < STEPS, (saved, pointer)
        empty = tmp_path / "machine2"  # another machine: no run folder, no data cache, no local checkpoint
        proc2 = run_train(_args(dataset, empty, f"save_folder=s3://{bucket}/runs/{{run_name}}"), env=env, cwd=cwd)
    finally:
        revived.stop()
    assert not list(cwd.glob("s3:*")) and not list(REPO.glob("s3:*")), \
        "Composer's stale ./s3: download folder must not appear"
    rows = metrics_rows(empty / "bk")
    assert rows[0]["step"] == latest + 1 and rows[-1]["step"] == STEPS  # resumed from the bucket's latest
    ref = {r["step"]: r["loss/train/total"] for r in metrics_rows(reference)}
    assert all(r["loss/train/total"] == ref[r["step"]] for r in rows), "losses differ from the uninterrupted run"
    ours, theirs = final_weights(empty / "bk"), final_weights(reference)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert f"ep0-ba{STEPS}-rank0.pt" in moto_s3.keys(bucket, "runs/bk"), proc2.stdout[-2000:]
    print(f"stopped at step {last} after the endpoint died; pointer {pointer}, resumed from step {latest}")


@pytest.mark.slow
def test_unusable_checkpoint_bucket_fails_at_start(dataset, moto_s3, tmp_path):
    args = _args(dataset, tmp_path, "save_folder=s3://no-such-bucket-xyz/runs/{run_name}", "max_duration=2ba")
    proc = run_train(args, env=moto_s3.env(), check=False)
    one_error(proc, "save_folder s3://no-such-bucket-xyz/runs/bk", "no-such-bucket-xyz does not exist")
    assert not (tmp_path / "bk" / "metrics.jsonl").exists()


def _in_thread(wait, uploader) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``wait(uploader)`` in a thread; the list receives what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            wait(uploader)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def _future_waited_on(thread: threading.Thread, function) -> object:
    """The ``future`` that ``function``, running in ``thread``, is now blocked on in ``future.exception()``."""
    frame = sys._current_frames().get(thread.ident)
    inner = None
    while frame is not None:
        if frame.f_code is function.__code__:
            return frame.f_locals.get("future") if inner == "exception" else None
        inner, frame = frame.f_code.co_name, frame.f_back
    return None


@pytest.mark.slow  # Composer's uploader worker processes
def test_upstream_uploader_wait_hangs_on_an_existence_check_when_the_endpoint_dies(monkeypatch, tmp_path):
    """Composer 0.32.1's RemoteUploader.wait() blocks on the existence check of an uploaded checkpoint (it polls a
    dead endpoint for up to an hour) before it looks at the upload that failed; our fit_end sees the failure."""
    from composer.utils.remote_uploader import RemoteUploader

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
    check, upload = uploader.futures
    try:
        concurrent.futures.wait([upload], timeout=120)  # a hang guard: the upload to a dead endpoint fails
        assert upload.done() and "Could not connect" in str(upload.exception()), upload
        thread, _ = _in_thread(RemoteUploader.wait, uploader)
        # upstream wait() looks at the futures in order: it blocks on the existence check, which polls on (for up
        # to an hour), although the upload's failure is already known
        wait_until(lambda: _future_waited_on(thread, RemoteUploader.wait) is not None or not thread.is_alive(),
                   "upstream wait() blocks or returns", timeout=60, poll=0.01)
        blocked_on = _future_waited_on(thread, RemoteUploader.wait)
        assert thread.is_alive() and blocked_on is check and not check.done(), \
            "upstream wait() no longer blocks: drop BucketCheckpointSaver.fit_end"
        ours, raised = _in_thread(raise_first_upload_failure, uploader)
        ours.join(timeout=60)  # a hang guard: the failure is known, ours returns at once
        assert not ours.is_alive() and raised and "Could not connect" in str(raised[0]), raised
    finally:
        uploader.is_remote_upload_failed.set()  # lets the existence check (and a blocked wait) end
        uploader.upload_executor.shutdown(wait=True, cancel_futures=True)
        uploader.check_remote_files_exist_executor.shutdown(wait=True, cancel_futures=True)
