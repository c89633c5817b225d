"""Checkpoints in a bucket: ``save_folder=s3://BUCKET/PREFIX/{run_name}``.

Composer uploads checkpoints and a ``latest`` pointer; re-running the same command on any machine resumes from
the bucket's newest checkpoint (:func:`fetch_newest_checkpoint`). The saver that uploads them is Composer's with
two work-arounds (upstream/composer.py: :func:`~upstream.composer.bucket_checkpoint_saver`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from composer.callbacks import CheckpointSaver
from composer.utils import dist, format_name_with_dist

from core.errors import CheckpointError
from core.files import remove
from core.remote import download_file, explain, is_remote, list_keys, read_range
from training.resume.checkpoints import FINGERPRINT, LATEST, checkpoint_batch, point_latest, sharded_fingerprint
from upstream.composer import bucket_checkpoint_saver

if TYPE_CHECKING:
    from composer import Trainer

    from training.config import TrainConfig

CHECKPOINT_NAME = "ep{epoch}-ba{batch}-rank{rank}.pt"


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


def remote_saver(cfg: TrainConfig) -> Optional[CheckpointSaver]:
    """Composer's CheckpointSaver for a bucket ``save_folder``, keeping its local copies in the run folder, where
    :func:`fetch_newest_checkpoint` points ``latest`` at the bucket's newest checkpoint before autoresume looks.
    ``overwrite``: a re-run re-saves, bit-identically, checkpoints the bucket may hold past the one it resumed from.
    Sharded FSDP checkpoints take Composer's own path, which reads the bucket's pointer directly."""
    url = bucket_folder(cfg)
    if url is None or sharded_in_bucket(cfg):
        return None
    return bucket_checkpoint_saver(url, local_folder(cfg), CHECKPOINT_NAME, LATEST.replace("rank0", "rank{rank}"),
                                   save_interval=cfg.save_interval, keep=cfg.save_num_checkpoints_to_keep)


def sharded_in_bucket(cfg: TrainConfig) -> bool:
    """Sharded FSDP checkpoints in a bucket: Composer's own saver, whose resume reads the bucket's latest pointer
    on global rank 0 and has every rank load its shard from the bucket (so every node resumes from one step, with
    node-local run folders too). A requeue re-saves, bit-identically, the checkpoints the bucket holds past that
    pointer, so the saver overwrites them (without that, such a requeue hung in our 2-node test)."""
    return bucket_folder(cfg) is not None and cfg.parallelism == "fsdp" and cfg.fsdp.state_dict_type == "sharded"


def local_folder(cfg: TrainConfig) -> str:
    """Where a bucket run keeps its local checkpoint copies: the run folder, as for a local run."""
    return os.path.join(cfg.run_dir, "checkpoints")


def fetch_newest_checkpoint(cfg: TrainConfig, writer: bool) -> Optional[str]:
    """Before autoresume, point the local latest at the bucket's newest checkpoint (downloaded if missing).

    The bucket is the run's record: a local copy can be behind it (the run moved machines) or ahead of it (an
    upload never finished). Its newest checkpoint object is used rather than its latest pointer, which Composer
    uploads only after polling for the checkpoint, so a kill between the two would lose an interval; an S3 object
    exists only once whole, so a listed checkpoint is a complete one. Global rank 0 picks it for every node; the
    ``writer`` of each run folder (training/resume/nodes.py: one per shared folder, one per node-local folder)
    downloads it and re-points ``latest`` atomically. Returns the checkpoint's name, if any (on the writer)."""
    url = bucket_folder(cfg)
    if url is None:
        return None
    newest = [_newest_checkpoint(url) if dist.get_global_rank() == 0 else None]
    dist.broadcast_object_list(newest)
    if not writer:
        return None
    latest = Path(local_folder(cfg), LATEST)
    if newest[0] is None:
        remove(latest)  # a stale local pointer must not win over the bucket
        return None
    target = Path(local_folder(cfg), newest[0])
    if not target.is_file():
        download_file(f"{url}/{newest[0]}", str(target))
    point_latest(local_folder(cfg), target)
    return newest[0]


def sharded_resume_point(cfg: TrainConfig) -> Optional[str]:
    """The URL of the sharded checkpoint the bucket's latest pointer names (what Composer resumes from), or None.
    Composer's pointer is an object ``{latest}.symlink`` whose text is the checkpoint folder's key."""
    url = bucket_folder(cfg)
    pointer = f"{LATEST}.symlink"
    if url is None or not url.startswith("s3://") or pointer not in list_keys(url):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        download_file(f"{url}/{pointer}", os.path.join(tmp, pointer))
        key = Path(tmp, pointer).read_text().strip().strip("/")
    return f"s3://{url[len('s3://'):].split('/', 1)[0]}/{key}"


def bucket_fingerprint(url: str) -> Optional[dict]:
    """The ResumeGuard fingerprint of a sharded checkpoint in a bucket, read without its weights: its ``.metadata``,
    then only the byte range of each shard file that holds the fingerprint's entries (ranged GETs of a few KiB),
    written at their offsets into sparse local copies that :func:`sharded_fingerprint` reads."""
    import torch.distributed.checkpoint as dcp

    prefix = ".".join(FINGERPRINT) + "."
    with tempfile.TemporaryDirectory() as tmp:
        download_file(f"{url}/.metadata", os.path.join(tmp, ".metadata"))
        spans: dict[str, tuple[int, int]] = {}
        for index, info in dcp.FileSystemReader(tmp).read_metadata().storage_data.items():
            if index.fqn.startswith(prefix):
                lo, hi = spans.get(info.relative_path, (info.offset, info.offset + info.length))
                spans[info.relative_path] = (min(lo, info.offset), max(hi, info.offset + info.length))
        for name, (lo, hi) in spans.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.seek(lo)
                f.write(read_range(f"{url}/{name}", lo, hi))
        return sharded_fingerprint(tmp)


def _newest_checkpoint(url: str) -> Optional[str]:
    """The newest ``ep*-ba*-rank0.pt`` object under ``url`` (s3:// only: for other stores Composer fetches what
    their latest pointer names)."""
    if not url.startswith("s3://"):
        return None
    batches = {batch: name for name in list_keys(url)
               if name.endswith("-rank0.pt") and (batch := checkpoint_batch(name)) is not None}
    return batches[max(batches)] if batches else None


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
