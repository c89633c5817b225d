"""Find and load what a run saved: its GPT config, its latest checkpoint's weights, its dataset's tokenizer.

Used by the demo's sampling step (and later by generate/eval/export). A run folder holds ``model.json`` (the
GPTConfig, written at start-up) and ``config.yaml``; Composer writes ``checkpoints/latest-rank0.pt``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from gpt import GPT, GPTConfig
from loaders.dataset import dataset_tokenizer
from loaders.tokenizer import Tokenizer

MODEL_FILE = "model.json"
LATEST = "latest-rank0.pt"


class CheckpointError(Exception):
    """A run folder or checkpoint that cannot be loaded; the message names the file and the fix."""


def save_model_config(run_dir: str, config: GPTConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    Path(run_dir, MODEL_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def resolve_checkpoint(source: str) -> tuple[Path, Path]:
    """(run folder, checkpoint file) from a run folder or a checkpoint inside ``RUN/checkpoints/``."""
    path = Path(source)
    if path.is_dir():
        ckpt = path / "checkpoints" / LATEST
        if not ckpt.exists():
            raise CheckpointError(f"{path} has no checkpoint ({ckpt} is missing); train it first")
        return path, ckpt.resolve()
    if path.is_file():
        return path.resolve().parent.parent, path
    raise CheckpointError(f"{source} is neither a run folder nor a checkpoint file")


def load_gpt(source: str, map_location: str = "cpu") -> GPT:
    """The GPT with a run's latest (or the given) checkpoint's weights, in eval mode."""
    run_dir, ckpt = resolve_checkpoint(source)
    model_file = run_dir / MODEL_FILE
    if not model_file.exists():
        raise CheckpointError(f"{model_file} is missing: point at a run folder made by gpt_pile_composer.py")
    model = GPT(GPTConfig(**json.loads(model_file.read_text())))
    try:
        state = torch.load(ckpt, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated zips and pickles raise many types
        raise CheckpointError(f"cannot read checkpoint {ckpt} ({type(e).__name__}: {e})") from None
    weights = {k.removeprefix("model."): v for k, v in state["state"]["model"].items()}
    model.load_state_dict(weights)
    return model.eval()


def run_tokenizer(run_dir: str) -> Tokenizer:
    """The tokenizer of the dataset a run trained on (read from the run's recorded config)."""
    cfg = OmegaConf.load(os.path.join(run_dir, "config.yaml"))
    path: Optional[str] = cfg.data.path or next(iter(cfg.data.streams.values())).path
    return dataset_tokenizer(path, cfg.data.cache)


@torch.no_grad()
def sample(model: GPT, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 200,
           temperature: float = 0.8, top_k: Optional[int] = 40, seed: int = 0) -> str:
    """Continue ``prompt``; seeded so the demo prints the same text on every machine."""
    torch.manual_seed(seed)
    ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
    out = model.generate(torch.tensor([ids]), max_new_tokens, temperature=temperature, top_k=top_k)
    return tokenizer.decode(out[0].tolist())
