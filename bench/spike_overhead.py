"""What loss-spike recovery (``spike.enabled``, callbacks/spike.py) costs a run that has no spike.

    .venv/bin/python bench/spike_overhead.py [--repeats 3] [--steps 40]

Our trainer as users run it (bench/train_throughput.py's model and data: the mini preset, seq 256, batch 8, fp32),
with ``spike.enabled=true`` and ``=false``, each in its own process, interleaved, checkpoints every 10 steps in
both (the non-finite guard checks the weights and optimizer state when a save is due), best of ``--repeats``.
Throughput: tokens/s from the end of step ``--warmup`` to the last step (SpeedMonitor's ``time/train``).
Goal: enabled / disabled within noise, >= 0.995.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import prepare_data, timed_rate  # noqa: E402
from bench.train_throughput import BATCH, SEQ, run_trainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs of runs; best of each is kept")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        ds = prepare_data(work, seq_len=SEQ)
        rates: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeats):
            for enabled in (True, False) if i % 2 == 0 else (False, True):
                runs = work / f"runs-{enabled}-{i}"
                res = run_trainer(ds, runs, args.steps, "fp32", f"spike.enabled={str(enabled).lower()}",
                                  "save_interval=10ba", "save_num_checkpoints_to_keep=1")
                rates[enabled].append(timed_rate(res["ends"], args.warmup, BATCH * SEQ)[0])
                shutil.rmtree(runs)
    on, off = max(rates[True]), max(rates[False])
    print(f"spike.enabled=true   {on:8.0f} tokens/s  (runs: {', '.join(f'{r:.0f}' for r in rates[True])})")
    print(f"spike.enabled=false  {off:8.0f} tokens/s  (runs: {', '.join(f'{r:.0f}' for r in rates[False])})")
    print(f"enabled / disabled: {on / off:.4f}  (goal >= 0.995, within noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
