"""Multiple-choice eval throughput on CPU: ``eval.py --hellaswag``'s scoring vs lm-evaluation-harness's ``hf`` model.

    .venv-lmeval/bin/python bench/eval_throughput.py [--items 100] [--chunk 10] [--repeats 1] [--harness-batch 1 8]

The model: gpt.py's ``gpt2`` preset (124M, block 1024, GPT-2 BPE), random init (seed 0; throughput does not depend
on the weights), exported to a Hugging Face folder with the project's exporter (``evaluation/hf.py``:
``to_hf_model`` + the tokenizer's ``save_pretrained``). Both sides read that one folder: ours through
``evaluation.checkpoints.load_gpt`` (what ``eval.py EXPORT --hellaswag FILE`` runs), the harness through its own
``hf`` model (``HFLM``: transformers' ``GPT2LMHeadModel``, float32, ``device=cpu``) and a local multiple-choice task
reading the same jsonl (tests/evaluation/test_lm_eval_parity.py's task: ``output_type: multiple_choice``, acc and
acc_norm).

Items: ``--items`` HellaSwag-layout items made deterministically from Tiny Shakespeare (assets/): the context is 4
consecutive lines (~45 BPE tokens, HellaSwag's ctx is ~40-70), the right ending the 2 lines after them (~20 tokens,
as HellaSwag's), 3 wrong endings 2-line pairs from elsewhere, the label's position drawn by a seeded RNG.

Timed: the scoring only, model loading excluded on both sides (ours: ``evaluation.evaluate.score_items``; the
harness: ``simple_evaluate`` on an ``HFLM`` built beforehand, so its task set-up, request building and
log-likelihoods). The sides take turns in one process, ``--chunk`` items each (one harness task per chunk), so that
the load of this shared machine falls on every side alike; each chunk's best of ``--repeats``. ``--threads``
(default 1) torch threads for both: with 2 on this 2-core machine, any neighbour's job makes every side up to ~10x
slower for a while (the OpenMP threads wait on each other), which no interleaving evens out. Reported: seconds per
1,000 items (scaled from ``--items``), the ratio ours / harness, and how many items both pick alike (acc and
acc_norm: the same picks, item for item).
Goal: ours <= 0.5x the harness's time at its default batch size (1).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import GPT2_TOKENIZER, SHAKESPEARE  # noqa: E402

TASK = "bench_mc"
CTX_LINES, END_LINES, ENDINGS = 4, 2, 4


def make_items(n: int, seed: int = 0) -> list[dict]:
    """HellaSwag-layout items from Tiny Shakespeare's lines (speaker names and blank lines dropped)."""
    lines = [ln.strip() for ln in SHAKESPEARE.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.endswith(":")]
    rng = random.Random(seed)
    span = CTX_LINES + END_LINES
    items = []
    for start in range(0, n * span * 3, span * 3)[:n]:
        ctx = " ".join(lines[start:start + CTX_LINES])
        right = " ".join(lines[start + CTX_LINES:start + span])
        wrong = []
        for _ in range(ENDINGS - 1):
            at = rng.randrange(0, len(lines) - END_LINES)
            wrong.append(" ".join(lines[at:at + END_LINES]))
        label = rng.randrange(ENDINGS)
        items.append({"ctx": ctx, "endings": wrong[:label] + [right] + wrong[label:], "label": label})
    return items


def export_random_gpt2(out: Path) -> None:
    """gpt.py's 124M shape, random init, as a Hugging Face folder (the project's exporter)."""
    import torch

    from core.tokenizer import load_tokenizer
    from evaluation.hf import to_hf_model
    from gpt import GPT, GPTConfig

    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(GPT2_TOKENIZER))
    model = GPT(GPTConfig.from_preset("gpt2")).eval()
    to_hf_model(model, tokenizer.eos_id).save_pretrained(out)
    tokenizer.hf.save_pretrained(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=10, help="items per turn of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides (default 1: see above)")
    parser.add_argument("--harness-batch", type=int, nargs="+", default=[1, 8],
                        help="the harness's batch sizes to time (its default: 1)")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evaluation.checkpoints import load_gpt, load_tokenizer_for
    from evaluation.evaluate import score_items
    from evaluation.harness import write_task
    from loaders.choices import read_items

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    export = work / "gpt2-random"
    export_random_gpt2(export)
    (work / "tasks").mkdir()
    all_items = make_items(args.items)
    chunks = []  # (task name, its items): the sides alternate chunk by chunk
    for k in range(0, len(all_items), args.chunk):
        name = f"{TASK}_{k // args.chunk:03d}"
        items_file = work / f"{name}.jsonl"
        items_file.write_text("".join(json.dumps(i) + "\n" for i in all_items[k:k + args.chunk]))
        write_task(work / "tasks", name, items_file, work / "datasets-cache")
        chunks.append((name, read_items(str(items_file))))
    tasks = TaskManager(include_path=str(work / "tasks"))

    model, tokenizer = load_gpt(str(export)), load_tokenizer_for(str(export))
    items = [item for _, chunk in chunks for item in chunk]
    ctx_tokens = sum(len(tokenizer.encode(i.ctx)) for i in items) / len(items)
    end_tokens = sum(len(tokenizer.encode(" " + e)) for i in items for e in i.endings) / len(items) / ENDINGS
    print(f"{len(items)} items in chunks of {args.chunk}: context {ctx_tokens:.1f} tokens, ending "
          f"{end_tokens:.1f} tokens (mean); torch threads {torch.get_num_threads()}", flush=True)
    harness = {f"harness bs={bs}": HFLM(pretrained=str(export), dtype="float32", device="cpu", batch_size=bs)
               for bs in args.harness_batch}

    times: dict[str, list[float]] = {name: [float("inf")] * len(chunks) for name in ["ours", *harness]}
    picks: dict[str, list] = {name: [] for name in times}
    for repeat in range(args.repeats):
        for k, (task, chunk) in enumerate(chunks):
            rows: list[dict] = []
            t0 = time.perf_counter()
            score_items(model, tokenizer, chunk, rows)
            times["ours"][k] = min(times["ours"][k], time.perf_counter() - t0)
            if repeat == 0:
                picks["ours"] += [(r["acc"] == r["label"], r["acc_norm"] == r["label"]) for r in rows]
            for name, lm in harness.items():
                t0 = time.perf_counter()
                out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tasks, log_samples=True,
                                              verbosity="ERROR")
                times[name][k] = min(times[name][k], time.perf_counter() - t0)
                if repeat == 0:
                    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
                    picks[name] += [(bool(s["acc"]), bool(s["acc_norm"])) for s in samples]
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {sum(v):.1f} s" for k, v in times.items()), flush=True)
    best = {name: sum(v) for name, v in times.items()}

    base = best[f"harness bs={args.harness_batch[0]}"]
    print(f"\n| | s / {len(items)} items | s / 1,000 items | / harness bs={args.harness_batch[0]} | "
          "acc, acc_norm picks as ours |")
    print("|---|---|---|---|---|")
    for name, secs in best.items():
        same = sum(a == b for a, b in zip(picks[name], picks["ours"]))
        print(f"| {name} | {secs:.1f} | {secs * 1000 / len(items):,.0f} | {secs / base:.2f}x | "
              f"{same}/{len(items)} |")
    ratio = best["ours"] / base
    print(f"\nours / harness (bs={args.harness_batch[0]}): {ratio:.2f}x (goal <= 0.5x: "
          f"{'met' if ratio <= 0.5 else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
