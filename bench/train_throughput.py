"""Training throughput on CPU: our trainer, a plain PyTorch loop and transformers' GPT-2, with MFU.

    .venv/bin/python bench/train_throughput.py [--repeats 2] [--tokenizer bytes|gpt2] [--compile]

The model: gpt.py's "mini" preset (6 layers, 6 heads, 384 dim: nanoGPT's shakespeare_char shape), seq 256, batch 8,
dropout 0, biases on (as GPT-2 and transformers' GPT2LMHeadModel). Data: Tiny Shakespeare (assets/) converted at
seq 256 with the bytes tokenizer (vocab 257, the analogue of nanoGPT's char vocab; padded to 320 in gpt.py), or
with ``--tokenizer gpt2`` the GPT-2 BPE (vocab 50257, padded to 50304). Optimizer everywhere: AdamW (torch's on the
plain loops, Composer's DecoupledAdamW in our trainer: the same update), grad clipping at 1.0, fp32 cross-entropy.

Two parts, each printed as a table with its ratios:

1. Models, in one process, steps interleaved round-robin (so the other jobs on this shared machine slow every
   variant alike): gpt.py and transformers' GPT2LMHeadModel (SDPA attention, ``use_cache=False``), fp32 and bf16
   autocast (``torch.autocast("cpu", torch.bfloat16)``: matmuls in bf16, weights and optimizer fp32), and with
   ``--compile`` gpt.py under ``torch.compile`` (its compile time is printed). Between rounds the process times a
   4096 x 4096 fp32 and bf16 matmul: the peaks MFU is measured against (best of all rounds).
2. Our trainer vs the plain loop, each in its own process as users run it (``gpt_pile_composer.py``; figures read
   back from its metrics.jsonl), same init, same StreamingDataset batches, interleaved, best of ``--repeats``;
   for fp32 and for ``precision=amp_bf16``.

Throughput is tokens/s from the end of step ``--warmup`` to the end of the last step, data loading included, eval
excluded (SpeedMonitor's ``time/train`` in the trainer). MFU = flops_per_token x tokens/s / the fp32 matmul peak
(flops_per_token = 6N + 12 L C T, gpt.py's; the issue's definition), and for bf16 rows also / the bf16 peak.
Goals: trainer / plain >= 0.97; gpt.py >= transformers; MFU >= 45 %.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import metrics_rows, prepare_data, step_end_times, timed_rate  # noqa: E402

YAML = ROOT / "yamls" / "nanogpt-cpu.yaml"
SEQ, BATCH, PRESET = 256, 8, "mini"
PEAK_N = 4096
SEED = 17
GPT_PY, HF = "gpt.py", "transformers GPT2LMHeadModel"
COMPILED = "gpt.py, torch.compile"


def overrides(ds: str, steps: int, precision: str) -> list[str]:
    """The run, as dotlist overrides of nanoGPT's CPU yaml (its optimizer and schedule): the mini model, batch 8."""
    return [f"data.path={ds}", "model.preset=mini", "model.bias=true", "model.dropout=0.0",
            f"global_train_batch_size={BATCH}", f"device_train_microbatch_size={BATCH}",
            f"device_eval_batch_size={BATCH}", f"max_duration={steps}ba", f"precision={precision}", f"seed={SEED}"]


# ---------------------------------------------------------------------------------------------------------- models


def gpt_model(vocab: int):
    from gpt import GPT, GPTConfig

    return GPT(GPTConfig.from_preset(PRESET, block_size=SEQ, vocab_size=vocab, dropout=0.0, bias=True))


def hf_model(vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt import PRESETS

    shape = PRESETS[PRESET]
    config = GPT2Config(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"], n_positions=SEQ,
                        vocab_size=vocab, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    assert model.config._attn_implementation == "sdpa"
    return model


def flops_per_token(model) -> int:
    """gpt.py's 6N + 12 L C T; for the transformers model the same formula on its parameter count."""
    if hasattr(model, "flops_per_token"):
        return model.flops_per_token(SEQ)
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * c.n_layer * c.n_embd * SEQ


def adamw(model, lr: float, betas=(0.9, 0.99), eps: float = 1e-8, weight_decay: float = 0.1):
    """torch.optim.AdamW with decay on matrices only (the product's grouping), with its CPU default kernel (the
    per-parameter for-loop, as nanoGPT on CPU and as Composer's DecoupledAdamW in our trainer)."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)


def train_step(forward, model, opt, batch, bf16: bool, clip: float = 1.0) -> float:
    """One plain-PyTorch training step, as nanoGPT's loop (and our trainer) do it."""
    import torch
    import torch.nn.functional as F

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = forward(batch["input_ids"])
    loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()  # as any loop that logs its loss


def matmul_gflops(dtype, n: int = PEAK_N) -> float:
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    t = time.perf_counter()
    torch.mm(a, b, out=c)
    return 2 * n**3 / (time.perf_counter() - t) / 1e9


# ------------------------------------------------------------------------------------------------- part 1: models


def compare_models(ds: str, steps: int, compile_: bool) -> dict:
    """Every variant trains on the same batches, one step each in turn; the peaks are timed between rounds."""
    import torch
    from composer.utils import reproducibility

    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec, fetch_metadata

    vocab = fetch_metadata(ds, None).vocab_size
    specs = [(GPT_PY, "fp32"), (GPT_PY, "bf16"), (HF, "fp32"), (HF, "bf16")]
    if compile_:
        specs += [(COMPILED, "fp32"), (COMPILED, "bf16")]
    variants = []
    for name, precision in specs:
        reproducibility.seed_all(SEED)
        model = hf_model(vocab) if name == HF else gpt_model(vocab)
        model.train()
        if name == HF:
            forward = lambda ids, m=model: m(input_ids=ids).logits  # noqa: E731
        else:
            forward = torch.compile(model) if name == COMPILED else model
        variants.append({"name": name, "precision": precision, "model": model, "forward": forward,
                         "opt": adamw(model, 1e-3), "durations": [],
                         "flops_per_token": flops_per_token(model)})
    loader = build_dataspec([StreamSource(ds)], "train", BATCH, LoaderSettings(shuffle=True, shuffle_seed=SEED))
    batches = iter(loader.dataloader)
    peaks = {"fp32": [], "bf16": []}
    for _ in range(2):  # wake the BLAS and oneDNN kernels up before the first timed matmul
        matmul_gflops(torch.float32, 1024), matmul_gflops(torch.bfloat16, 1024)
    for _ in range(steps):
        batch = next(batches)
        for v in variants:
            t = time.perf_counter()
            train_step(v["forward"], v["model"], v["opt"], batch, v["precision"] == "bf16")
            v["durations"].append(time.perf_counter() - t)
        peaks["fp32"].append(matmul_gflops(torch.float32))
        peaks["bf16"].append(matmul_gflops(torch.bfloat16))
    return {"vocab": vocab, "peaks": peaks, "attn": "sdpa",
            "variants": [{k: v[k] for k in ("name", "precision", "durations", "flops_per_token")} for v in variants]}


# -------------------------------------------------------------------------------------- part 2: trainer vs plain


def plain_loop(ds: str, steps: int, precision: str) -> dict:
    """The trainer's run written as a bare PyTorch loop: the same config, init, batches, schedule and clipping."""
    from composer.utils import reproducibility

    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec, fetch_metadata
    from loaders.shm import clean_stale_shared_memory
    from training.config import load_config

    cfg = load_config(str(YAML), overrides(ds, steps, precision))
    clean_stale_shared_memory()
    train = build_dataspec([StreamSource(ds)], "train", BATCH, LoaderSettings(shuffle=True, shuffle_seed=cfg.seed))
    reproducibility.seed_all(cfg.seed)
    model = gpt_model(fetch_metadata(ds, None).vocab_size)
    o = cfg.optimizer
    opt = adamw(model, o.lr, tuple(o.betas), o.eps, o.weight_decay)
    warmup = int(cfg.scheduler.t_warmup.removesuffix("ba"))
    model.train()
    ends, t0 = [], time.perf_counter()
    for batch in train.dataloader:
        t = len(ends)
        for g in opt.param_groups:  # Composer's warmup + cosine, written out
            frac = min(1.0, max(0, t - warmup) / max(1, steps - warmup))
            cosine = cfg.scheduler.alpha_f + (1 - cfg.scheduler.alpha_f) * (1 + math.cos(math.pi * frac)) / 2
            g["lr"] = o.lr * (t / warmup if t < warmup else cosine)
        train_step(model, model, opt, batch, precision == "amp_bf16", cfg.grad_clip_norm)
        ends.append(time.perf_counter() - t0)
        if len(ends) == steps:
            break
    return {"ends": ends}


def run_plain(ds: Path, steps: int, precision: str) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--worker", "plain", str(ds), "--steps", str(steps),
                          "--precision", precision], check=True, capture_output=True, text=True, cwd=ROOT)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - t0}


def run_trainer(ds: Path, runs: Path, steps: int, precision: str, *extra: str) -> dict:
    """Our product as users run it; step times read back from its metrics.jsonl. ``extra``: more overrides."""
    cmd = [sys.executable, str(ROOT / "gpt_pile_composer.py"), str(YAML), *overrides(str(ds), steps, precision),
           f"runs_root={runs}", "run_name=bench", "progress_bar=false", "log_interval=100000ba",
           "eval_interval=100000ba", "eval_subset_num_batches=1", "save_interval=100000ba", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return {"ends": step_end_times(metrics_rows(runs / "bench")), "wall": time.perf_counter() - t0}


# -------------------------------------------------------------------------------------------------------- report


def mfu(tokens_per_s: float, flops: int, peak_gflops: float) -> float:
    return flops * tokens_per_s / (peak_gflops * 1e9)


def report_models(res: dict, warmup: int) -> dict:
    tokens = BATCH * SEQ
    p32, p16 = max(res["peaks"]["fp32"]), max(res["peaks"]["bf16"])
    spread = min(res["peaks"]["fp32"]) / p32
    print(f"\nmatmul peaks ({PEAK_N}x{PEAK_N}, best of {len(res['peaks']['fp32'])}, timed between rounds): "
          f"fp32 {p32:.0f} GFLOP/s, bf16 {p16:.0f} GFLOP/s (bf16 / fp32 = {p16 / p32:.2f}x); "
          f"slowest fp32 matmul was at {spread:.0%} of the best")
    print(f"\n1. models, vocab {res['vocab']}, batch {BATCH} x {SEQ}, steps interleaved, first {warmup} of "
          f"{len(res['variants'][0]['durations'])} untimed; transformers with attn_implementation={res['attn']}")
    print(f"{'':36}{'prec':>5}{'tokens/s':>10}{'best step':>11}{'MFU fp32 pk':>13}{'MFU own pk':>12}{'step s':>8}")
    rates, bests = {}, {}
    for v in res["variants"]:
        d = v["durations"][warmup:]
        rate, best = tokens * len(d) / sum(d), tokens / min(d)
        own = p16 if v["precision"] == "bf16" else p32
        rates[(v["name"], v["precision"])], bests[(v["name"], v["precision"])] = rate, best
        # compile time: what the untimed steps took beyond steady-state steps (inductor cache empty: a cold start)
        extra = sum(v["durations"][:warmup]) - warmup * sum(d) / len(d)
        first = f"  (compile: {extra:.0f} s)" if v["name"] == COMPILED else ""
        print(f"{v['name']:36}{v['precision']:>5}{rate:>10.0f}{best:>11.0f}{mfu(rate, v['flops_per_token'], p32):>13.1%}"
              f"{mfu(rate, v['flops_per_token'], own):>12.1%}{sum(d) / len(d):>8.3f}{first}")
    def ratio(a: tuple, b: tuple) -> str:
        return f"{rates[a] / rates[b]:.2f}x (best steps: {bests[a] / bests[b]:.2f}x)"

    for prec in ("fp32", "bf16"):
        print(f"gpt.py / transformers, {prec}: {ratio((GPT_PY, prec), (HF, prec))}  (goal >= 1)")
    print(f"bf16 autocast / fp32: gpt.py {ratio((GPT_PY, 'bf16'), (GPT_PY, 'fp32'))}, "
          f"transformers {ratio((HF, 'bf16'), (HF, 'fp32'))}")
    if (COMPILED, "bf16") in rates:
        for prec in ("fp32", "bf16"):
            print(f"torch.compile / eager, {prec}: {ratio((COMPILED, prec), (GPT_PY, prec))}")
    return {"fp32": p32, "bf16": p16, "flops_per_token": res["variants"][0]["flops_per_token"]}


def report_trainer(results: dict, warmup: int, peaks: dict) -> None:
    tokens = BATCH * SEQ
    print(f"\n2. our trainer vs the plain loop, separate processes, best of {len(next(iter(results.values())))} "
          f"interleaved runs, first {warmup} steps untimed")
    print(f"{'':24}{'precision':>10}{'tokens/s':>10}{'best step':>11}{'MFU fp32 pk':>13}{'MFU own pk':>12}"
          f"{'wall s':>8}   runs (tokens/s)")
    for precision in dict.fromkeys(p for p, _ in results):
        best = {}
        for side in ("plain", "trainer"):
            runs = [timed_rate(r["ends"], warmup, tokens) for r in results[(precision, side)]]
            (rate, step), i = max((r, i) for i, r in enumerate(runs))
            wall = results[(precision, side)][i]["wall"]
            best[side] = rate
            own = peaks["bf16"] if precision == "amp_bf16" else peaks["fp32"]
            name = "plain PyTorch loop" if side == "plain" else "our Composer trainer"
            print(f"{name:24}{precision:>10}{rate:>10.0f}{step:>11.0f}{mfu(rate, peaks['flops_per_token'], peaks['fp32']):>13.1%}"
                  f"{mfu(rate, peaks['flops_per_token'], own):>12.1%}{wall:>8.1f}   "
                  + ", ".join(f"{r:.0f}" for r, _ in runs))
        print(f"trainer / plain, {precision}: {best['trainer'] / best['plain']:.3f}  (goal >= 0.97)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2, help="interleaved trainer / plain runs; best is kept")
    parser.add_argument("--steps", type=int, default=20, help="steps per trainer / plain run")
    parser.add_argument("--model-steps", type=int, default=15, help="steps per variant in part 1")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every run")
    parser.add_argument("--tokenizer", default="bytes", choices=("bytes", "gpt2"))
    parser.add_argument("--precisions", default="fp32,amp_bf16", help="trainer / plain precisions (part 2)")
    parser.add_argument("--compile", action="store_true", help="also time gpt.py under torch.compile (part 1)")
    parser.add_argument("--skip-trainer", action="store_true", help="part 1 only")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, ds = args.worker
        out = compare_models(ds, args.model_steps, args.compile) if kind == "models" else \
            plain_loop(ds, args.steps, args.precision)
        print(json.dumps(out))
        return 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        work = Path(tmp)
        ds = prepare_data(work, SEQ, args.tokenizer)
        cmd = [sys.executable, __file__, "--worker", "models", str(ds), "--model-steps", str(args.model_steps)]
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}  # compile from cold
        out = subprocess.run(cmd + (["--compile"] if args.compile else []), check=True, capture_output=True,
                             text=True, cwd=ROOT, env=env)
        models = json.loads(out.stdout.strip().splitlines()[-1])
        results: dict = {}
        if not args.skip_trainer:
            for i in range(args.repeats):
                for precision in args.precisions.split(","):
                    results.setdefault((precision, "plain"), []).append(run_plain(ds, args.steps, precision))
                    results.setdefault((precision, "trainer"), []).append(
                        run_trainer(ds, work / f"r{i}-{precision}", args.steps, precision))
    print(f"train throughput: {PRESET} model (6 layers, 6 heads, 384 dim), seq {SEQ}, batch {BATCH}, "
          f"{args.tokenizer} tokenizer, torch {__import__('torch').__version__}, {os.cpu_count()} CPUs")
    peaks = report_models(models, args.warmup)
    if results:
        report_trainer(results, args.warmup, peaks)
    print(f"\nbenchmark wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
