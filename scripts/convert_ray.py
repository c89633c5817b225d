#!/usr/bin/env python
"""Run a task conversion on a Ray cluster: one ``convert_to_mds.py --task I`` per task, then ``--merge`` here.

    python scripts/convert_ray.py --cpus-per-task 8 -- data/pile/*.jsonl.zst --out s3://bucket/pile-mds \\
        --tokenizer gpt2 --seq-len 2048 --num-tasks 30

Everything after ``--`` is ``convert_to_mds.py``'s own arguments (``--num-tasks`` required: it fixes the tasks). Ray
places each task on a machine with ``--cpus-per-task`` free CPUs (the task's ``--workers``); a task that fails is
retried there like any Ray task, and a finished one is never redone (its done marker). Connects to the cluster
``RAY_ADDRESS`` names (``ray start --head`` on one machine, ``ray start --address ...`` on the others), or starts a
local one. The inputs and ``--out`` must be reachable from every machine (a shared file system or a bucket).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.cli import ScriptParser, fail, reports_errors  # noqa: E402
from core.errors import OptionError  # noqa: E402

CONVERT = str(Path(__file__).resolve().parent.parent / "convert_to_mds.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ScriptParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpus-per-task", type=int, default=1, metavar="N", help="CPUs (tokenizer workers) per task")
    p.add_argument("convert_args", nargs=argparse.REMAINDER, help="-- then convert_to_mds.py's arguments")
    args = p.parse_args(argv)
    args.convert_args = [a for a in args.convert_args if a != "--"] if args.convert_args[:1] == ["--"] \
        else args.convert_args
    return args


def task_plan(convert_args: list[str]) -> tuple[int, str]:
    """``--num-tasks`` and ``--out`` from convert_to_mds.py's arguments (the script checks the rest)."""
    values = {}
    for flag in ("--num-tasks", "--out"):
        if flag not in convert_args or convert_args.index(flag) + 1 >= len(convert_args):
            raise OptionError(f"convert_ray.py needs {flag} among convert_to_mds.py's arguments (after --); e.g. "
                              "-- data/*.jsonl.zst --out DIR --tokenizer gpt2 --seq-len 1024 --num-tasks 8")
        values[flag] = convert_args[convert_args.index(flag) + 1]
    if not values["--num-tasks"].isdigit():
        raise OptionError(f"--num-tasks {values['--num-tasks']}: give a whole number of tasks")
    return int(values["--num-tasks"]), values["--out"]


def run_tasks_on_ray(convert_args: list[str], num_tasks: int, cpus: int) -> list[tuple[int, int, str]]:
    """Every task as a Ray task running the script: (task, exit code, last line of stderr) each."""
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=cpus)
    def convert_task(i: int) -> tuple[int, int, str]:
        proc = subprocess.run([sys.executable, CONVERT, *convert_args, "--task", str(i), "--workers", str(cpus),
                               "--no-progress"], capture_output=True, text=True)
        return i, proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]

    try:
        return ray.get([convert_task.remote(i) for i in range(num_tasks)])
    finally:
        ray.shutdown()


@reports_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    num_tasks, out = task_plan(args.convert_args)
    failed = [(i, line) for i, code, line in run_tasks_on_ray(args.convert_args, num_tasks, args.cpus_per_task)
              if code != 0]
    if failed:
        i, line = failed[0]
        return fail(f"{len(failed)} of {num_tasks} tasks failed; task {i}: {line.removeprefix('error: ')}")
    print(f"{num_tasks} tasks done on Ray; merging", flush=True)
    return subprocess.run([sys.executable, CONVERT, "--merge", out]).returncode


if __name__ == "__main__":
    sys.exit(main())
