"""Evaluate a checkpoint: val metrics on any dataset split, or HellaSwag-format multiple choice.

    python eval.py runs/tiny                            # the run's own val split: its metrics/val/* at that step
    python eval.py runs/tiny --data data/other --split val --json
    python eval.py runs/pile --stream Github            # one stream of the run's data.streams mixture
    python eval.py runs/tiny/checkpoints/ep0-ba500-rank0.pt --max-batches 50
    python eval.py hf/gpt2 --hellaswag hellaswag_val.jsonl
    python eval.py hf/gpt2 --hellaswag hellaswag_val.jsonl --per-item scores.jsonl   # each item's losses, picks
    python eval.py runs/tiny --data /data/c4-foundry --tokenizer gpt2   # a dataset made by llm-foundry

SOURCE is a run folder (its latest checkpoint), a checkpoint file or sharded folder, or a Hugging Face folder.
"""
from __future__ import annotations

import argparse
import json
import sys

from core.cli import ScriptParser, fail, reports_errors

METRICS = (  # (key, label, format)
    ("LanguageCrossEntropy", "loss (nats/token)", "{:.6f}"),
    ("LanguagePerplexity", "perplexity", "{:.4f}"),
    ("BitsPerByte", "bits/byte", "{:.6f}"),
    ("TokenAccuracy", "token accuracy", "{:.6f}"),
    ("tokens", "target tokens", "{:,}"),
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ScriptParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="run folder, checkpoint (file or sharded folder), or Hugging Face folder")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--data", help="dataset root made by convert_to_mds.py (folder or s3://...); "
                                     "default: the run's own data")
    what.add_argument("--stream", help="a stream of the run's data.streams mixture, by name")
    what.add_argument("--hellaswag", metavar="FILE.jsonl", help='multiple choice: lines {"ctx", "endings", "label"}')
    parser.add_argument("--per-item", metavar="OUT.jsonl", help="--hellaswag: also write each item's ending losses "
                                                                "and picks, one line per item")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--batch-size", type=int, help="samples per forward (default: the run's eval batch size)")
    parser.add_argument("--max-batches", type=int, help="stop after N batches (--hellaswag: N items); default all")
    parser.add_argument("--tokenizer", help="the tokenizer of a --data dataset made by llm-foundry (it has no "
                                            "metadata.json): gpt2, a folder...; default: the run's data.tokenizer")
    parser.add_argument("--cache", help="local folder for a remote dataset's shards (default: RUN/data_cache/eval)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present, else cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser.parse_args(argv)


def validate(args: argparse.Namespace) -> str | None:
    """The problem with the options, if any."""
    for key in ("batch_size", "max_batches"):
        value = getattr(args, key)
        if value is not None and value <= 0:
            return f"--{key.replace('_', '-')} must be a positive integer, got {value}"
    if args.hellaswag and (args.split != "val" or args.batch_size or args.cache or args.tokenizer):
        return ("--split, --batch-size, --cache and --tokenizer are for dataset evaluation; --hellaswag takes none "
                "of them")
    if args.per_item and not args.hellaswag:
        return "--per-item goes with --hellaswag"
    return None


def report(result: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps(result)
    if "hellaswag" in result:
        return (f"{result['source']} on {result['hellaswag']}: acc_norm {result['acc_norm']:.4f}  "
                f"acc {result['acc']:.4f}  acc_norm_tokens {result['acc_norm_tokens']:.4f}  ({result['items']} items)")
    lines = [f"{result['source']} on {result['data']} ({result['split']} split)"]
    lines += [f"  {label:<18} {fmt.format(result[key])}" for key, label, fmt in METRICS]
    return "\n".join(lines)


@reports_errors
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    problem = validate(args)
    if problem:
        return fail(problem)
    from evaluation.checkpoints import load_gpt, pick_device
    from evaluation.evaluate import evaluate_choices, evaluate_lm

    device = pick_device(args.device)  # before the weights load
    model = load_gpt(args.source).to(device).eval()
    if args.hellaswag:
        result = evaluate_choices(args.source, model, args.hellaswag, args.max_batches, args.per_item)
    else:
        result = evaluate_lm(args.source, model, args.data, args.stream, args.split, args.batch_size,
                             args.max_batches, args.cache, args.tokenizer)
    print(report(result, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
