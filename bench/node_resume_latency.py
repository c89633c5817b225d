"""Resume latency with 2 nodes on loopback: requeue (the same command again after a kill -9 of every launcher) to
the first new training step, per checkpoint layout and parallelism.

    .venv/bin/python bench/node_resume_latency.py [--repeats 2]

Two ``composer`` launchers on 127.0.0.1, each "node" in its own mount namespace with its own /dev/shm and TMPDIR
(tests/helpers.start_nodes, the same as the multi-node tests). Layouts: a shared run folder (checkpoints on the
shared disk), and node-local run folders with checkpoints in a bucket (moto's S3 server on 127.0.0.1). For each,
DDP (monolithic checkpoint) and FSDP (sharded). A run is killed once its step-20 checkpoint is saved (in the bucket
for the bucket layout) and step 22 is trained; the figure is the wall time from re-launching both nodes to the
first trained step after the checkpoint appearing in rank 0's metrics.jsonl, next to the same time for a fresh
start (launch to step 1) of the same command: their difference is what resuming costs.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import metrics_rows, prepare_data  # noqa: E402
from core.errors import RunFolderError  # noqa: E402
from tests import helpers  # noqa: E402
from tests.helpers import start_moto, start_nodes, tiny_args, wait_nodes  # noqa: E402

SAVED, KILL_AT = 20, 22


def node_args(ds: Path, runs: str, *extra: str) -> list[str]:
    return tiny_args(ds, runs, "run_name=r", "model.n_embd=128", "model.n_layer=4", "model.n_head=4",
                     "global_train_batch_size=16", "device_train_microbatch_size=8", f"max_duration={SAVED + 80}ba",
                     f"save_interval={SAVED}ba", "eval_interval=1000ba", "data.num_canonical_nodes=2", *extra)


def steps(run: Path) -> list[int]:
    try:
        return [r["step"] for r in metrics_rows(run)]
    except (RunFolderError, FileNotFoundError, ValueError):
        return []  # not written yet, or caught mid-write


def until(ready, procs, what: str, timeout: float = 240) -> float:
    """Poll ``ready()``; the time it became true. Fails if a launcher ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"error: a launcher ended before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {what}: not within {timeout} s")
        time.sleep(0.02)
    return time.perf_counter()


def kill(procs) -> None:
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait()


def one_round(ds: Path, work: Path, layout: str, parallelism: str, s3) -> tuple[float, float]:
    """(fresh start to step 1, requeue to step SAVED + 1), in seconds."""
    env, extra, runs = None, [f"parallelism={parallelism}"], str(work)
    if layout == "bucket":
        env, runs = s3.env(), "${oc.env:TMPDIR}/runs"
        extra.append(f"save_folder=s3://{s3.new_bucket()}/runs/{{run_name}}")
    run = work / "r" if layout == "shared" else work / "node0-tmp" / "runs" / "r"
    args = node_args(ds, runs, *extra)
    t0 = time.perf_counter()
    procs = start_nodes([args, args], work, env=env)
    fresh = until(lambda: 1 in steps(run), procs, "step 1") - t0
    until(lambda: max(steps(run), default=0) >= KILL_AT and saved(run, layout, parallelism, s3, extra), procs,
          f"step {KILL_AT} with the step-{SAVED} checkpoint saved ({layout}, {parallelism}; logs in {work})")
    kill(procs)
    t0, launched = time.perf_counter(), time.time()
    procs = start_nodes([args, args], work, env=env)
    # the resume first drops the rows past its checkpoint (an atomic rewrite), then appends the redone steps
    resumed = until(lambda: os.path.getmtime(run / "metrics.jsonl") > launched and SAVED + 1 in steps(run), procs,
                    f"step {SAVED + 1} after the requeue") - t0
    kill(procs)
    wait_nodes(procs, work)
    return fresh, resumed


def saved(run: Path, layout: str, parallelism: str, s3, extra: list[str]) -> bool:
    """Whether the step-SAVED checkpoint is where a requeue reads it (the bucket's pointer, for sharded ones)."""
    name = f"ep0-ba{SAVED}" + ("" if parallelism == "fsdp" else "-rank0.pt")
    if layout == "shared":
        return (run / "checkpoints" / "latest-rank0.pt").resolve().name == name
    bucket = extra[-1].split("/")[2]
    keys = s3.keys(bucket, "runs/r")
    if parallelism == "fsdp":
        return "latest-rank0.pt.symlink" in keys and s3.get(bucket, "runs/r/latest-rank0.pt.symlink").decode() \
            .endswith(name)
    return name in keys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="node-resume-") as tmp:
        root = Path(tmp)
        helpers._WORKDIR = root
        ds = prepare_data(root, seq_len=64, val_fraction=0.0)
        s3 = start_moto()
        try:
            for i in range(args.repeats):
                for layout in ("shared", "bucket"):
                    for parallelism in ("ddp", "fsdp"):
                        work = root / f"{layout}-{parallelism}-{i}"
                        work.mkdir()
                        results.setdefault((layout, parallelism), []).append(
                            one_round(ds, work, layout, parallelism, s3))
        finally:
            s3.server.stop()
    print(f"2 nodes x 1 rank on 127.0.0.1; median of {args.repeats}; seconds from launching both nodes")
    print(f"{'layout':<34}{'fresh -> step 1':>17}{'requeue -> step ' + str(SAVED + 1):>20}{'resume cost':>13}")
    for (layout, parallelism), rounds in results.items():
        fresh = statistics.median(r[0] for r in rounds)
        resumed = statistics.median(r[1] for r in rounds)
        name = {"shared": "shared run folder", "bucket": "node-local folders + bucket"}[layout]
        print(f"{name + ' x ' + parallelism:<34}{fresh:>17.2f}{resumed:>20.2f}{resumed - fresh:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
