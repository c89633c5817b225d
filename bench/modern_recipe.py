"""The modern recipe against plain GPT-2 training, side by side in one run: time to the plain run's final val loss.

    .venv/bin/python bench/modern_recipe.py                 # 3 recipes x a 3-point lr sweep x 1,000 steps (CPU: long)
    .venv/bin/python bench/modern_recipe.py --no-sweep      # each recipe at its middle lr only
    .venv/bin/python bench/modern_recipe.py --cpu-smoke     # tiny: what the suite runs, so the script cannot rot

The data: the demo's corpus (this Python's standard library, byte-tokenized, as ``make demo`` builds it), seq 256,
large enough that no run repeats an epoch. The model: the ``nano`` shape (4 layers, 4 heads, 128 wide), 8,192 tokens a
step (Muon's extra Newton-Schulz FLOPs stay about 8 % of a step), ``precision=auto`` (bf16 where this CPU is faster
with it). Three recipes, each through our real trainer (``gpt_pile_composer.py``):

* plain: GPT-2 + AdamW + warmup/cosine (``optimizer.lr`` swept);
* muon-only: GPT-2 + Muon + WSD (``optimizer.muon.lr`` swept; AdamW's lr the plain sweep's best);
* modern: ``model.arch=modern`` + Muon + momentum warmup + WSD (``optimizer.muon.lr`` swept, same AdamW lr).

Plain trains ``--steps``; its best final val loss is the target. For each recipe's best lr: training seconds
(SpeedMonitor's ``time/train``: eval excluded) and steps until val first reaches the target, and tokens/s. Goal
(issue 21): modern / plain time to that loss <= 0.5.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import metrics_rows, step_end_times  # noqa: E402

VAL = "metrics/val/LanguageCrossEntropy"
RECIPES = {
    "plain": [],
    "muon-only": ["optimizer.name=muon", "scheduler.name=wsd"],
    "modern": ["model.arch=modern", "optimizer.name=muon", "scheduler.name=wsd",
               "optimizer.muon.momentum_warmup=100ba"],
}
SWEEPS = {"plain": ("optimizer.lr", (1e-3, 2e-3, 4e-3)),
          "muon-only": ("optimizer.muon.lr", (0.01, 0.02, 0.04)),
          "modern": ("optimizer.muon.lr", (0.01, 0.02, 0.04))}


@dataclass
class Run:
    recipe: str
    lr: float
    folder: Path
    vals: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    ends: list[float] = field(default_factory=list)  # training seconds at the end of steps 1..N

    def reach(self, target: float) -> Optional[tuple[int, float]]:
        """(step, training seconds) where val first reached ``target``; None if it never did."""
        step = next((s for s, v in self.vals if v <= target), None)
        return None if step is None else (step, self.ends[step - 1])


def prepare(work: Path, smoke: bool) -> Path:
    """The demo's standard-library corpus, byte-tokenized at seq 256 (enough text that no run repeats an epoch)."""
    from conversion.convert import convert
    from scripts.demo import stdlib_corpus

    corpus = stdlib_corpus(work / "stdlib.jsonl", limit_mb=1 if smoke else 12)
    out = work / "stdlib-bytes-256"
    convert([str(corpus)], str(out), tokenizer="bytes", seq_len=256, val_fraction=0.1 if smoke else 0.02,
            progress=False)
    return out


def train(ds: Path, work: Path, recipe: str, lr: float, steps: int, adamw_lr: float, smoke: bool) -> Run:
    key, _ = SWEEPS[recipe]
    name = f"{recipe}-{lr:g}"
    shape = ["model.preset=micro", "model.n_layer=2", "model.n_embd=32"] if smoke else ["model.preset=nano"]
    args = [str(ROOT / "yamls" / "tiny.yaml"), f"data.path={ds}", f"runs_root={work / 'runs'}", f"run_name={name}",
            *shape, "model.n_head=4", "global_train_batch_size=32", "device_train_microbatch_size=32",
            f"max_duration={steps}ba", f"eval_interval={max(1, steps // 20)}ba", "eval_subset_num_batches=8",
            f"save_interval={steps}ba", "precision=fp32" if smoke else "precision=auto", "progress_bar=false",
            f"scheduler.t_warmup={max(1, steps // 20)}ba", f"optimizer.lr={adamw_lr}", *RECIPES[recipe],
            f"{key}={lr}"]
    subprocess.run([sys.executable, str(ROOT / "gpt_pile_composer.py"), *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    rows = metrics_rows(work / "runs" / name)
    return Run(recipe, lr, work / "runs" / name, [(r["step"], r[VAL]) for r in rows if VAL in r],
               step_end_times(rows))


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.vals[-1][1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="plain's training steps (default 1000)")
    p.add_argument("--no-sweep", action="store_true", help="each recipe at its middle lr only")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model, 12 steps, no sweep (the suite's run)")
    args = p.parse_args()
    steps = 12 if args.cpu_smoke else args.steps
    with tempfile.TemporaryDirectory(prefix="modern-recipe-") as tmp:
        work = Path(tmp)
        ds = prepare(work, args.cpu_smoke)
        lrs = {r: (lrs[1],) if args.no_sweep or args.cpu_smoke else lrs for r, (_, lrs) in SWEEPS.items()}
        plain = [train(ds, work, "plain", lr, steps, lr, args.cpu_smoke) for lr in lrs["plain"]]
        winner = best(plain)
        results = {"plain": winner}
        for recipe in ("muon-only", "modern"):
            runs = [train(ds, work, recipe, lr, steps, winner.lr, args.cpu_smoke) for lr in lrs[recipe]]
            results[recipe] = best(runs)
        report(results, winner.vals[-1][1], steps)
    return 0


def report(results: dict[str, Run], target: float, steps: int) -> None:
    tokens = 32 * 256
    print(f"\ntarget: plain's final val loss after {steps} steps = {target:.4f} nats/byte")
    print(f"{'recipe':<10} {'lr':>8} {'final val':>10} {'steps to target':>16} {'train s to target':>18} "
          f"{'tokens/s':>9}")
    plain_s = results["plain"].ends[-1]
    for name, run in results.items():
        reached = run.reach(target)
        rate = tokens * len(run.ends) / run.ends[-1]
        where = f"{reached[0]:>16} {reached[1]:>18.1f}" if reached else f"{'not reached':>16} {'-':>18}"
        print(f"{name:<10} {run.lr:>8g} {run.vals[-1][1]:>10.4f} {where} {rate:>9.0f}")
    modern = results["modern"].reach(target)
    if modern:
        ratio = modern[1] / plain_s
        print(f"\nmodern / plain time to the target: {ratio:.2f} (goal <= 0.5)  {'ok' if ratio <= 0.5 else 'MISSED'}")
    else:
        print("\nmodern / plain time to the target: modern never reached it (goal <= 0.5)  MISSED")


if __name__ == "__main__":
    sys.exit(main())
