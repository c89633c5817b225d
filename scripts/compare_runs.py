"""Compare runs that should differ only in their data (see README, "Comparing datasets").

    python scripts/compare_runs.py runs/pile-cc-only runs/pile-mixture --out cmp.png

Prints the config keys that differ and the data each run read, and plots train loss and val loss (the
mixture's and each stream's) of every run.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.cli import ScriptParser, reports_errors  # noqa: E402
from evaluation.compare import METRICS, plot_runs, report  # noqa: E402


@reports_errors
def main(argv: list[str]) -> int:
    parser = ScriptParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders ({runs_root}/{run_name})")
    parser.add_argument("--out", default="compare.png", help="the figure to write (default: compare.png)")
    parser.add_argument("--metric", default=METRICS[0], choices=METRICS, help="val metric to plot")
    args = parser.parse_args(argv)
    print(report(args.runs))
    print(f"figure: {plot_runs(args.runs, args.out, args.metric)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
