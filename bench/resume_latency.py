"""Resume latency: time to the first trained batch after resuming from step 10 vs step 1000 of one epoch.

    .venv/bin/python bench/resume_latency.py

Composer checkpoints the StreamingDataset's position and Streaming resumes there directly (no iterating the
dataloader forward), so resuming deep into an epoch must cost what resuming near its start does. Each figure is
the wall time of re-running the same command to train exactly one more step (process start to exit; best of
--repeats, each from a fresh copy of the run folder), next to what spinning the dataloader 1000 batches forward
would cost. Goal: resume(1000) / resume(10) <= 1.2.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import prepare_data  # noqa: E402

BASE = ["model.preset=micro", "global_train_batch_size=12", "device_train_microbatch_size=12", "progress_bar=false",
        "log_interval=100000ba", "eval_interval=100000ba", "scheduler.t_warmup=10ba", "run_name=r"]


def train(ds: Path, runs: Path, *extra: str) -> float:
    cmd = [sys.executable, str(ROOT / "gpt_pile_composer.py"), str(ROOT / "yamls" / "tiny.yaml"),
           f"data.path={ds}", f"runs_root={runs}", *BASE, *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def resume_time(ds: Path, saved: Path, step: int, work: Path, repeats: int) -> float:
    times = []
    for i in range(repeats):
        runs = work / f"resume-{step}-{i}"
        shutil.copytree(saved, runs / "r", symlinks=True)
        times.append(train(ds, runs, f"max_duration={step + 1}ba", f"save_interval={step + 1}ba"))
    return min(times)


def spin_time(ds: Path, batches: int) -> float:
    """What Composer's spin_dataloaders would do without dataset resumption: iterate the loader forward."""
    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec
    from loaders.shm import clean_stale_shared_memory

    clean_stale_shared_memory()
    loader = build_dataspec([StreamSource(str(ds))], "train", 12, LoaderSettings(shuffle_seed=17)).dataloader
    t0 = time.perf_counter()
    elapsed = None
    for i, _ in enumerate(loader):
        if i + 1 == batches:
            elapsed = time.perf_counter() - t0
    # (the epoch is read to its end, untimed, so Streaming's download threads finish before the folder goes)
    assert elapsed is not None, f"the epoch has fewer than {batches} batches"
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deep", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resume-latency-") as tmp:
        work = Path(tmp)
        ds = prepare_data(work, seq_len=64, val_fraction=0.0)
        near = work / "near"
        train(ds, near, "max_duration=10ba", "save_interval=10ba")
        deep = work / "deep"
        train(ds, deep, f"max_duration={args.deep}ba", f"save_interval={args.deep}ba")
        t_near = resume_time(ds, near / "r", 10, work, args.repeats)
        t_deep = resume_time(ds, deep / "r", args.deep, work, args.repeats)
        t_spin = spin_time(ds, args.deep)
    print(f"resume latency (process start to exit after 1 more step, best of {args.repeats})")
    print(f"  from step 10:          {t_near:6.2f} s")
    print(f"  from step {args.deep}:        {t_deep:6.2f} s")
    print(f"  ratio deep / near:     {t_deep / t_near:6.3f}  (goal <= 1.2)")
    print(f"  spinning {args.deep} batches forward instead would add {t_spin:.2f} s (measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
