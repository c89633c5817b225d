"""Compare runs that should differ only in their data (see README, "Comparing datasets").

    python scripts/compare_runs.py runs/pile-cc-only runs/pile-mixture --out cmp.png

Prints the config keys that differ and the data each run read, and plots train loss and val loss (the
mixture's and each stream's) of every run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.errors import DataError  # noqa: E402
from evaluation.compare import METRICS, plot_runs, report  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders ({runs_root}/{run_name})")
    parser.add_argument("--out", default="compare.png", help="the figure to write (default: compare.png)")
    parser.add_argument("--metric", default=METRICS[0], choices=METRICS, help="val metric to plot")
    args = parser.parse_args(argv)
    try:
        print(report(args.runs))
        print(f"figure: {plot_runs(args.runs, args.out, args.metric)}")
    except (FileNotFoundError, DataError) as e:  # no metrics.jsonl or config.yaml; a bad data/*/metadata.json
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
