"""Loader throughput: tokens/s our loader serves vs nanoGPT's np.memmap random windows, and vs what training eats.

    .venv/bin/python bench/loader_throughput.py [--copies 4] [--repeats 3] [--train-tokens-per-s N]

Data: Tiny Shakespeare (assets/) repeated ``--copies`` times, converted by our converter at seq 256 with the bytes
tokenizer (zstd shards, as users get them). Batches of 8 (the 384-dim model's batch in bench/train_throughput.py).

* ours: ``loaders.dataset.build_dataspec`` over the local dataset, shuffle on (Streaming's py1e), with
  ``num_workers`` 0 and 2: the DataLoader the trainer iterates, yielding ``input_ids``, ``labels`` (B, 256) int64
  and ``sample_ids``. Each process serves ``--epochs`` epochs; the first includes start-up (shuffle, worker start,
  Streaming's one-off decompression of the shards), later ones are the steady state.
* nanoGPT: its ``get_batch`` on a flat uint16 file of the same tokens (the train split's samples, in order): a
  fresh ``np.memmap`` per batch, 8 random offsets, ``torch.from_numpy(...astype(np.int64))`` stacked for x and y.

Each runs in its own process, interleaved, best of ``--repeats``. Reported: tokens/s served (input tokens of the
batches, per second of wall time), ours / memmap (goal >= 0.5), and served / consumed by training (goal >= 50x),
where consumed is ``--train-tokens-per-s`` or, by default, measured here: the best step of a plain bf16 training
loop of the 384-dim model (the fastest our trainer runs it; see BENCHMARKS.md), i.e. the highest demand.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import prepare_data  # noqa: E402

SEQ, BATCH, SEED = 256, 8, 17
MEMMAP = "nanoGPT np.memmap get_batch"
PREDOWNLOAD_ALL = 1 << 20  # more samples than an epoch holds: Streaming's ready thread marks the epoch ready at once


def serve_ours(ds: str, workers: int, epochs: int, predownload: int | None = None) -> dict:
    """Our trainer's loader: one row per epoch of (batches, tokens, seconds)."""
    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec
    from loaders.shm import clean_stale_shared_memory

    clean_stale_shared_memory()
    spec = build_dataspec([StreamSource(ds)], "train", BATCH,
                          LoaderSettings(shuffle=True, shuffle_seed=SEED, num_workers=workers,
                                         predownload=predownload))
    rows = []
    for _ in range(epochs):
        n = tokens = 0
        t = time.perf_counter()
        for batch in spec.dataloader:
            tokens += batch["input_ids"].numel()
            n += 1
        rows.append((n, tokens, time.perf_counter() - t))
    return {"epochs": rows}


def write_flat(ds: str, out: Path) -> int:
    """The train split's tokens, sample after sample, as one flat uint16 file (nanoGPT's train.bin)."""
    import numpy as np
    from streaming import StreamingDataset

    from loaders.shm import clean_stale_shared_memory

    clean_stale_shared_memory()
    data = StreamingDataset(local=str(Path(ds) / "train"), batch_size=1, shuffle=False)
    tokens = np.concatenate([data[i]["tokens"] for i in range(data.num_samples)]).astype(np.uint16)
    tokens.tofile(out)
    return int(tokens.size)


def serve_memmap(path: str, batches: int, epochs: int) -> dict:
    """nanoGPT's get_batch, verbatim but for the path, ``batches`` batches per 'epoch' (ours' batch count)."""
    import numpy as np
    import torch

    torch.manual_seed(SEED)

    def get_batch():
        # We recreate np.memmap every batch to avoid a memory leak, as per
        # https://stackoverflow.com/questions/45132940/numpy-memmap-memory-usage-want-to-iterate-once/61472122#61472122
        data = np.memmap(path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - SEQ, (BATCH,))
        x = torch.stack([torch.from_numpy((data[i:i + SEQ]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + SEQ]).astype(np.int64)) for i in ix])
        return x, y

    rows = []
    for _ in range(epochs):
        tokens = 0
        t = time.perf_counter()
        for _ in range(batches):
            x, y = get_batch()
            tokens += x.numel()
        rows.append((batches, tokens, time.perf_counter() - t))
    return {"epochs": rows}


def train_demand() -> float:
    """Tokens/s the 384-dim model trains at, at its fastest: best step of a plain bf16 loop (bench/train_throughput)."""
    import torch

    from bench.train_throughput import adamw, gpt_model, train_step

    model = gpt_model(257, "none")  # the exact GELU: the faster kernel, so the highest demand
    opt = adamw(model, 1e-3)
    batch = {"input_ids": torch.randint(0, 257, (BATCH, SEQ)), "labels": torch.randint(0, 257, (BATCH, SEQ))}
    times = []
    for _ in range(8):
        t = time.perf_counter()
        train_step(model, model, opt, batch, bf16=True)
        times.append(time.perf_counter() - t)
    return BATCH * SEQ / min(times[2:])


def worker(argv: list[str]) -> dict:
    kind, target, n, epochs = argv[0], argv[1], int(argv[2]), int(argv[3])
    if kind == "ours":
        return serve_ours(target, n, epochs, int(argv[4]) if len(argv) > 4 else None)
    if kind == "memmap":
        return serve_memmap(target, n, epochs)
    if kind == "flat":  # in its own process too: Streaming allows one live dataset per local folder on a machine
        return {"tokens": write_flat(target, Path(argv[4]))}
    return {"tokens_per_s": train_demand()}


def run_worker(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=4, help="Tiny Shakespeare repeated this many times")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process (the first includes start-up)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved processes of each loader; best is kept")
    parser.add_argument("--train-tokens-per-s", type=float, help="training's consumption (default: measured)")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loader-throughput-") as tmp:
        work = Path(tmp)
        ds = prepare_data(work, SEQ, "bytes", copies=args.copies)
        flat = work / "train.bin"
        n_tokens = run_worker("flat", ds, 0, 0, flat)["tokens"]
        big = f"data.predownload={PREDOWNLOAD_ALL}"
        kinds = {"ours, num_workers=0": (0,), "ours, num_workers=2": (2,),
                 f"ours, num_workers=0, {big}": (0, PREDOWNLOAD_ALL),
                 f"ours, num_workers=2, {big}": (2, PREDOWNLOAD_ALL)}
        results: dict[str, list] = {name: [] for name in [*kinds, MEMMAP]}
        for _ in range(args.repeats):
            for name, extra in kinds.items():
                results[name].append(run_worker("ours", ds, extra[0], args.epochs, *extra[1:])["epochs"])
            batches = results["ours, num_workers=0"][-1][0][0]  # as many batches as our epoch
            results[MEMMAP].append(run_worker("memmap", flat, batches, args.epochs)["epochs"])
        demand = args.train_tokens_per_s or run_worker("train", "-", 0, 0)["tokens_per_s"]
    print(f"loader throughput: Tiny Shakespeare x{args.copies}, bytes tokenizer, seq {SEQ}, batch {BATCH}: "
          f"{n_tokens:,} train tokens, {batches} batches per epoch; best of {args.repeats} interleaved processes")
    print(f"{'':56}{'tokens/s':>12}{'1st epoch':>12}{'x training':>12}   steady-state epochs (tokens/s)")
    best = {}
    for name, runs in results.items():
        steady = [tok / s for run in runs for _, tok, s in run[1:]] or [tok / s for run in runs for _, tok, s in run]
        first = max(run[0][1] / run[0][2] for run in runs)
        best[name] = max(steady)
        print(f"{name:56}{best[name]:>12,.0f}{first:>12,.0f}{best[name] / demand:>12,.0f}   "
              + ", ".join(f"{r:,.0f}" for r in steady))
    memmap = best[MEMMAP]
    for name in kinds:
        print(f"{name} / memmap: {best[name] / memmap:.2f}x  (goal >= 0.5); / training: {best[name] / demand:,.0f}x "
              f"(goal >= 50)")
    how = "passed in" if args.train_tokens_per_s else "measured: best step of a plain bf16 loop"
    print(f"training consumes {demand:,.0f} tokens/s ({how})")
    print(f"\nbenchmark wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
