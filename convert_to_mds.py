#!/usr/bin/env python
"""Convert text (.txt, .jsonl, .jsonl.zst) into a tokenized, packed MDS dataset for training.

    python convert_to_mds.py data/pile/*.jsonl.zst --out data/pile-mds --tokenizer gpt2 --seq-len 1024

Writes DIR/train (and DIR/val), DIR/tokenizer and DIR/metadata.json; DIR may be s3://bucket/prefix (converted
locally under TMPDIR, then uploaded with metadata.json last). Bad input is reported as one
``error: ...`` line on stderr with exit code 2; the work itself lives in :mod:`loaders.convert`.
"""
from __future__ import annotations

import argparse
import signal
import sys
import warnings
from pathlib import Path

from loaders.convert import convert
from loaders.errors import DataError
from loaders.metadata import DatasetMetadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, directories (searched recursively) or globs of .txt / .jsonl / .jsonl.zst")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output dataset folder, or s3://bucket/prefix (endpoint: S3_ENDPOINT_URL)")
    p.add_argument("--tokenizer", required=True, metavar="TOK",
                   help="'bytes', a folder with tokenizer.json or vocab.json + merges.txt, or a cached HF name")
    p.add_argument("--seq-len", required=True, type=int, metavar="N",
                   help="tokens the model reads per sample (each sample stores N + 1)")
    p.add_argument("--val-fraction", type=float, default=0.0005, metavar="F",
                   help="fraction of documents (by hash) put in the val split; 0 = no val split (default 0.0005)")
    p.add_argument("--text-key", default="text", metavar="K", help="JSON key holding the text (default: text)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (folder or bucket prefix)")
    p.add_argument("--compression", default="zstd", help="shard compression: zstd (default), br, gz, ... or none")
    p.add_argument("--size-limit", type=int, default=1 << 26, metavar="BYTES",
                   help="shard size limit in bytes (default 64 MiB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _summary(meta: DatasetMetadata, out: str) -> str:
    parts = [f"{name}: {s.samples} samples, {s.tokens} tokens, {s.documents} docs"
             for name, s in meta.splits.items()]
    return f"wrote {out} ({meta.dtype}, seq_len {meta.seq_len}): " + "; ".join(parts)


def _interrupted(out: str) -> str:
    if "://" in out:  # the upload may have begun: say what a reader will find there
        return (f"interrupted; local temporary files removed; if the upload had begun, {out} holds no "
                "metadata.json (not a finished dataset): re-run with --overwrite")
    return f"interrupted; partial output removed, {Path(out)} left as it was"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` cleans up like Ctrl-C does
    warnings.showwarning = _print_warning
    try:
        meta = convert(args.inputs, args.out, args.tokenizer, args.seq_len, val_fraction=args.val_fraction,
                       text_key=args.text_key, overwrite=args.overwrite, compression=args.compression,
                       size_limit=args.size_limit, progress=not args.no_progress)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: {_interrupted(args.out)}", file=sys.stderr)
        return 130
    print(_summary(meta, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
