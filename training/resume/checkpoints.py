"""A run's checkpoint files on local disk: their names, the ``latest`` pointer, whether one is complete, and the
run's ``model.json``.

Composer writes ``{save_folder}/ep{E}-ba{B}-rank0.pt`` (or a sharded ``ep{E}-ba{B}/`` folder under FSDP) and a
``latest-rank0.pt`` symlink; a kill can leave either half written, which :func:`repair_latest` mends before
autoresume reads it. ``RUN/model.json`` records the GPTConfig at start-up: what the checkpoints' weights fit.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import torch

from core.errors import CheckpointError
from core.runs import MODEL_FILE
from gpt import GPTConfig
from gpt_modern import config_from_dict

LATEST = "latest-rank0.pt"


def save_model_config(run_dir: str, config: GPTConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    Path(run_dir, MODEL_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def read_model_config(run_dir: str | Path) -> GPTConfig:
    """The GPTConfig a run recorded when it started (``RUN/model.json``): what its checkpoints' weights fit."""
    model_file = Path(run_dir) / MODEL_FILE
    if not model_file.exists():
        raise CheckpointError(f"{model_file} is missing: point at a run folder made by gpt_pile_composer.py")
    return config_from_dict(json.loads(model_file.read_text()))  # GPTConfig, or ModernConfig for arch: modern


def is_sharded(path: Path) -> bool:
    """A torch.distributed.checkpoint folder (FSDP ``state_dict_type=sharded``): ``.distcp`` files + ``.metadata``."""
    return path.is_dir() and (path / ".metadata").is_file()


_CKPT = re.compile(r"^ep(\d+)-ba(\d+)(-rank0\.pt)?$")  # a monolithic file, or a sharded (FSDP) folder


def checkpoint_batch(name: str) -> Optional[int]:
    """The batch of a checkpoint named ``ep{E}-ba{B}-rank0.pt`` (or a sharded ``ep{E}-ba{B}`` folder), else None."""
    m = _CKPT.match(name)
    return int(m.group(2)) if m else None


def checkpoints_in(save_folder: str | Path) -> list[tuple[int, int, Path]]:
    """(epoch, batch, path) of every checkpoint in the folder, newest first."""
    found = [(int(m.group(1)), int(m.group(2)), p) for p in Path(save_folder).glob("ep*-ba*")
             if (m := _CKPT.match(p.name))]
    return sorted(found, key=lambda c: c[1], reverse=True)


def point_latest(save_folder: str | Path, ckpt: Path, latest_name: str = LATEST) -> None:
    """Point ``latest`` at ``ckpt`` (atomically)."""
    _point(Path(save_folder) / latest_name, ckpt)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint file, or a sharded checkpoint's folder."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def readable(path: Path) -> Optional[str]:
    """None when ``path`` is a complete checkpoint, else what is wrong with it. A file must be a zip with intact
    CRCs; a sharded folder must hold torch.distributed.checkpoint's ``.metadata``, which is written last."""
    if path.is_dir():
        return None if (path / ".metadata").is_file() else "a sharded checkpoint without .metadata (save cut short)"
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        return None if bad is None else f"entry {bad} fails its CRC check"
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"not a complete checkpoint ({type(e).__name__}: {e})"


def repair_latest(save_folder: str, latest_name: str = LATEST) -> list[str]:
    """Make ``latest`` name the newest readable checkpoint before autoresume loads it; returns what was done.

    A kill during a save leaves a partial file (Composer writes in place) that is newer than ``latest``; a kill
    between Composer's remove-and-recreate of the symlink leaves no ``latest``; a damaged disk leaves a corrupt
    ``latest``. Unreadable files are renamed to ``*.corrupt`` (so the step can be saved again) and ``latest`` is
    pointed at the newest good checkpoint. Raises CheckpointError when none is readable.
    """
    folder = Path(save_folder)
    ckpts = sorted((p for p in folder.glob("ep*-ba*") if _CKPT.match(p.name)),
                   key=lambda p: checkpoint_batch(p.name), reverse=True)
    if not ckpts:
        return []
    latest = folder / latest_name
    target = latest.resolve().name if latest.is_symlink() else None
    notes: list[str] = []
    for ckpt in ckpts:
        problem = readable(ckpt)
        if problem is None:
            if ckpt.name != target:
                _point(latest, ckpt)
                notes.append(f"resuming from {ckpt} (latest pointed at {target or 'nothing'})")
            return notes
        aside = ckpt.with_name(ckpt.name + ".corrupt")
        if aside.is_dir():
            shutil.rmtree(aside)
        os.replace(ckpt, aside)
        notes.append(f"checkpoint {ckpt} is unreadable: {problem}; moved it to {aside.name}")
    raise CheckpointError(
        f"no readable checkpoint in {folder} (all moved to *.corrupt); delete the folder to start the run over, "
        "or set load_path to a good checkpoint from elsewhere"
    )


def _point(link: Path, target: Path) -> None:
    """Atomically (re)point a relative symlink (through a temporary link of this host and process)."""
    tmp = link.with_name(f"{link.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target.name, tmp)
    os.replace(tmp, link)


FINGERPRINT = ("state", "callbacks", "ResumeGuard", "fingerprint")  # where ResumeGuard's state_dict lands


def saved_fingerprint(path: str) -> Optional[dict]:
    """The ResumeGuard fingerprint stored in a checkpoint, read without its weights: a monolithic file
    memory-mapped, a sharded (FSDP) folder through torch.distributed.checkpoint's metadata."""
    if os.path.isdir(path):
        return sharded_fingerprint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - truncated zips and pickles raise many types
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e})") from None
    return state.get("state", {}).get("callbacks", {}).get("ResumeGuard", {}).get("fingerprint")


def sharded_fingerprint(path: str) -> Optional[dict]:
    """Only the fingerprint's entries are loaded (each a small pickled leaf), in this process alone. The checkpoint's
    flattened keys are put back into the nested dict by the paths torch.distributed.checkpoint recorded."""
    import torch.distributed.checkpoint as dcp

    try:
        reader = dcp.FileSystemReader(path)
        paths = {key: tuple(p) for key, p in (reader.read_metadata().planner_data or {}).items()
                 if tuple(p[:len(FINGERPRINT)]) == FINGERPRINT}
        values: dict = dict.fromkeys(paths)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(values, storage_reader=reader, no_dist=True)
    except Exception as e:  # noqa: BLE001 - a damaged folder raises many types
        raise CheckpointError(f"cannot read sharded checkpoint {path} ({type(e).__name__}: {e})") from None
    fingerprint: dict = {}
    for key, where in paths.items():
        node = fingerprint
        for part in where[len(FINGERPRINT):-1]:
            node = node.setdefault(part, {})
        node[where[-1]] = values[key]
    return fingerprint or None
