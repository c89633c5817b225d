"""The modern recipe against plain GPT-2 training, side by side in one run: time to the plain run's final val loss.

    .venv/bin/python bench/modern_recipe.py                 # 3 recipes x a 3-point lr sweep x 1,000 steps (CPU: long)
    .venv/bin/python bench/modern_recipe.py --no-sweep      # each recipe at its middle lr only
    .venv/bin/python bench/modern_recipe.py --cpu-smoke     # tiny: what the suite runs, so the script cannot rot
    .venv/bin/python bench/modern_recipe.py --work DIR      # keep the runs in DIR; a re-run reuses the finished ones

On 2 cores, one run per core (each pinned, one thread): plain's sweep first (its best lr is the Muon recipes' AdamW
lr), then one Muon recipe per core, stopped at a guess at or below plain's final loss, then the report, which reuses
every run (the figures in BENCHMARKS.md were taken this way)::

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python bench/modern_recipe.py --work W --only plain
    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/modern_recipe.py --work W --only muon-only --stop-at 1.10 \
        --adamw-lr 4e-3 &
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python bench/modern_recipe.py --work W --only modern --stop-at 1.10 \
        --adamw-lr 4e-3
    .venv/bin/python bench/modern_recipe.py --work W --adamw-lr 4e-3        # the report (reruns a run stopped too soon)

The data: the demo's corpus (this Python's standard library, byte-tokenized, as ``make demo`` builds it), seq 256,
large enough that no run repeats an epoch. The model: the ``nano`` shape (4 layers, 4 heads, 128 wide), 8,192 tokens a
step (Muon's extra Newton-Schulz FLOPs stay about 8 % of a step), ``precision=auto`` (bf16 where this CPU is faster
with it). Three recipes, each through our real trainer (``gpt_pile_composer.py``):

* plain: GPT-2 + AdamW + warmup/cosine (``optimizer.lr`` swept);
* muon-only: GPT-2 + Muon + WSD (``optimizer.muon.lr`` swept; AdamW's lr the plain sweep's best);
* modern: ``model.arch=modern`` + Muon + momentum warmup + WSD (``optimizer.muon.lr`` swept, same AdamW lr).

Plain trains ``--steps``; its best final val loss is the target. The other runs keep the same ``--steps`` schedule
but stop once val reaches the target (what follows cannot change when they reached it); each recipe's best lr is the
one that reached it soonest. For each recipe's best lr: training seconds (SpeedMonitor's ``time/train``: eval
excluded) and steps until val first reaches the target (val every 1/40 of the steps), and tokens/s. Goal (issue
21): modern / plain time to that loss <= 0.5.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import metrics_rows, step_end_times  # noqa: E402

VAL = "metrics/val/LanguageCrossEntropy"
STOPPED = "stopped-at-target"  # written in a run folder stopped once it reached the target
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

    out = work / "stdlib-bytes-256"
    if (out / "metadata.json").exists():
        return out
    corpus = stdlib_corpus(work / "stdlib.jsonl", limit_mb=1 if smoke else 12)
    convert([str(corpus)], str(out), tokenizer="bytes", seq_len=256, val_fraction=0.1 if smoke else 0.02,
            progress=False)
    return out


def train(ds: Path, work: Path, recipe: str, lr: float, steps: int, adamw_lr: float, smoke: bool,
          stop_at: Optional[float] = None) -> Run:
    """One run through our trainer. With ``stop_at``, the run is stopped once its val loss reaches it (the schedule
    is still the ``steps``-step one: stopping early changes nothing before the stop)."""
    key, _ = SWEEPS[recipe]
    name = f"{recipe}-{lr:g}" if recipe == "plain" else f"{recipe}-{lr:g}-adamw{adamw_lr:g}"
    shape = ["model.preset=micro", "model.n_layer=2", "model.n_embd=32"] if smoke else ["model.preset=nano"]
    args = [str(ROOT / "yamls" / "tiny.yaml"), f"data.path={ds}", f"runs_root={work / 'runs'}", f"run_name={name}",
            *shape, "model.n_head=4", "global_train_batch_size=32", "device_train_microbatch_size=32",
            f"max_duration={steps}ba", f"eval_interval={max(1, steps // 40)}ba", "eval_subset_num_batches=8",
            f"save_interval={steps}ba", "precision=fp32" if smoke else "precision=auto", "progress_bar=false",
            f"scheduler.t_warmup={max(1, steps // 20)}ba", f"optimizer.lr={adamw_lr}", *RECIPES[recipe],
            f"{key}={lr}"]
    run_dir = work / "runs" / name
    if not finished(run_dir, steps, stop_at):
        shutil.rmtree(run_dir, ignore_errors=True)  # a run cut off by a killed benchmark starts over
        proc = subprocess.Popen([sys.executable, str(ROOT / "gpt_pile_composer.py"), *args], cwd=ROOT,
                                stdout=subprocess.DEVNULL)
        while proc.poll() is None:
            if stop_at is not None and reached(run_dir, stop_at):
                proc.terminate()
                proc.wait()
                (run_dir / STOPPED).write_text(f"{stop_at}\n")
                break
            time.sleep(2)
        if proc.returncode not in (0, None) and not (run_dir / STOPPED).exists():
            raise subprocess.CalledProcessError(proc.returncode, proc.args)
    rows = metrics_rows(run_dir)
    return Run(recipe, lr, run_dir, [(r["step"], r[VAL]) for r in rows if VAL in r], step_end_times(rows))


def reached(run_dir: Path, target: float) -> bool:
    rows = metrics_rows(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    return any(r.get(VAL, float("inf")) <= target for r in rows)


def finished(run_dir: Path, steps: int, target: Optional[float]) -> bool:
    """Whether a kept run (``--work``) already trained all ``steps`` or was stopped at or below ``target``: a re-run
    of the benchmark reuses it."""
    if (run_dir / STOPPED).exists():
        return target is None or float((run_dir / STOPPED).read_text()) <= target
    if not (run_dir / "metrics.jsonl").exists():
        return False
    return len(step_end_times(metrics_rows(run_dir))) >= steps


def best(runs: list[Run], target: Optional[float] = None) -> Run:
    """Plain's best: the lowest final val loss. The others' (``target`` given): the least training time to it, then
    the lowest last val loss among those that never reached it."""
    if target is None:
        return min(runs, key=lambda r: r.vals[-1][1])
    return min(runs, key=lambda r: (0, r.reach(target)[1]) if r.reach(target) else (1, r.vals[-1][1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="plain's training steps (default 1000)")
    p.add_argument("--no-sweep", action="store_true", help="each recipe at its middle lr only")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model, 12 steps, no sweep (the suite's run)")
    p.add_argument("--work", type=Path, help="keep the dataset and runs here (default: a temporary folder)")
    p.add_argument("--adamw-lr", type=float, help="the Muon recipes' AdamW lr (embeddings, head, learned mixes); "
                                                   "default: plain's best")
    p.add_argument("--only", choices=tuple(SWEEPS), help="one recipe's sweep (no report): e.g. plain on one core, "
                                                          "the others on the other with --stop-at")
    p.add_argument("--stop-at", type=float, metavar="LOSS",
                   help="stop the Muon recipes' runs at LOSS (a guess at or below plain's final val loss) instead of "
                        "at plain's, so that they run beside plain's sweep; the report reruns any run stopped too soon")
    args = p.parse_args()
    recipes = (args.only,) if args.only else tuple(SWEEPS)
    if "plain" not in recipes and None in (args.stop_at, args.adamw_lr):
        print("error: the Muon recipes without plain's sweep need --stop-at and --adamw-lr (e.g. --stop-at 1.17 "
              "--adamw-lr 2e-3)", file=sys.stderr)
        return 2
    steps = 12 if args.cpu_smoke else args.steps
    with tempfile.TemporaryDirectory(prefix="modern-recipe-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ds = prepare(work, args.cpu_smoke)
        lrs = {r: (lrs[1],) if args.no_sweep or args.cpu_smoke else lrs for r, (_, lrs) in SWEEPS.items()}
        sweep = {}
        if "plain" in recipes:
            sweep["plain"] = [train(ds, work, "plain", lr, steps, lr, args.cpu_smoke) for lr in lrs["plain"]]
        target = best(sweep["plain"]).vals[-1][1] if "plain" in sweep else None
        adamw_lr, stop = args.adamw_lr or best(sweep["plain"]).lr, args.stop_at or target
        for recipe in (r for r in recipes if r != "plain"):
            sweep[recipe] = [train(ds, work, recipe, lr, steps, adamw_lr, args.cpu_smoke, stop_at=stop)
                             for lr in lrs[recipe]]
        if len(sweep) == len(SWEEPS):
            report(sweep, target, steps, adamw_lr)
    return 0


def report(sweep: dict[str, list[Run]], target: float, steps: int, adamw_lr: float) -> None:
    """Every run of the sweep, then each recipe's best and the ratio the goal is about."""
    print(f"\ntarget: plain's best final val loss after {steps} steps = {target:.4f} nats/byte")
    print(f"the Muon recipes' AdamW lr: {adamw_lr:g} (plain's best: {best(sweep['plain']).lr:g})")
    print(f"{'recipe':<10} {'lr':>8} {'last val':>9} {'steps to target':>16} {'train s to target':>18} "
          f"{'tokens/s':>9}  best")
    winners = {name: best(runs, None if name == "plain" else target) for name, runs in sweep.items()}
    for name, runs in sweep.items():
        for run in runs:
            reached = run.reach(target)
            rate = 32 * 256 * len(run.ends) / run.ends[-1]
            where = f"{reached[0]:>16} {reached[1]:>18.1f}" if reached else f"{'not reached':>16} {'-':>18}"
            print(f"{name:<10} {run.lr:>8g} {run.vals[-1][1]:>9.4f} {where} {rate:>9.0f}  "
                  f"{'*' if run is winners[name] else ''}")
    plain, modern = winners["plain"].reach(target), winners["modern"].reach(target)
    for name in ("muon-only", "modern"):
        got = winners[name].reach(target)
        line = f"{got[1] / plain[1]:.2f}" if got and plain else "never reached"
        print(f"{name} / plain time to the target: {line}")
    ratio = modern[1] / plain[1] if modern and plain else None
    print(f"goal modern / plain <= 0.5: {'ok' if ratio is not None and ratio <= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
