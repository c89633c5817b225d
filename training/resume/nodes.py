"""What the nodes of a multi-node run share, decided once at start, under the run lock and before any resume step.

Two layouts are supported: a run folder on a filesystem every node mounts (NFS, Lustre), and a bucket
``save_folder=s3://...`` with each node's run folder on its own disk. A local ``save_folder`` on node-local disks
is refused at start: the checkpoints would be on node 0 only, and Composer 0.32.1 then fails the resume of a DDP run
("Downloading the checkpoint to all nodes failed") and lets each rank of a sharded FSDP run decide alone whether
``latest`` exists, so nodes would resume from different steps. The one writer of a shared folder is global rank 0;
of node-local folders, each node's local rank 0.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from composer.utils import dist

from core.errors import ConfigError
from core.files import remove, write_atomic
from training.config import TrainConfig
from training.resume.bucket import bucket_folder

PROBE = ".nodes-probe"  # written by global rank 0 into the run folder, read by every rank, then removed


def node_count() -> int:
    return max(1, dist.get_world_size() // max(1, dist.get_local_world_size()))


def check_nodes(cfg: TrainConfig) -> bool:
    """Whether every node sees the same run folder (always true on one node). Raises ConfigError, on every rank
    alike, when the nodes were given different ``save_folder`` values, or when a local ``save_folder`` lies on
    node-local disks."""
    if node_count() == 1:
        return True
    folders = dist.all_gather_object(cfg.save_folder)
    if len(set(folders)) > 1:
        raise ConfigError(f"save_folder differs between nodes ({folders[0]} on rank 0, {_other(folders)}): give "
                          "every node the same command and config (a shared folder, or save_folder=s3://...)")
    shared = all(dist.all_gather_object(_sees_rank0_probe(cfg.run_dir)))
    if not shared and bucket_folder(cfg) is None:
        raise ConfigError(f"the run folder {cfg.run_dir} is not shared between the nodes (another node does not see "
                          "what node 0 writes there), so a resume would find checkpoints on node 0 only: put "
                          "runs_root on a filesystem every node mounts (NFS, Lustre), or keep checkpoints in a "
                          "bucket with save_folder=s3://BUCKET/PREFIX/{run_name}")
    return shared


def _other(folders: list) -> str:
    rank, folder = next((r, f) for r, f in enumerate(folders) if f != folders[0])
    return f"{folder} on rank {rank}"


def _sees_rank0_probe(run_dir: str) -> bool:
    """Global rank 0 writes a random token into the run folder; a rank sees the folder rank 0 sees if it reads it."""
    token = [uuid.uuid4().hex]
    dist.broadcast_object_list(token)
    probe = os.path.join(run_dir, PROBE)
    if dist.get_global_rank() == 0:
        os.makedirs(run_dir, exist_ok=True)
        write_atomic(probe, token[0])
    dist.barrier()
    try:
        with open(probe) as f:
            seen = f.read() == token[0]
    except OSError:
        seen = False
    dist.barrier()
    if dist.get_global_rank() == 0:
        remove(Path(probe))
    return seen


def is_folder_writer(shared: bool) -> bool:
    """The one process that writes this node's view of the run folder (``latest``, downloaded checkpoints)."""
    return dist.get_global_rank() == 0 if shared else dist.get_local_rank() == 0
