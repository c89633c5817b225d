"""Load what a run saved, for the tools used after (or beside) training: its GPT with its latest checkpoint's
weights, and its dataset's tokenizer. Used by generate.py, eval.py, export_hf.py and the demo. A run folder holds
``model.json`` (the GPTConfig, written at start-up) and ``config.yaml``; Composer writes
``checkpoints/latest-rank0.pt``.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional

import torch

from core.errors import CheckpointError, DeviceError, TokenizerError
from core.runs import CONFIG_FILE
from core.tokenizer import Tokenizer, load_tokenizer
from gpt import GPT
from gpt_modern import build_gpt
from training.config import load_run_config
from training.resume.checkpoints import LATEST, MODEL_FILE, is_sharded, read_model_config, readable
from training.resume.init_from import is_hf_folder, load_hf_gpt

DEVICE = re.compile(r"cpu|cuda(?::(\d+))?")  # what --device takes


def pick_device(requested: Optional[str]) -> str:
    """The device generate.py and eval.py run the model on: ``--device`` as given, else CUDA when present, else CPU.
    Checked before anything loads, so a typo or a missing GPU is one line, not a traceback once the weights are in."""
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    match = DEVICE.fullmatch(requested)
    if match is None:
        raise DeviceError(f"--device {requested!r} is not a device; use cpu, cuda or cuda:N")
    if requested != "cpu" and not torch.cuda.is_available():
        raise DeviceError(f"--device {requested}: no CUDA device here; use --device cpu")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise DeviceError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA devices "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return requested


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


def load_gpt(source: str, map_location: str = "cpu") -> GPT:
    """The GPT (eval mode) of a run folder (its latest checkpoint), a checkpoint (monolithic ``.pt`` file or
    sharded FSDP folder), or a Hugging Face GPT-2 folder (config.json + model.safetensors)."""
    if is_hf_folder(source):
        return load_hf_gpt(source)
    run_dir, ckpt = resolve_checkpoint(source)
    model = build_gpt(read_model_config(run_dir))  # GPT-2's, or the modern one
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
    path = Path(source)
    if is_hf_folder(path):
        try:
            return load_tokenizer(str(path))
        except TokenizerError as e:
            raise CheckpointError(f"{e}. The model folder {path} has no usable tokenizer: save one into it "
                                  "(tokenizer.save_pretrained) or pass a tokenizer explicitly") from None
    run_dir = path if (path / CONFIG_FILE).is_file() else resolve_checkpoint(source)[0]
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir / CONFIG_FILE} is missing: point at a run folder made by "
                              "gpt_pile_composer.py, a checkpoint inside one, or a Hugging Face model folder")
    return run_tokenizer(str(run_dir))


def run_tokenizer(run_dir: str) -> Tokenizer:
    """The tokenizer of the dataset a run trained on (read from the run's recorded config)."""
    from loaders.dataset import dataset_tokenizer  # imports Streaming (seconds): only when a run's tokenizer is read

    cfg = load_run_config(run_dir)
    return dataset_tokenizer(cfg.data.roots()[0], cfg.data.cache, cfg.data.tokenizer)


