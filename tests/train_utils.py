"""Helpers for tests that run the real training script (in subprocesses, as users do)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
COMPOSER = str(Path(sys.executable).parent / "composer")
SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")


def paragraphs_jsonl(text: str, out: Path) -> Path:
    """Documents = blank-line separated paragraphs, one JSON line each (the Pile's layout)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for para in text.split("\n\n"):
            if para.strip():
                f.write(json.dumps({"text": para + "\n"}) + "\n")
    return out


def make_dataset(root: Path, text: str, seq_len: int = 32, val_fraction: float = 0.1,
                 tokenizer: str = "bytes") -> Path:
    from loaders.convert import convert

    src = paragraphs_jsonl(text, root / "src" / "docs.jsonl")
    out = root / "ds"
    convert([str(src)], str(out), tokenizer, seq_len, val_fraction=val_fraction, progress=False)
    return out


def train_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def tiny_args(ds: Path, runs: Path, *extra: str) -> list[str]:
    """A micro model that trains in seconds; later items override earlier ones."""
    return [
        "yamls/tiny.yaml", f"data.path={ds}", f"runs_root={runs}", "model.preset=micro",
        "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "global_train_batch_size=8",
        "device_train_microbatch_size=4", "progress_bar=false", "log_interval=1000ba",
        "eval_subset_num_batches=4", "scheduler.t_warmup=5ba", *extra,
    ]


def run_train(args: Sequence[str], nproc: int = 0, timeout: float = 300, check: bool = True,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python gpt_pile_composer.py ARGS` (nproc=0) or `composer -n NPROC gpt_pile_composer.py ARGS`."""
    launcher = [PYTHON] if nproc == 0 else [COMPOSER, "-n", str(nproc)]
    cmd = [*launcher, "gpt_pile_composer.py", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env or train_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
