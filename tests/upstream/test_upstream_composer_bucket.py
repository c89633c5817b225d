"""Composer 0.32.1 autoresume with a bucket ``save_folder``: ``Trainer._get_autoresume_checkpoint`` joins the URL
with the latest file name and treats it as a local path, so its download lands in ``./s3:/BUCKET/...`` under the
working directory, and on every later start that stale copy is used without asking the bucket again.
upstream.composer.bucket_checkpoint_saver keeps the local copies in the run folder instead."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from composer.trainer.trainer import Trainer

from upstream.composer import bucket_checkpoint_saver


def test_upstream_bucket_autoresume_keeps_a_stale_copy_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "s3:" / "bucket" / "runs" / "r" / "latest-rank0.pt"  # what an earlier start downloaded
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"the checkpoint of step 20; the bucket has step 30 by now")
    asked = []
    trainer = SimpleNamespace(state=SimpleNamespace(run_name="r"),
                              _try_checkpoint_download=lambda *args: asked.append(args))
    found = Trainer._get_autoresume_checkpoint(trainer, "s3://bucket/runs/{run_name}", "latest-rank{rank}.pt",
                                               "runs/{run_name}/latest-rank{rank}.pt", [], False)
    assert Path(found) == stale  # the working directory's stale copy ...
    assert asked == []  # ... and the bucket was never asked for its newer latest


def test_our_bucket_saver_keeps_local_copies_in_the_run_folder(tmp_path):
    local = tmp_path / "runs" / "r" / "checkpoints"
    saver = bucket_checkpoint_saver("s3://bucket/runs/r", str(local), "ep{epoch}-ba{batch}-rank{rank}.pt",
                                    "latest-rank{rank}.pt", save_interval="10ba", keep=2)
    assert saver.folder == str(local) and saver.filename.folder == str(local)
    assert saver.latest_filename.folder == str(local)
    assert saver.remote_file_name.filename == "runs/r/ep{epoch}-ba{batch}-rank{rank}.pt"
    assert saver.latest_remote_file_name.filename == "runs/r/latest-rank{rank}.pt"
    assert not any(Path.cwd().glob("s3:*"))


def test_upstream_saver_polls_the_bucket_every_30_s_before_moving_the_pointer():
    """Composer's own saver (the one sharded FSDP checkpoints keep) waits 30 s between looks for a checkpoint's
    objects before it uploads the bucket's latest pointer: a kill within that window resumes an interval earlier."""
    from composer.callbacks import CheckpointSaver

    from upstream.composer import SYMLINK_POLL_SECONDS, poll_bucket_pointer

    saver = CheckpointSaver(folder="s3://bucket/runs/r", remote_file_name="runs/r/ep{epoch}-ba{batch}",
                            latest_remote_file_name="runs/r/latest-rank{rank}.pt")
    assert saver._symlink_upload_wait_before_next_try_in_seconds == 30.0
    poll_bucket_pointer(saver)
    assert saver._symlink_upload_wait_before_next_try_in_seconds == SYMLINK_POLL_SECONDS < 30.0
