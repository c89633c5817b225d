#!/usr/bin/env python
"""Convert text (.txt, JSON lines, parquet, saved or Hub datasets) into a tokenized, packed MDS dataset.

    python convert_to_mds.py data/pile/*.jsonl.zst --out data/pile-mds --tokenizer gpt2 --seq-len 1024 --workers 0
    python convert_to_mds.py --verify data/pile-mds

Writes DIR/train (and DIR/val), DIR/tokenizer and DIR/metadata.json (with --group-by, one such dataset per group
under DIR/<group> and DIR/groups.json); DIR may be s3://bucket/prefix (converted locally under TMPDIR, then
uploaded with metadata.json last). Bad input is reported as one ``error: ...`` line on stderr with exit code 2;
the work itself lives in :mod:`conversion.convert` and :mod:`conversion.verify`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

from conversion.convert import Conversion, ConvertRequest, HFSource, run
from conversion.groups import summary_table
from core.cli import ScriptParser, fail, reports_errors
from core.errors import OptionError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ScriptParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="files, directories (searched recursively) or globs of .txt / .jsonl(.zst/.gz) / .json.gz / "
                        ".parquet, or folders saved by datasets' save_to_disk")
    p.add_argument("--out", metavar="DIR", help="output dataset folder, or s3://bucket/prefix (endpoint: "
                                                "S3_ENDPOINT_URL)")
    p.add_argument("--tokenizer", metavar="TOK",
                   help="'bytes', 'gpt2', 'chars' (the corpus's characters, as nanoGPT's shakespeare_char), a folder "
                        "with tokenizer.json or vocab.json + merges.txt, or a cached HF name")
    p.add_argument("--tokenizer-backend", choices=("auto", "hf", "tiktoken"), default="auto",
                   help="what encodes: for GPT-2's BPE tiktoken (auto; 3-4x faster, the same ids) or the HF "
                        "tokenizer (hf); every other tokenizer: hf. The output is the same bytes either way")
    p.add_argument("--seq-len", type=int, metavar="N", help="tokens the model reads per sample (each sample "
                                                            "stores N + 1)")
    p.add_argument("--val-fraction", type=float, default=0.0005, metavar="F",
                   help="fraction of documents (by hash) put in the val split; 0 = no val split (default 0.0005)")
    p.add_argument("--text-key", default="text", metavar="K", help="JSON key holding the text (default: text)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="tokenizer processes (default 1; 0 = one per core); the output is the same for any N")
    p.add_argument("--group-by", metavar="KEY", help="one dataset per value of this (dotted) key, e.g. "
                                                     "meta.pile_set_name, under DIR/<value>")
    p.add_argument("--skip-bad", action="store_true", help="skip bad records (counted and reported at the end) "
                                                           "instead of stopping at the first")
    p.add_argument("--hf-dataset", metavar="NAME", help="stream this Hugging Face Hub dataset instead of INPUTs")
    p.add_argument("--hf-config", metavar="C", help="its config (subset)")
    p.add_argument("--hf-split", default="train", metavar="S", help="its split (default: train)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (folder or bucket prefix)")
    p.add_argument("--compression", default="zstd", help="shard compression: zstd (default), br, gz, ... or none")
    p.add_argument("--size-limit", type=int, default=1 << 26, metavar="BYTES",
                   help="shard size limit in bytes (default 64 MiB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify", metavar="DIR", help="check a converted dataset against the hashes and counts "
                                                   "recorded at write time, then exit")
    p.add_argument("--num-tasks", type=int, metavar="T",
                   help="cut the input files into T tasks (whole files, balanced by size; default with --task: one "
                        "per GiB of input). Alone: convert every task here, then merge")
    p.add_argument("--task", metavar="I", help="convert only task I (or I-J, a comma list, all) into OUT, for "
                                               "--merge later; e.g. --task $SLURM_ARRAY_TASK_ID")
    p.add_argument("--merge", metavar="DIR", help="join the finished tasks in DIR into one dataset (run once, when "
                                                  "every task is done), then exit")
    return p.parse_args(argv)


def request_from(args: argparse.Namespace) -> ConvertRequest:
    """The conversion the arguments ask for, or an OptionError naming what is missing."""
    missing = [flag for flag, value in (("--out", args.out), ("--tokenizer", args.tokenizer),
                                        ("--seq-len", args.seq_len)) if value is None]
    if missing:
        raise OptionError(f"{', '.join(missing)} required; e.g. convert_to_mds.py data/*.jsonl.zst --out DIR "
                          "--tokenizer gpt2 --seq-len 1024")
    if args.hf_dataset is None and (args.hf_config is not None or args.hf_split != "train"):
        raise OptionError("--hf-config / --hf-split need --hf-dataset NAME")
    hf = HFSource(args.hf_dataset, args.hf_config, args.hf_split) if args.hf_dataset else None
    return ConvertRequest(tuple(args.inputs), args.out, args.tokenizer, args.seq_len, args.val_fraction,
                          args.text_key, args.compression, args.size_limit, args.workers, args.group_by,
                          args.skip_bad, hf, args.overwrite, not args.no_progress, args.tokenizer_backend)


def _alone(flag: str, args: argparse.Namespace) -> None:
    """--verify DIR and --merge DIR read an output: no inputs or conversion arguments beside them."""
    extra = [name for name, value in (("INPUT", args.inputs), ("--out", args.out), ("--task", args.task),
                                      ("--num-tasks", args.num_tasks)) if value]
    if extra:
        raise OptionError(f"{flag} DIR takes no {' or '.join(extra)}; e.g. convert_to_mds.py {flag} DIR")


def verify_main(args: argparse.Namespace) -> int:
    from conversion.verify import verify

    _alone("--verify", args)
    report = verify(args.verify)
    if report.ok:
        print(report.summary())
        return 0
    for problem in report.problems:
        print(problem)
    print(f"error: {args.verify}: {len(report.problems)} problem(s) found; {report.fix()}",
          file=sys.stderr)
    return 2


def merge_main(args: argparse.Namespace) -> int:
    from conversion.tasks import merge

    _alone("--merge", args)
    conv = merge(args.merge)
    print("merged: " + _summary(conv, args.merge))
    return 0


def tasks_main(args: argparse.Namespace) -> int:
    from conversion.tasks import run_tasks

    run = run_tasks(request_from(args), args.task, args.num_tasks)
    did = f"{len(run.converted)} converted" + (f", {len(run.skipped)} already done" if run.skipped else "")
    if run.merged is not None:
        print(f"{run.num_tasks} tasks ({did}), merged: " + _summary(run.merged, args.out))
    else:
        print(f"tasks {args.task} of {run.num_tasks} in {args.out} ({did}); when all {run.num_tasks} are done: "
              f"convert_to_mds.py --merge {args.out}")
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _summary(conv: Conversion, out: str) -> str:
    if conv.skipped:
        return f"{out}: already converted with these arguments; nothing to do"
    if conv.groups is not None:
        return (f"wrote {out}: {len(conv.datasets)} groups ({conv.groups['group_by']}) in {out}/<group>, "
                f"listed in {out}/groups.json\n" + summary_table(conv.groups["groups"], conv.groups["dropped"]))
    meta = conv.metadata
    parts = [f"{name}: {s.samples} samples, {s.tokens} tokens, {s.documents} docs" for name, s in meta.splits.items()]
    return f"wrote {out} ({meta.dtype}, seq_len {meta.seq_len}): " + "; ".join(parts)


def _interrupted(out: str) -> str:
    if "://" in out:  # the upload may have begun: say what a reader will find there
        return (f"interrupted; local temporary files removed; if the upload had begun, {out} holds no "
                "metadata.json (not a finished dataset): re-run with --overwrite")
    return f"interrupted; partial output removed, {Path(out)} left as it was"


@reports_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` cleans up like Ctrl-C does
    warnings.showwarning = _print_warning
    try:
        if args.verify is not None:
            return verify_main(args)
        if args.merge is not None:
            return merge_main(args)
        if args.task is not None or args.num_tasks is not None:
            return tasks_main(args)
        conv = run(request_from(args))
    except KeyboardInterrupt:
        fail(_interrupted(args.out or ""))
        return 130
    print(_summary(conv, args.out))
    if conv.bad is not None:
        print(conv.bad.summary())
    return 0


def _exit_now(code: int) -> None:
    """Exit without tearing down the interpreter: everything is written and closed by now, and unloading the
    torch / transformers modules that streaming imports takes over a second for nothing. The atexit hooks still
    run: torch's import made a temporary folder that only its finalizer removes."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _no_torch_for_tokenizers() -> None:
    """Tokenizers need transformers, not torch; told so (before it is first imported), transformers starts in 1 s
    instead of 3 s and the workers begin that much sooner. Streaming still imports torch, at the first sample, while
    the workers are busy. Only when run as a script: an importer's transformers must keep its torch."""
    os.environ.setdefault("USE_TORCH", "0")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # its "no PyTorch found" notice


if __name__ == "__main__":
    _no_torch_for_tokenizers()
    _exit_now(main())
