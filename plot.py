"""Loss curves of one or more runs on one PNG: train loss (smoothed), the val loss, and each stream's val loss.

    python plot.py runs/pile-cc-only runs/pile-mixture --out curves.png [--metric BitsPerByte]

Reads each run folder's metrics.jsonl (a run still training, or killed, is fine). To also see which config keys
and data differ between the runs, use scripts/compare_runs.py.
"""
from __future__ import annotations

import sys

from core.cli import ScriptParser, reports_errors
from evaluation.compare import METRICS, plot_runs


@reports_errors
def main(argv: list[str]) -> int:
    parser = ScriptParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders ({runs_root}/{run_name})")
    parser.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    parser.add_argument("--metric", default=METRICS[0], choices=METRICS, help="val metric to plot")
    args = parser.parse_args(argv)
    print(f"wrote {plot_runs(args.runs, args.out, args.metric)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
