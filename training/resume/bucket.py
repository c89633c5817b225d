"""Checkpoints in a bucket: ``save_folder=s3://BUCKET/PREFIX/{run_name}``.

Composer uploads checkpoints and a ``latest`` pointer; re-running the same command on any machine resumes from
the bucket's newest checkpoint. Composer 0.32.1 behaviours changed here: where autoresume keeps its download
(:func:`remote_saver`), which checkpoint it resumes (:func:`fetch_newest_checkpoint`) and how the end of training
waits for uploads (:class:`BucketCheckpointSaver`).
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import TYPE_CHECKING, Any, Optional

from composer.callbacks import CheckpointSaver
from composer.utils import dist, format_name_with_dist, parse_uri

from loaders.dataset import is_remote
from core.remote import download_file, explain, list_keys
from evaluation.checkpoints import LATEST, checkpoint_batch
from core.errors import CheckpointError

if TYPE_CHECKING:
    from composer import Trainer

    from training.config import TrainConfig

CHECKPOINT_NAME = "ep{epoch}-ba{batch}-rank{rank}.pt"
SYMLINK_POLL_SECONDS = 2.0  # Composer's default (30 s) leaves the bucket's latest pointer that far behind


def bucket_folder(cfg: TrainConfig) -> Optional[str]:
    """The run's bucket folder (``{run_name}`` filled in), or None when checkpoints stay on local disk."""
    if not cfg.save_folder or not is_remote(cfg.save_folder):
        return None
    return format_name_with_dist(cfg.save_folder, cfg.run_name)


def check_bucket(cfg: TrainConfig) -> None:
    """Fail before training when the checkpoint bucket cannot be listed (missing bucket, refused credentials,
    endpoint down) instead of after the first interval's work."""
    url = bucket_folder(cfg)
    if url is not None and url.startswith("s3://") and dist.get_global_rank() == 0:
        try:
            list_keys(url)
        except Exception as e:  # noqa: BLE001 - core.remote words it
            raise CheckpointError(f"save_folder {url}: {e}") from None


class BucketCheckpointSaver(CheckpointSaver):
    """Composer's saver, except that at the end of training a failed upload is seen at once.

    Composer 0.32.1 bug (``RemoteUploader.wait``): it waits on its futures in order, and the existence check of an
    earlier checkpoint (polled to decide when to move the latest pointer) keeps retrying a dead endpoint for up to
    an hour, so ``fit_end`` hangs there and never looks at the upload that failed behind it.
    """

    def fit_end(self, state: Any, logger: Any) -> None:
        if self.remote_uploader is not None:
            raise_first_upload_failure(self.remote_uploader)
        super().fit_end(state, logger)


def raise_first_upload_failure(uploader: Any) -> None:
    """Wait for the uploads until all are done or one failed; on a failure, tell the existence checks to stop
    (they poll ``is_remote_upload_failed``) and raise it."""
    done, _ = concurrent.futures.wait(list(uploader.futures), return_when=concurrent.futures.FIRST_EXCEPTION)
    for future in done:
        if future.exception() is not None:
            uploader.is_remote_upload_failed.set()
            raise future.exception()


def remote_saver(cfg: TrainConfig) -> Optional[CheckpointSaver]:
    """Composer's CheckpointSaver for a bucket ``save_folder``, keeping its local copies in the run folder.

    Composer 0.32.1 bug (``Trainer._get_autoresume_checkpoint``): given a bucket ``save_folder`` it downloads the
    bucket's latest checkpoint to ``./s3:/BUCKET/...`` under the working directory and, on every later start,
    resumes from that stale copy instead of the bucket's newer latest (then fails uploading a checkpoint that
    exists). Handing the Trainer our own saver makes its autoresume look in ``{run_dir}/checkpoints``, which
    :func:`fetch_newest_checkpoint` points at the bucket's newest checkpoint first. ``overwrite``: a re-run
    re-saves, bit-identically, checkpoints the bucket may hold past the one it resumed from.
    Sharded FSDP checkpoints take Composer's own path, which reads the bucket's pointer directly.
    """
    url = bucket_folder(cfg)
    if url is None or (cfg.parallelism == "fsdp" and cfg.fsdp.state_dict_type == "sharded"):
        return None
    prefix = parse_uri(url)[2].strip("/")
    saver = BucketCheckpointSaver(
        folder=url,
        filename=CHECKPOINT_NAME,
        remote_file_name=f"{prefix}/{CHECKPOINT_NAME}" if prefix else CHECKPOINT_NAME,
        latest_filename=LATEST.replace("rank0", "rank{rank}"),
        latest_remote_file_name=f"{prefix}/latest-rank{{rank}}.pt" if prefix else "latest-rank{rank}.pt",
        overwrite=True,
        save_interval=cfg.save_interval,
        num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
    )
    local = local_folder(cfg)
    _remove_empty_temp(saver.folder, parse_uri(url)[2])
    saver.folder = saver.filename.folder = local
    if saver.latest_filename is not None:
        saver.latest_filename.folder = local
    saver._symlink_upload_wait_before_next_try_in_seconds = SYMLINK_POLL_SECONDS
    return saver


def _remove_empty_temp(folder: str, relative: str) -> None:
    """The saver made an empty temporary folder for its local copies (``mkdtemp()/PREFIX``); ours live elsewhere."""
    root = folder[: len(folder) - len(relative)] if relative and folder.endswith(relative) else folder
    try:
        os.rmdir(root)
    except OSError:
        pass


def local_folder(cfg: TrainConfig) -> str:
    """Where a bucket run keeps its local checkpoint copies: the run folder, as for a local run."""
    return os.path.join(cfg.run_dir, "checkpoints")


def fetch_newest_checkpoint(cfg: TrainConfig) -> Optional[str]:
    """Before autoresume, point the local latest at the bucket's newest checkpoint (downloaded if missing).

    The bucket is the run's record: a local copy can be behind it (the run moved machines) or ahead of it (an
    upload never finished). Its newest checkpoint object is used rather than its latest pointer, which Composer
    uploads only after polling for the checkpoint, so a kill between the two would lose an interval; an S3 object
    exists only once whole, so a listed checkpoint is a complete one. Returns the checkpoint's name, if any.
    Runs on each node's local rank 0, as Composer's own download does."""
    url = bucket_folder(cfg)
    if url is None or dist.get_local_rank() != 0:
        return None
    latest = os.path.join(local_folder(cfg), LATEST)
    if os.path.lexists(latest):
        os.unlink(latest)
    if not url.startswith("s3://"):
        return None  # other stores: Composer fetches what their latest pointer names
    batches = {batch: name for name in list_keys(url)
               if name.endswith("-rank0.pt") and (batch := checkpoint_batch(name)) is not None}
    if not batches:
        return None
    newest = batches[max(batches)]
    if not os.path.isfile(os.path.join(local_folder(cfg), newest)):
        download_file(f"{url}/{newest}", os.path.join(local_folder(cfg), newest))
    os.symlink(newest, latest)
    return newest


def upload_failure(trainer: Trainer, cfg: TrainConfig, exc: BaseException) -> Optional[CheckpointError]:
    """The clear error for a run stopped by its checkpoint bucket (uploads failed after retries), else None."""
    url = bucket_folder(cfg)
    saver = trainer._checkpoint_saver
    uploader = getattr(saver, "remote_uploader", None)
    if url is None or uploader is None or not uploader.is_remote_upload_failed.is_set():
        return None
    return CheckpointError(
        f"uploading a checkpoint to {url} failed after retries ({explain(url, exc)}), so training stopped. When "
        "the endpoint answers again, re-run the same command: it resumes from the bucket's latest checkpoint")
