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
SHAKESPEARE = REPO / "assets" / "tinyshakespeare.txt"  # shipped with the project: no ../shared needed


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
    from conversion.convert import convert

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


def start_train(args: Sequence[str], log: Path, nproc: int = 0) -> subprocess.Popen:
    """Start a training run in its own process group (so a test can SIGKILL all of it), output to ``log``."""
    launcher = [PYTHON] if nproc == 0 else [COMPOSER, "-n", str(nproc)]
    out = open(log, "w")
    return subprocess.Popen([*launcher, "gpt_pile_composer.py", *args], cwd=REPO, env=train_env(), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240, poll: float = 0.002) -> None:
    """SIGKILL the run's whole process group as soon as ``ready()`` is true."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before the kill point")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the kill point never came")
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def last_step(run_dir: Path) -> int:
    """The last complete row of metrics.jsonl (0 when none), read as a tailing process would."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError):
            continue
    return 0


def final_weights(run_dir: Path) -> dict:
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "latest-rank0.pt", map_location="cpu", weights_only=False)
    return ckpt["state"]["model"]
