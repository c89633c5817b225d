"""Find and load what a run saved: its GPT config, its latest checkpoint's weights, its dataset's tokenizer.

Used by the demo's sampling step (and later by generate/eval/export). A run folder holds ``model.json`` (the
GPTConfig, written at start-up) and ``config.yaml``; Composer writes ``checkpoints/latest-rank0.pt``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from gpt import GPT, GPTConfig
from core.errors import TokenizerError
from core.tokenizer import Tokenizer, load_tokenizer
from core.errors import CheckpointError

MODEL_FILE = "model.json"
LATEST = "latest-rank0.pt"


def save_model_config(run_dir: str, config: GPTConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    Path(run_dir, MODEL_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def read_model_config(run_dir: str | Path) -> GPTConfig:
    """The GPTConfig a run recorded when it started (``RUN/model.json``): what its checkpoints' weights fit."""
    model_file = Path(run_dir) / MODEL_FILE
    if not model_file.exists():
        raise CheckpointError(f"{model_file} is missing: point at a run folder made by gpt_pile_composer.py")
    return GPTConfig(**json.loads(model_file.read_text()))


def resolve_checkpoint(source: str) -> tuple[Path, Path]:
    """(run folder, checkpoint file) from a run folder or a checkpoint inside ``RUN/checkpoints/``."""
    path = Path(source)
    if is_sharded(path):  # an FSDP ep*-ba* folder (or a latest-rank0.pt link to one)
        return path.resolve().parent.parent, path.resolve()
    if path.is_dir():
        ckpt = path / "checkpoints" / LATEST
        if not ckpt.exists():
            raise CheckpointError(f"{path} has no checkpoint ({ckpt} is missing); train it first")
        return path, ckpt.resolve()
    if path.is_file():
        return path.resolve().parent.parent, path
    raise CheckpointError(f"{source} is neither a run folder nor a checkpoint file")


def is_sharded(path: Path) -> bool:
    """A torch.distributed.checkpoint folder (FSDP ``state_dict_type=sharded``): ``.distcp`` files + ``.metadata``."""
    return path.is_dir() and (path / ".metadata").is_file()


def load_gpt(source: str, map_location: str = "cpu") -> GPT:
    """The GPT (eval mode) of a run folder (its latest checkpoint), a checkpoint (monolithic ``.pt`` file or
    sharded FSDP folder), or a Hugging Face GPT-2 folder (config.json + model.safetensors)."""
    from evaluation.hf import is_hf_folder, load_hf_gpt  # evaluation.hf imports this module

    if is_hf_folder(source):
        return load_hf_gpt(source)
    run_dir, ckpt = resolve_checkpoint(source)
    model = GPT(read_model_config(run_dir))
    if ckpt.is_dir():
        _load_sharded(model, ckpt)
        return model.eval()
    try:
        state = torch.load(ckpt, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated zips and pickles raise many types
        raise CheckpointError(f"cannot read checkpoint {ckpt} ({type(e).__name__}: {e})") from None
    weights = {k.removeprefix("model."): v for k, v in state["state"]["model"].items()}
    model.load_state_dict(weights)
    return model.eval()


def _load_sharded(model: GPT, ckpt: Path) -> None:
    """Read a sharded FSDP checkpoint's weights into ``model`` in this one process (no process group).

    Composer saves ``{"state": {"model": {"model.<gpt key>": ...}, "optimizers": ...}}``; asking DCP for the
    model entries only reassembles each full tensor from every rank's shards, in place, and skips the optimizer.
    """
    import torch.distributed.checkpoint as dcp

    problem = readable(ckpt)
    if problem is not None:
        raise CheckpointError(f"{ckpt} is {problem}; point at an earlier checkpoint")
    state = {"state": {"model": {f"model.{k}": v for k, v in model.state_dict().items()}}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one process: on purpose
            dcp.load(state, checkpoint_id=str(ckpt), no_dist=True)
    except Exception as e:  # noqa: BLE001 - DCP wraps missing keys / size mismatches / IO in CheckpointException
        raise CheckpointError(f"cannot read sharded checkpoint {ckpt}: {str(e).splitlines()[0]} (does "
                              f"{ckpt.parent.parent / MODEL_FILE} describe this model?)") from None


def load_tokenizer_for(source: str) -> Tokenizer:
    """The tokenizer that goes with :func:`load_gpt`'s model: a run's (or its checkpoint's) dataset tokenizer,
    or the tokenizer saved in a Hugging Face folder."""
    from evaluation.hf import is_hf_folder

    path = Path(source)
    if is_hf_folder(path):
        try:
            return load_tokenizer(str(path))
        except TokenizerError as e:
            raise CheckpointError(f"{e}. The model folder {path} has no usable tokenizer: save one into it "
                                  "(tokenizer.save_pretrained) or pass a tokenizer explicitly") from None
    run_dir = path if (path / "config.yaml").is_file() else resolve_checkpoint(source)[0]
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir / 'config.yaml'} is missing: point at a run folder made by "
                              "gpt_pile_composer.py, a checkpoint inside one, or a Hugging Face model folder")
    return run_tokenizer(str(run_dir))


def run_tokenizer(run_dir: str) -> Tokenizer:
    """The tokenizer of the dataset a run trained on (read from the run's recorded config)."""
    from loaders.dataset import dataset_tokenizer  # imports Streaming (seconds): only when a run's tokenizer is read

    cfg = OmegaConf.load(os.path.join(run_dir, "config.yaml"))
    path: Optional[str] = cfg.data.path or next(iter(cfg.data.streams.values())).path
    return dataset_tokenizer(path, cfg.data.cache)


_CKPT = re.compile(r"^ep(\d+)-ba(\d+)(-rank0\.pt)?$")  # a monolithic file, or a sharded (FSDP) folder


def checkpoint_batch(name: str) -> Optional[int]:
    """The batch of a checkpoint named ``ep{E}-ba{B}-rank0.pt`` (or a sharded ``ep{E}-ba{B}`` folder), else None."""
    m = _CKPT.match(name)
    return int(m.group(2)) if m else None


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
    """Atomically (re)point a relative symlink."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target.name, tmp)
    os.replace(tmp, link)


def saved_fingerprint(path: str) -> Optional[dict]:
    """The ResumeGuard fingerprint stored in a monolithic checkpoint (memory-mapped: the weights are not read).
    None for a sharded folder: its callback state is only read by Composer's loader (ResumeGuard checks then)."""
    if os.path.isdir(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - truncated zips and pickles raise many types
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e})") from None
    return state.get("state", {}).get("callbacks", {}).get("ResumeGuard", {}).get("fingerprint")
