"""Where a run resumes from, decided in one place.

A run named by ``run_name`` autoresumes from its own newest readable checkpoint: on local disk
(``{run_dir}/checkpoints``, :mod:`.checkpoints`) or in a bucket (``save_folder=s3://...``, :mod:`.bucket`).
``load_path`` starts a new run from another run's checkpoint. ``model.init_from=hf:...`` shapes and initialises a
new run from a Hugging Face GPT-2 (:mod:`.init_from`); resumed, the run takes its shape from its own ``model.json``.
Before anything loads, :mod:`.guard` compares the checkpoint's fingerprint with this run's.
"""
from __future__ import annotations

import os
from typing import Optional

from composer.utils import dist

from core.errors import ConfigError
from core.metadata import DatasetMetadata
from core.remote import is_remote
from gpt import GPTConfig
from gpt_modern import MODERN_FIELDS, ModernConfig
from training.config import TrainConfig
from training.resume.bucket import (
    bucket_fingerprint,
    bucket_folder,
    check_bucket,
    fetch_newest_checkpoint,
    local_folder,
    sharded_in_bucket,
    sharded_resume_point,
)
from training.resume.checkpoints import LATEST, read_model_config, repair_latest, saved_fingerprint
from training.resume.guard import ResumeGuard, check_fingerprint
from training.resume.init_from import init_config, resumed_init_config
from training.resume.nodes import check_nodes, is_folder_writer


def prepare_resume(cfg: TrainConfig, autoresume: bool) -> bool:
    """Before the model is built: fail on a missing ``load_path`` or an unusable bucket, make ``latest`` name a
    readable checkpoint (autoresume; from the bucket when there is one). Returns whether this run resumes."""
    if cfg.load_path and not is_remote(cfg.load_path) and not os.path.exists(cfg.load_path):
        raise ConfigError(f"load_path {cfg.load_path} does not exist; point it at a checkpoint file (ep*-ba*-rank0.pt)")
    shared = check_nodes(cfg)
    check_bucket(cfg)
    if autoresume and (newest := fetch_newest_checkpoint(cfg, writer=is_folder_writer(shared))):
        print(f"resuming from the bucket's newest checkpoint, {newest}", flush=True)
    if autoresume and _local_save(cfg) and dist.get_global_rank() == 0:
        for note in repair_latest(cfg.save_folder):
            print(f"warning: {note}", flush=True)
    dist.barrier()
    return _resume_source(cfg, autoresume)[1]


def _local_save(cfg: TrainConfig) -> bool:
    return bool(cfg.save_folder) and not is_remote(cfg.save_folder)


def checkpoint_dir(cfg: TrainConfig) -> Optional[str]:
    """The local folder of the run's checkpoints and ``latest``: ``save_folder``, or a bucket run's local copies."""
    return cfg.save_folder if _local_save(cfg) else (local_folder(cfg) if bucket_folder(cfg) else None)


def _resume_source(cfg: TrainConfig, autoresume: bool) -> tuple[Optional[str], bool]:
    """(the checkpoint Composer will load, whether it is this run's own: resuming, so it must replay)."""
    if autoresume and sharded_in_bucket(cfg) and (url := sharded_resume_point(cfg)):
        return url, True  # Composer reads the bucket's pointer itself (training/resume/bucket.py)
    latest_dir = checkpoint_dir(cfg)
    if autoresume and latest_dir and os.path.exists(os.path.join(latest_dir, LATEST)):
        return os.path.join(latest_dir, LATEST), True
    if cfg.load_path and not is_remote(cfg.load_path):
        return cfg.load_path, False  # a new run from another's checkpoint: changes are on purpose
    return None, False


def check_checkpoints(cfg: TrainConfig, autoresume: bool, guard: ResumeGuard) -> None:
    """Compare the checkpoint's fingerprint with this run's before Composer loads it (a changed model shape
    would otherwise fail inside Composer's weight loading with a size-mismatch traceback)."""
    source, strict = _resume_source(cfg, autoresume)
    if source is not None:
        saved = bucket_fingerprint(source) if is_remote(source) else saved_fingerprint(source)
        check_fingerprint(saved, guard.fingerprint, strict=strict, soft=guard.soft)
        guard.checked = saved is not None  # else ResumeGuard.load_state_dict compares when Composer loads


def model_config(cfg: TrainConfig, meta: DatasetMetadata, resuming: bool) -> GPTConfig:
    """The run's GPTConfig: the preset and ``model.*`` overrides with block size and vocab from the dataset; or,
    with ``model.init_from=hf:...``, the Hugging Face model's shape when the run starts, and its own recorded
    ``model.json`` when it resumes (the checkpoint has the weights, so the HF folder is not read again)."""
    overrides = {k: v for k, v in vars(cfg.model).items()
                 if k not in ("preset", "init_from", "arch") and v is not None}
    modern_only = sorted(set(overrides) & set(MODERN_FIELDS))
    if cfg.model.arch == "gpt2" and modern_only:
        raise ConfigError(f"model.{modern_only[0]} is a change of model.arch=modern; set model.arch=modern, or "
                          f"drop {', '.join('model.' + k for k in modern_only)}")
    try:
        if cfg.model.arch == "modern":
            return ModernConfig.from_preset(cfg.model.preset, block_size=meta.seq_len, vocab_size=meta.vocab_size,
                                            **overrides)
        if cfg.model.init_from and resuming:
            return resumed_init_config(cfg.model.init_from, read_model_config(cfg.run_dir), overrides)
        if cfg.model.init_from:
            return init_config(cfg.model.init_from, overrides, meta.seq_len, meta.vocab_size)
        return GPTConfig.from_preset(cfg.model.preset, block_size=meta.seq_len, vocab_size=meta.vocab_size,
                                     **overrides)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
