"""Training throughput on CPU: our trainer, a plain PyTorch loop and transformers' GPT-2, with MFU.

    .venv/bin/python bench/train_throughput.py [--repeats 2] [--tokenizer bytes|gpt2] [--compile]
        [--foundry-venv DIR [--foundry-only] [--threads 2]]

The model: gpt.py's "mini" preset (6 layers, 6 heads, 384 dim: nanoGPT's shakespeare_char shape), seq 256, batch 8,
dropout 0, biases on (as GPT-2 and transformers' GPT2LMHeadModel). Data: Tiny Shakespeare (assets/) converted at
seq 256 with the bytes tokenizer (vocab 257, the analogue of nanoGPT's char vocab; 320 rows in gpt.py), or
with ``--tokenizer gpt2`` the GPT-2 BPE (vocab 50257, padded to 50304). Optimizer everywhere: AdamW (torch's on the
plain loops, Composer's DecoupledAdamW in our trainer: the same update), grad clipping at 1.0, fp32 cross-entropy.

Three parts, each printed as a table with its ratios:

1. Models, in one process, steps interleaved round-robin (so the other jobs on this shared machine slow every
   variant alike): gpt.py, transformers' GPT2LMHeadModel (SDPA attention, ``use_cache=False``) and, with
   ``--nanogpt DIR``, nanoGPT's own ``model.py`` stepped with its own loss; all with the yaml's GELU (exact, as
   nanoGPT's and MPT's; transformers' ``activation_function="gelu"``), fp32 and bf16
   autocast (``torch.autocast("cpu", torch.bfloat16)``: matmuls in bf16, weights and optimizer fp32), and with
   ``--compile`` gpt.py under ``torch.compile`` (its compile time is printed). Between rounds the process times a
   4096 x 4096 fp32 and bf16 matmul: the peaks MFU is measured against (best of all rounds).
2. Our trainer vs the plain loop, each in its own process as users run it (``gpt_pile_composer.py``; figures read
   back from its metrics.jsonl), same init, same StreamingDataset batches, interleaved, best of ``--repeats``;
   for fp32 and for ``precision=amp_bf16``.
3. With ``--foundry-venv DIR`` (a venv holding llm-foundry 0.22.0, which pins Streaming < 0.13 and so cannot share
   ours; without the flag the part is one line saying so): our trainer vs llm-foundry's own (``train_from_yaml``,
   what its scripts/train/train.py runs), each in its own process, alternating, best of ``--repeats``, both with
   ``OMP_NUM_THREADS=--threads``. Always GPT-2 BPE (vocab 50257), fp32, our run of part 2. llm-foundry gets a yaml
   written here at run time (``foundry_config``): ``mpt_causal_lm`` of the mini shape (learned positions, biases,
   tied embedding, ``attn_impl: torch``, no dropout, ``torch_crossentropy``, no per-step train metrics as ours),
   the same DecoupledAdamW, schedule, clipping, batch and steps, no eval, no checkpoint. **Data: the same MDS
   folder, read in place**: our shards' ``tokens`` column (``ndarray:uint16:257``) is what its ``text`` loader's
   StreamingTextDataset reads (a ``tokens`` ndarray, cut to ``max_seq_len`` = 256 and cast to int64), with the
   folder's ``tokenizer/`` as its tokenizer; its model shifts the labels itself, so it trains on 255 targets of each
   256-token row where ours has 256 (both count 8 x 256 tokens a step). Its step times are SpeedMonitor's
   ``time/train`` written by Composer's FileLogger (registered in its loggers registry, which has no file logger).

Throughput is tokens/s from the end of step ``--warmup`` to the end of the last step, data loading included, eval
excluded (SpeedMonitor's ``time/train`` in the trainer). MFU = flops_per_token x tokens/s / the fp32 matmul peak
(flops_per_token = 6N + 12 L C T, gpt.py's; the issue's definition), and for bf16 rows also / the bf16 peak.
Goals: trainer / plain >= 0.97; gpt.py >= transformers; MFU >= 45 %; ours / llm-foundry >= 1.0.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
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
GPT_PY, HF, NANO = "gpt.py", "transformers GPT2LMHeadModel", "nanoGPT model.py"
COMPILED = "gpt.py, torch.compile"


def overrides(ds: str, steps: int, precision: str) -> list[str]:
    """The run, as dotlist overrides of nanoGPT's CPU yaml (its optimizer settings and schedule): the mini model,
    batch 8, and Composer's DecoupledAdamW, the implementation llm-foundry's side runs too (part 3)."""
    return [f"data.path={ds}", "model.preset=mini", "model.bias=true", "model.dropout=0.0",
            "optimizer.name=decoupled_adamw",
            f"global_train_batch_size={BATCH}", f"device_train_microbatch_size={BATCH}",
            f"device_eval_batch_size={BATCH}", f"max_duration={steps}ba", f"precision={precision}", f"seed={SEED}"]


# ---------------------------------------------------------------------------------------------------------- models


def gpt_model(vocab: int, gelu: str):
    """gpt.py's mini model with ``gelu`` (the yaml's ``model.gelu_approximate``: every model of a part computes the
    same function, nanoGPT's ``model.py`` and llm-foundry's MPT use the exact GELU)."""
    from gpt import GPT, GPTConfig

    return GPT(GPTConfig.from_preset(PRESET, block_size=SEQ, vocab_size=vocab, dropout=0.0, bias=True,
                                     gelu_approximate=gelu))


def hf_model(vocab: int, gelu: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt import PRESETS
    from training.resume.init_from import HF_GELU

    shape = PRESETS[PRESET]
    config = GPT2Config(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"], n_positions=SEQ,
                        vocab_size=vocab, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                        activation_function=HF_GELU[gelu])
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


def train_step(forward, model, opt, batch, bf16: bool, clip: float = 1.0, own_loss: bool = False) -> float:
    """One plain-PyTorch training step, as nanoGPT's loop (and our trainer) do it. ``own_loss``: ``forward(ids,
    labels)`` returns the loss itself (nanoGPT's ``model(X, Y)``, its cross-entropy under its autocast)."""
    import torch

    from gpt import next_token_loss

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = forward(batch["input_ids"], batch["labels"]) if own_loss else forward(batch["input_ids"])
    loss = out if own_loss else next_token_loss(out, batch["labels"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()  # as any loop that logs its loss


def model_variant(name: str, vocab: int, nanogpt_dir: str | None) -> tuple:
    """(model, forward, training FLOPs per token) of a part-1 variant. nanoGPT's ``model.py`` (bench/gpu_check.py's
    loader: its vocab padded to 50304 for GPT-2's, as its train.py does) is stepped with its own loss."""
    import torch

    if name == NANO:
        from bench.gpu_check import Shape, nanogpt
        from gpt import PRESETS

        shape = PRESETS[PRESET]
        model, _, flops = nanogpt(Shape(shape["n_layer"], shape["n_head"], shape["n_embd"], SEQ, BATCH, vocab),
                                  "cpu", nanogpt_dir)
        return model, lambda ids, labels, m=model: m(ids, labels)[1], flops
    from training.config import load_config

    gelu = load_config(str(YAML), []).model.gelu_approximate
    model = hf_model(vocab, gelu) if name == HF else gpt_model(vocab, gelu)
    if name == HF:
        return model, lambda ids, m=model: m(input_ids=ids).logits, flops_per_token(model)
    return model, torch.compile(model) if name == COMPILED else model, flops_per_token(model)


def matmul_gflops(dtype, n: int = PEAK_N) -> float:
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    t = time.perf_counter()
    torch.mm(a, b, out=c)
    return 2 * n**3 / (time.perf_counter() - t) / 1e9


# ------------------------------------------------------------------------------------------------- part 1: models


def compare_models(ds: str, steps: int, compile_: bool, nanogpt_dir: str | None = None) -> dict:
    """Every variant trains on the same batches, one step each in turn; the peaks are timed between rounds."""
    import torch
    from composer.utils import reproducibility

    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec, fetch_metadata

    vocab = fetch_metadata(ds, None).vocab_size
    specs = [(GPT_PY, "fp32"), (GPT_PY, "bf16"), (HF, "fp32"), (HF, "bf16")]
    specs += [(NANO, "fp32"), (NANO, "bf16")] if nanogpt_dir else []
    if compile_:
        specs += [(COMPILED, "fp32"), (COMPILED, "bf16")]
    variants = []
    for name, precision in specs:
        reproducibility.seed_all(SEED)
        model, forward, flops = model_variant(name, vocab, nanogpt_dir)
        model.train()
        variants.append({"name": name, "precision": precision, "model": model, "forward": forward,
                         "opt": adamw(model, 1e-3), "durations": [], "flops_per_token": flops})
    loader = build_dataspec([StreamSource(ds)], "train", BATCH, LoaderSettings(shuffle=True, shuffle_seed=SEED))
    batches = iter(loader.dataloader)
    peaks = {"fp32": [], "bf16": []}
    for _ in range(2):  # wake the BLAS and oneDNN kernels up before the first timed matmul
        matmul_gflops(torch.float32, 1024), matmul_gflops(torch.bfloat16, 1024)
    for _ in range(steps):
        batch = next(batches)
        for v in variants:
            t = time.perf_counter()
            train_step(v["forward"], v["model"], v["opt"], batch, v["precision"] == "bf16",
                       own_loss=v["name"] == NANO)
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
    model = gpt_model(fetch_metadata(ds, None).vocab_size, cfg.model.gelu_approximate)
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


def run_trainer(ds: Path, runs: Path, steps: int, precision: str, *extra: str, env: dict | None = None) -> dict:
    """Our product as users run it; step times read back from its metrics.jsonl. ``extra``: more overrides;
    ``env``: the process environment (default: ours)."""
    cmd = [sys.executable, str(ROOT / "gpt_pile_composer.py"), str(YAML), *overrides(str(ds), steps, precision),
           f"runs_root={runs}", "run_name=bench", "progress_bar=false", "log_interval=100000ba",
           "eval_interval=100000ba", "eval_subset_num_batches=1", "save_interval=100000ba", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
    return {"ends": step_end_times(metrics_rows(runs / "bench")), "wall": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------- part 3: ours vs llm-foundry

# llm-foundry's scripts/train/train.py (not in its wheel) is the call train_from_yaml(yaml, overrides). Its loggers
# registry has no file logger, so Composer's own FileLogger is registered first, under the name "file".
FOUNDRY_TRAIN = ("import sys; from composer.loggers import FileLogger; from llmfoundry.registry import loggers; "
                 "from llmfoundry.command_utils import train_from_yaml; loggers.register('file', func=FileLogger); "
                 "train_from_yaml(sys.argv[1], [])")
FOUNDRY_NAME = "llm-foundry train_from_yaml"
FOUNDRY_TIME = re.compile(r"^\[metric\]\[batch=(\d+)\]: time/train: ([0-9.]+)", re.MULTILINE)  # its FileLogger
FOUNDRY_SKIPPED = ("3. our trainer vs llm-foundry's: skipped; pass --foundry-venv DIR (a venv holding "
                   "llm-foundry==0.22.0, install command in BENCHMARKS.md) to run it")


def foundry_config(ds: Path, vocab: int, steps: int, log_file: Path) -> dict:
    """llm-foundry's train yaml for the run our trainer makes in part 3 (nanoGPT's CPU yaml with ``overrides``, fp32):
    MPT of the mini shape with learned positions and biases (GPT-2's layout), the same optimizer, schedule,
    clipping, batch and steps, reading ``ds``'s train split through its ``text`` loader. No eval, no checkpoint;
    SpeedMonitor's ``time/train`` per step goes to ``log_file`` through Composer's FileLogger."""
    from gpt import PRESETS
    from training.config import load_config

    cfg = load_config(str(YAML), overrides(str(ds), steps, "fp32"))
    shape, o = PRESETS[PRESET], cfg.optimizer
    assert o.name == "decoupled_adamw", o.name
    model = {"name": "mpt_causal_lm", "init_device": "cpu", "d_model": shape["n_embd"], "n_heads": shape["n_head"],
             "n_layers": shape["n_layer"], "expansion_ratio": 4, "max_seq_len": SEQ, "vocab_size": vocab,
             "resid_pdrop": 0.0, "emb_pdrop": 0.0, "no_bias": False, "learned_pos_emb": True,
             "attn_config": {"attn_impl": "torch", "attn_pdrop": 0.0},
             "loss_fn": "torch_crossentropy",  # its default (fused_crossentropy) is flash-attn's CUDA kernel
             "use_train_metrics": False}  # as ours: no per-step train metrics (its default recomputes the loss)
    loader = {"name": "text", "drop_last": True, "num_workers": cfg.data.num_workers, "pin_memory": False,
              "prefetch_factor": None, "persistent_workers": False,
              "dataset": {"local": str(ds), "split": "train", "max_seq_len": SEQ, "shuffle": True,
                          "shuffle_seed": cfg.seed}}
    return {"run_name": "foundry-bench", "seed": cfg.seed, "precision": "fp32", "max_seq_len": SEQ, "model": model,
            "tokenizer": {"name": str(ds / "tokenizer"), "kwargs": {"model_max_length": SEQ}},
            "train_loader": loader,
            # weight_decay as training/trainer.py hands it to the same DecoupledAdamW (which does not scale it by lr)
            "optimizer": {"name": "decoupled_adamw", "lr": o.lr, "betas": list(o.betas), "eps": o.eps,
                          "weight_decay": o.weight_decay * o.lr},
            "scheduler": {"name": "cosine_with_warmup", "t_warmup": cfg.scheduler.t_warmup,
                          "alpha_f": cfg.scheduler.alpha_f},
            "algorithms": {"gradient_clipping": {"clipping_type": "norm", "clipping_threshold": cfg.grad_clip_norm}},
            "global_train_batch_size": BATCH, "device_train_microbatch_size": BATCH, "device_eval_batch_size": BATCH,
            "max_duration": f"{steps}ba",
            "callbacks": {"speed_monitor": {"window_size": cfg.speed_window, "time_unit": "seconds"}},
            "loggers": {"file": {"filename": str(log_file), "capture_stdout": False, "capture_stderr": False,
                                 "log_traces": False}},
            "progress_bar": False, "log_to_console": False, "python_log_level": cfg.python_log_level}


def foundry_step_end_times(log_text: str) -> list[float]:
    """Training seconds at the end of each step 1..N (SpeedMonitor's ``time/train``, as ours) from its FileLogger."""
    by_step = {int(step): float(t) for step, t in FOUNDRY_TIME.findall(log_text)}
    return [by_step[s] for s in sorted(by_step)]


def thread_env(threads: int) -> dict[str, str]:
    """The environment both trainers run in: ``threads`` intra-op threads (torch reads OMP_NUM_THREADS at start)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_foundry(venv: Path, ds: Path, vocab: int, work: Path, steps: int, env: dict[str, str]) -> dict:
    """llm-foundry's trainer in its own venv on a yaml written here (JSON, which is YAML), in ``work``."""
    work.mkdir(parents=True)
    yaml_file, log_file = work / "foundry.yaml", work / "metrics.txt"
    yaml_file.write_text(json.dumps(foundry_config(ds, vocab, steps, log_file), indent=1) + "\n")
    t0 = time.perf_counter()
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", FOUNDRY_TRAIN, str(yaml_file)], cwd=work, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{(proc.stdout + proc.stderr)[-4000:]}\nerror: llm-foundry's trainer exited {proc.returncode} "
                 f"(its yaml: {yaml_file})")
    return {"ends": foundry_step_end_times(log_file.read_text()), "wall": time.perf_counter() - t0}


def compare_foundry(venv: Path, work: Path, steps: int, repeats: int, threads: int) -> dict[str, list[dict]]:
    """Our trainer and llm-foundry's, alternating, ``repeats`` rounds, on the same GPT-2 BPE MDS dataset."""
    from core.metadata import read_metadata

    ds = prepare_data(work, SEQ, "gpt2")
    vocab, env = read_metadata(ds).vocab_size, thread_env(threads)
    results: dict[str, list[dict]] = {"ours": [], "foundry": []}
    for i in range(repeats):
        results["ours"].append(run_trainer(ds, work / f"ours-{i}", steps, "fp32", env=env))
        results["foundry"].append(run_foundry(venv, ds, vocab, work / f"foundry-{i}", steps, env))
    return results


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
        flops = v["flops_per_token"]
        print(f"{v['name']:36}{v['precision']:>5}{rate:>10.0f}{best:>11.0f}{mfu(rate, flops, p32):>13.1%}"
              f"{mfu(rate, flops, own):>12.1%}{sum(d) / len(d):>8.3f}{first}")

    def ratio(a: tuple, b: tuple) -> str:
        return f"{rates[a] / rates[b]:.2f}x (best steps: {bests[a] / bests[b]:.2f}x)"

    for prec in ("fp32", "bf16"):
        print(f"gpt.py / transformers, {prec}: {ratio((GPT_PY, prec), (HF, prec))}  (goal >= 1)")
        if (NANO, prec) in rates:
            print(f"gpt.py / nanoGPT model.py, {prec}: {ratio((GPT_PY, prec), (NANO, prec))}  (goal >= 1)")
    print(f"bf16 autocast / fp32: gpt.py {ratio((GPT_PY, 'bf16'), (GPT_PY, 'fp32'))}, "
          f"transformers {ratio((HF, 'bf16'), (HF, 'fp32'))}")
    if (COMPILED, "bf16") in rates:
        for prec in ("fp32", "bf16"):
            print(f"torch.compile / eager, {prec}: {ratio((COMPILED, prec), (GPT_PY, prec))}")
    return {"fp32": p32, "bf16": p16, "flops_per_token": res["variants"][0]["flops_per_token"]}


def report_trainer(results: dict, warmup: int, peaks: dict) -> None:
    print(f"\n2. our trainer vs the plain loop, separate processes, best of {len(next(iter(results.values())))} "
          f"interleaved runs, first {warmup} steps untimed")
    print(f"{'':24}{'precision':>10}{'tokens/s':>10}{'best step':>11}{'MFU fp32 pk':>13}{'MFU own pk':>12}"
          f"{'wall s':>8}   runs (tokens/s)")
    for precision in dict.fromkeys(p for p, _ in results):
        best = {}
        for side in ("plain", "trainer"):
            rate, step, wall, runs = best_run(results[(precision, side)], warmup)
            best[side] = rate
            own = peaks["bf16"] if precision == "amp_bf16" else peaks["fp32"]
            name = "plain PyTorch loop" if side == "plain" else "our Composer trainer"
            flops = peaks["flops_per_token"]
            print(f"{name:24}{precision:>10}{rate:>10.0f}{step:>11.0f}{mfu(rate, flops, peaks['fp32']):>13.1%}"
                  f"{mfu(rate, flops, own):>12.1%}{wall:>8.1f}   {runs}")
        print(f"trainer / plain, {precision}: {best['trainer'] / best['plain']:.3f}  (goal >= 0.97)")


def best_run(runs: list[dict], warmup: int) -> tuple[float, float, float, str]:
    """(tokens/s, fastest step's tokens/s, wall s) of the fastest of ``runs``, and every run's tokens/s as text."""
    rates = [timed_rate(r["ends"], warmup, BATCH * SEQ) for r in runs]
    (rate, step), i = max((r, i) for i, r in enumerate(rates))
    return rate, step, runs[i]["wall"], ", ".join(f"{r:.0f}" for r, _ in rates)


def report_foundry(results: dict[str, list[dict]], warmup: int, threads: int) -> None:
    print(f"\n3. our trainer vs llm-foundry's (MPT, attn_impl torch), GPT-2 BPE (vocab 50257), fp32, "
          f"{threads} threads, separate processes, alternating, best of {len(results['ours'])}, "
          f"first {warmup} steps untimed")
    print(f"{'':30}{'tokens/s':>10}{'best step':>11}{'wall s':>8}   runs (tokens/s)")
    best = {}
    for side, name in (("ours", "our Composer trainer"), ("foundry", FOUNDRY_NAME)):
        rate, step, wall, runs = best_run(results[side], warmup)
        best[side] = rate
        print(f"{name:30}{rate:>10.0f}{step:>11.0f}{wall:>8.1f}   {runs}")
    print(f"ours / llm-foundry: {best['ours'] / best['foundry']:.3f}  (goal >= 1.0)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2, help="interleaved trainer / plain runs; best is kept")
    parser.add_argument("--steps", type=int, default=20, help="steps per trainer / plain run")
    parser.add_argument("--model-steps", type=int, default=15, help="steps per variant in part 1")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of every run")
    parser.add_argument("--tokenizer", default="bytes", choices=("bytes", "gpt2"))
    parser.add_argument("--precisions", default="fp32,amp_bf16", help="trainer / plain precisions (part 2)")
    parser.add_argument("--compile", action="store_true", help="also time gpt.py under torch.compile (part 1)")
    parser.add_argument("--nanogpt", metavar="DIR", help="a nanoGPT checkout: its model.py's step in part 1")
    parser.add_argument("--skip-trainer", action="store_true", help="part 1 only")
    parser.add_argument("--foundry-venv", type=Path, metavar="DIR",
                        help="part 3: llm-foundry's trainer from this venv beside ours (GPT-2 vocab, fp32)")
    parser.add_argument("--foundry-only", action="store_true", help="part 3 only (needs --foundry-venv)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of both trainers in part 3")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, ds = args.worker
        out = compare_models(ds, args.model_steps, args.compile, args.nanogpt) if kind == "models" else \
            plain_loop(ds, args.steps, args.precision)
        print(json.dumps(out))
        return 0
    if args.foundry_only and not args.foundry_venv:
        parser.error("--foundry-only needs --foundry-venv DIR")
    if args.foundry_venv and not (args.foundry_venv / "bin" / "python").is_file():
        parser.error(f"--foundry-venv {args.foundry_venv}: no bin/python there")
    t_start = time.perf_counter()
    models, results, foundry = None, {}, None
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        work = Path(tmp)
        if not args.foundry_only:
            models, results = measure_parts_1_2(args, work)
        if args.foundry_venv:
            foundry = compare_foundry(args.foundry_venv.absolute(), work, args.steps, args.repeats, args.threads)
    tokenizer = "" if args.foundry_only else f"{args.tokenizer} tokenizer (parts 1-2), "
    print(f"train throughput: {PRESET} model (6 layers, 6 heads, 384 dim), seq {SEQ}, batch {BATCH}, {tokenizer}"
          f"torch {__import__('torch').__version__}, {os.cpu_count()} CPUs")
    if models:
        peaks = report_models(models, args.warmup)
        if results:
            report_trainer(results, args.warmup, peaks)
    if foundry:
        report_foundry(foundry, args.warmup, args.threads)
    else:
        print(f"\n{FOUNDRY_SKIPPED}")
    print(f"\nbenchmark wall time {time.perf_counter() - t_start:.0f} s")
    return 0


def measure_parts_1_2(args: argparse.Namespace, work: Path) -> tuple[dict, dict]:
    """Part 1 (in a worker process) and, unless ``--skip-trainer``, part 2's interleaved runs."""
    ds = prepare_data(work, SEQ, args.tokenizer)
    cmd = [sys.executable, __file__, "--worker", "models", str(ds), "--model-steps", str(args.model_steps)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}  # compile from cold
    cmd += ["--compile"] if args.compile else []
    cmd += ["--nanogpt", str(Path(args.nanogpt).absolute())] if args.nanogpt else []
    out = subprocess.run(cmd, check=True, capture_output=True,
                         text=True, cwd=ROOT, env=env)
    models = json.loads(out.stdout.strip().splitlines()[-1])
    results: dict = {}
    if not args.skip_trainer:
        for i in range(args.repeats):
            for precision in args.precisions.split(","):
                results.setdefault((precision, "plain"), []).append(run_plain(ds, args.steps, precision))
                results.setdefault((precision, "trainer"), []).append(
                    run_trainer(ds, work / f"r{i}-{precision}", args.steps, precision))
    return models, results


if __name__ == "__main__":
    sys.exit(main())
