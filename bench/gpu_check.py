"""The GPU check: one short command on one H100/H200 that says whether our GPU path is fast and correct.

    python bench/gpu_check.py --prepare bench/.gpu_data        # here (CPU): the dataset part B trains on
    python bench/gpu_check.py --data bench/.gpu_data [--nanogpt DIR] [--budget 330]   # there (GPU), < 6 min
    python bench/gpu_check.py --cpu-smoke                      # the suite runs this: tiny shapes on CPU

The GPU machine has Python 3.12 + torch and no network, no Composer, no Streaming: BENCHMARKS.md has the
``pip download`` command for the pure-Python wheels it needs (carried in a folder) and the whole device command.

Part A, pure torch (always runs): gpt.py at GPT-2 124M shape, seq 1024, bf16 autocast, fused AdamW, random tokens:
tokens/s, MFU (against core/peaks.py's bf16 peak for the device), peak memory and the SDPA kernel that ran, for
eager, whole-model ``torch.compile`` and per-block compile (each block compiled on its own, as ``compile.per_block``
does); with ``--nanogpt DIR``, nanoGPT's own ``model.py`` beside it, same shapes, eager and compiled.
Part B, our trainer (if Composer and Streaming import on this torch; else one line says why): ``gpt_pile_composer.py``
on the prepared MDS dataset for ``--steps-b`` steps, DDP and FSDP2 on one GPU, compile off and on, beside a plain
loop over the same loader and model (trainer / plain ratio, MFU), and a kill -9 + re-run that must replay the
uninterrupted run bit for bit. Goals (issue 20): MFU >= 45 % (124M, seq 1024, H100-class), gpt.py >= 1.0x nanoGPT's
model.py, trainer >= 0.97x the plain loop. Variants that would overrun ``--budget`` seconds are skipped with a line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core.peaks import table_peak  # noqa: E402
from gpt import GPT, GPTConfig, next_token_loss  # noqa: E402


@dataclass
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    seq: int
    batch: int
    vocab: int = 50257
    steps: int = 20  # timed steps, after the warm-up ones
    warmup: int = 3  # the first (compiling) step is one of these


GPU_SHAPE = Shape(12, 12, 768, 1024, 16)
SMOKE_SHAPE = Shape(2, 2, 64, 64, 2, vocab=257, steps=2, warmup=1)


class Clock:
    """The check's time budget: a variant that would start past it is skipped (and says so)."""

    def __init__(self, budget: float) -> None:
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)


# ----------------------------------------------------------------------------------------------- part A: the model


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def adamw(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """torch's fused AdamW (on CUDA and CPU), decay on matrices only: what ``optimizer.name=adamw`` uses
    (training/trainer.py's ADAMW_KERNEL; spelled out here because part A imports no Composer)."""
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=6e-4, betas=(0.9, 0.95), fused=True)


def ours(shape: Shape, device: str, how: str = "eager", smoke: bool = False) -> tuple[torch.nn.Module, Callable, int]:
    """(gpt.py's GPT, its loss function, its training FLOPs per token). Compiled as our trainer compiles it
    (training/compile.py): the model or its blocks, and the loss function on its own."""
    model = GPT(GPTConfig(block_size=shape.seq, vocab_size=shape.vocab, n_layer=shape.n_layer, n_head=shape.n_head,
                          n_embd=shape.n_embd, dropout=0.0, bias=True)).to(device)
    criterion = next_token_loss if how == "eager" else torch.compile(next_token_loss, backend=backend(smoke))

    def loss(m, x, y):
        return criterion(m(x), y)

    return model, loss, model.flops_per_token(shape.seq)


def nanogpt(shape: Shape, device: str, folder: str) -> tuple[torch.nn.Module, Callable, int]:
    """nanoGPT's own model.py from ``folder``, same shape (its vocab padded to 50304 as its train.py does)."""
    sys.path.insert(0, folder)
    try:
        import model as nano  # nanoGPT's model.py
    finally:
        sys.path.remove(folder)
    vocab = 50304 if shape.vocab == 50257 else shape.vocab
    cfg = nano.GPTConfig(block_size=shape.seq, vocab_size=vocab, n_layer=shape.n_layer, n_head=shape.n_head,
                         n_embd=shape.n_embd, dropout=0.0, bias=True)
    model = nano.GPT(cfg).to(device)

    def loss(m, x, y):
        return m(x, y)[1]

    # the same FLOPs formula as ours (nanoGPT's estimate_mfu: 6N + 12 L H Q T), so MFU compares like for like
    n = model.get_num_params()
    return model, loss, 6 * n + 12 * shape.n_layer * shape.n_embd * shape.seq


def backend(smoke: bool) -> str:
    """On the CPU smoke run the ``aot_eager`` backend stands in for inductor (the code path, not the kernels)."""
    return "aot_eager" if smoke else "inductor"


def compiled(model: torch.nn.Module, how: str, smoke: bool) -> torch.nn.Module:
    """``whole``: torch.compile of the model; ``per-block``: each transformer block compiled on its own."""
    if how == "whole":
        return torch.compile(model, backend=backend(smoke))
    blocks = model.blocks() if hasattr(model, "blocks") else model.transformer.h
    for block in blocks:
        block.compile(backend=backend(smoke))
    return model


def sdpa_kernel(model: torch.nn.Module, loss: Callable, x: torch.Tensor, y: torch.Tensor, device: str) -> str:
    """Which scaled-dot-product-attention implementation ran (the aten op the profiler saw; flash expected)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, autocast(device):
        loss(model, x, y)
    names = {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key and "attention" in e.key}
    inner = sorted(n for n in names if n != "aten::scaled_dot_product_attention")
    return ", ".join(inner) or ", ".join(sorted(names)) or "none seen"


def top_kernels(model: torch.nn.Module, loss: Callable, x: torch.Tensor, y: torch.Tensor, n: int = 8) -> list:
    """Where a training step's GPU time goes (CUDA only): the ``n`` ops with the most device time, in ms of one
    forward + backward, to find what separates two models of the same shape."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with autocast("cuda"):
            value = loss(model, x, y)
        value.backward()
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    ops = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    ops.sort(key=lambda e: -e.self_device_time_total)
    return [[e.key[:60], round(e.self_device_time_total / 1000, 2)] for e in ops[:n]]


def autocast(device: str):
    return torch.autocast(device, dtype=torch.bfloat16)


def time_steps(model, loss, shape: Shape, device: str, optimizer: Optional[Callable] = None) -> dict[str, Any]:
    """Warm-up steps (the first compiles), then ``shape.steps`` timed ones: seconds of the first step, s/step.
    ``optimizer(model, device)`` builds the optimizer (default: ``adamw`` over every trainable parameter)."""
    torch.manual_seed(0)
    opt = optimizer(model, device) if optimizer else adamw([p for p in model.parameters() if p.requires_grad])
    x = torch.randint(0, shape.vocab, (shape.batch, shape.seq), device=device)
    y = torch.randint(0, shape.vocab, (shape.batch, shape.seq), device=device)

    def step() -> None:
        with autocast(device):
            value = loss(model, x, y)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(shape.warmup - 1):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(shape.steps):
        step()
    sync(device)
    return {"first_step_s": first, "step_s": (time.perf_counter() - t0) / shape.steps, "x": x, "y": y, "opt": opt}


def part_a(shape: Shape, device: str, nano_dir: Optional[str], smoke: bool, clock: Clock) -> list[dict]:
    peak = table_peak(torch.cuda.get_device_name(), "amp_bf16") if device == "cuda" else None
    builders = [("gpt.py", lambda how: ours(shape, device, how, smoke))]
    if nano_dir:
        builders.append(("nanoGPT model.py", lambda how: nanogpt(shape, device, nano_dir)))
    rows = []
    for name, build in builders:
        for how in ("eager", "whole", "per-block"):
            if name != "gpt.py" and how == "per-block":
                continue  # nanoGPT's train.py compiles the whole model
            if clock.left() < 45:
                rows.append({"model": name, "compile": how, "skipped": "over the time budget"})
                continue
            rows.append(measure(name, how, build, shape, device, peak, smoke))
    return rows


def measure(name: str, how: str, build: Callable, shape: Shape, device: str, peak: Optional[float],
            smoke: bool) -> dict[str, Any]:
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, loss, flops = build(how)
    model = model if how == "eager" else compiled(model, how, smoke)
    t = time_steps(model, loss, shape, device)
    tokens_s = shape.batch * shape.seq / t["step_s"]
    return {
        "model": name, "compile": how, "tokens_per_s": round(tokens_s),
        "mfu": None if peak is None else round(flops * tokens_s / peak, 4),
        "first_step_s": round(t["first_step_s"], 2),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "sdpa": sdpa_kernel(model, loss, t["x"], t["y"], device),
        **({"top_ms": top_kernels(model, loss, t["x"], t["y"])} if device == "cuda" and how != "per-block" else {}),
    }


# ----------------------------------------------------------------------------------------------- part B: trainer


def composer_problem() -> Optional[str]:
    """None when Composer and Streaming import on this torch, else the one line saying why not."""
    try:  # what our training script imports, in its order (upstream's work-arounds first: they defer mcli)
        import loaders.dataset  # noqa: F401
        import training.trainer  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means part B cannot run here
        why = f"{type(e).__name__}: {e}"
        return f"part B skipped: Composer/Streaming do not import on torch {torch.__version__} ({why})"
    return None


def prepare(out: Path, seq: int) -> Path:
    """The MDS dataset part B trains on: Tiny Shakespeare (assets/) with the GPT-2 tokenizer, at ``seq`` (x3 at
    seq 1024: 60 steps of 16 x 1024 tokens without repeating an epoch)."""
    from bench.common import prepare_data

    return prepare_data(out, seq_len=seq, tokenizer="gpt2", val_fraction=0.02, copies=3 if seq >= 1024 else 1)


def train_args(ds: Path, runs: Path, shape: Shape, steps: int, *extra: str, saves: int = 1,
               yaml: str = "gpt2-single.yaml") -> list[str]:
    """The trainer's command line. ``saves`` checkpoints in the run: 1 (at the end) for the timed runs, whose timing
    window a 1.5 GB save would otherwise fall in (the first GPU run's trainer/plain read 0.43 that way)."""
    return [str(ROOT / "yamls" / yaml), f"data.path={ds}", f"runs_root={runs}", "run_name=check",
            f"model.n_layer={shape.n_layer}", f"model.n_head={shape.n_head}", f"model.n_embd={shape.n_embd}",
            f"global_train_batch_size={shape.batch}", f"device_train_microbatch_size={shape.batch}",
            f"device_eval_batch_size={shape.batch}", "scheduler.t_warmup=5ba",
            f"max_duration={steps}ba", "eval_interval=100000ba", "eval_subset_num_batches=1",
            f"save_interval={max(1, steps // saves)}ba", "progress_bar=false", "log_interval=100000ba",
            "data.num_workers=2", "data.eval_num_workers=1", *extra]


def launch(args: list[str], log: Path) -> subprocess.Popen:
    composer = str(Path(sys.executable).parent / "composer")
    with open(log, "a") as out:
        return subprocess.Popen([composer, "-n", "1", str(ROOT / "gpt_pile_composer.py"), *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


class TrainerFailed(RuntimeError):
    """A part-B run exited non-zero: the report keeps its log's last lines instead of losing the other rows."""


def trained(run: Path, steps: int, args: list[str], log: Path) -> dict:
    proc = launch(args, log)
    if proc.wait() != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise TrainerFailed(f"the trainer exited {proc.returncode}; the end of its log ({log}):\n" + "\n".join(tail))
    return timings(run, steps)


def timings(run: Path, steps: int) -> dict:
    from bench.common import metrics_rows, step_end_times

    ends = step_end_times(metrics_rows(run))
    warm = max(1, min(5, steps // 3))
    rows = metrics_rows(run)
    mfu = [r["throughput/device/mfu"] for r in rows if "throughput/device/mfu" in r]  # SpeedMonitor's, windowed
    return {"step_s": (ends[-1] - ends[warm - 1]) / (len(ends) - warm), "mfu": round(mfu[-1], 4) if mfu else None,
            "losses": [r["loss/train/total"] for r in rows if "loss/train/total" in r]}


def kill_and_resume(ds: Path, work: Path, shape: Shape, steps: int, reference: dict, *extra: str) -> str:
    """Kill -9 the run once it is past its first checkpoint (of 3), re-run the same command: losses and weights
    must be the uninterrupted run's (``reference``, saved only at its end), bit for bit."""
    runs = work / "killed"
    args = train_args(ds, runs, shape, steps, *extra, saves=3)
    log = work / "killed.log"
    proc = launch(args, log)
    first_save = max(1, steps // 3)
    while len(timings_or_empty(runs / "check")) <= first_save + 2:
        if proc.poll() is not None:
            return "FAILED: the run ended before the kill point"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = trained(runs / "check", steps, args, log)
    same = again["losses"] == reference["losses"]
    weights = same_weights(work / "ddp-eager" / "check", runs / "check")
    return "bit-identical" if same and weights else f"DIFFERS (losses equal: {same}, weights equal: {weights})"


def timings_or_empty(run: Path) -> list:
    from bench.common import metrics_rows

    with contextlib.suppress(Exception):
        return metrics_rows(run)
    return []


def same_weights(a: Path, b: Path) -> bool:
    load = [torch.load(r / "checkpoints" / "latest-rank0.pt", map_location="cpu", weights_only=False) for r in (a, b)]
    wa, wb = (s["state"]["model"] for s in load)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def part_b(ds: Path, shape: Shape, steps: int, device: str, clock: Clock, smoke: bool,
           keep: Optional[str] = None) -> dict:
    """On the CPU smoke run: the plain loop and one DDP run (the code path; compile, FSDP and kill + resume are
    the suite's own tests there). ``keep``: a folder for the runs and their logs, kept afterwards (else a temp
    folder)."""
    problem = composer_problem()
    if problem is not None:
        return {"skipped": problem}
    precision = ["precision=amp_bf16"] if device == "cuda" else ["precision=fp32"]
    eager = ["compile.enabled=false"]  # the GPU yamls compile per block
    variants = {"ddp-eager": eager, "ddp-compiled": ["compile.enabled=true", "compile.per_block=true"],
                "fsdp-eager": ["parallelism=fsdp", *eager]}
    if smoke:
        variants = {"ddp-eager": eager}
    out: dict[str, Any] = {}
    folder = contextlib.nullcontext(str(Path(keep).resolve())) if keep else tempfile.TemporaryDirectory(prefix="gpu-")
    with folder as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out["plain"] = plain_loop(ds, shape, steps, device)
        for name, extra in variants.items():
            if clock.left() < 60:
                out[name] = {"skipped": "over the time budget"}
                continue
            runs = work / name
            try:
                out[name] = trained(runs / "check", steps, train_args(ds, runs, shape, steps, *precision, *extra),
                                    work / f"{name}.log")
            except TrainerFailed as e:
                out[name] = {"failed": str(e)}
        if "losses" in out.get("ddp-eager", {}) and clock.left() > 60 and not smoke:
            try:
                out["kill_resume"] = kill_and_resume(ds, work, shape, steps, out["ddp-eager"], *precision, *eager)
            except TrainerFailed as e:
                out["kill_resume"] = f"FAILED: {e}"
        for result in out.values():
            if isinstance(result, dict):
                result.pop("losses", None)
    return out


def plain_loop(ds: Path, shape: Shape, steps: int, device: str) -> dict:
    """The trainer's step written as a bare loop over the same loader: gpt.py, fused AdamW, bf16 autocast, clip."""
    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec, fetch_metadata
    from loaders.shm import clean_stale_shared_memory

    clean_stale_shared_memory()
    loader = build_dataspec([StreamSource(str(ds))], "train", shape.batch, LoaderSettings(shuffle_seed=17)).dataloader
    model, loss, _ = ours(replace(shape, vocab=fetch_metadata(str(ds), None).vocab_size), device)
    opt = adamw(list(model.parameters()))
    ends, t0 = [], time.perf_counter()
    for batch in loader:
        x, y = batch["input_ids"].to(device), batch["labels"].to(device)
        with autocast(device) if device == "cuda" else contextlib.nullcontext():
            value = loss(model, x, y)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value.item()  # as any loop that logs its loss
        ends.append(time.perf_counter() - t0)
        if len(ends) == steps:
            break
    warm = max(1, min(5, steps // 3))
    return {"step_s": (ends[-1] - ends[warm - 1]) / (len(ends) - warm)}



# ----------------------------------------------------------------------------------- part C: the modern recipe


def modern_model(shape: Shape, device: str, **fields: Any) -> tuple[torch.nn.Module, Callable, int]:
    """(gpt_modern's ModernGPT at ``shape``, its loss, FLOPs per token); its zero-init head drawn at random, so that
    the FP8 head's loss differs from the plain head's by float8's error and not by zero."""
    from gpt_modern import ModernConfig, ModernGPT

    model = ModernGPT(ModernConfig(block_size=shape.seq, vocab_size=shape.vocab, n_layer=shape.n_layer,
                                   n_head=shape.n_head, n_embd=shape.n_embd, dropout=0.0, **fields)).to(device)
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.02)

    def loss(m, x, y):
        return next_token_loss(m(x), y)

    return model, loss, model.flops_per_token(shape.seq)


def muon(model: torch.nn.Module, device: str) -> torch.optim.Optimizer:
    """The trainer's Muon with ``yamls/gpt2-modern.yaml``'s settings (Newton-Schulz in bf16 on CUDA)."""
    from training.config import load_config
    from training.trainer import build_muon

    cfg = load_config(str(ROOT / "yamls" / "gpt2-modern.yaml"), [])
    return build_muon(cfg, model, "gpu" if device == "cuda" else "cpu")


def step_ms(model: torch.nn.Module, loss: Callable, t: dict, device: str, n: int = 5) -> float:
    """Milliseconds of one step of ``t``'s optimizer on one batch's gradients (``time_steps`` cleared its own)."""
    opt = t["opt"]
    with autocast(device):
        value = loss(model, t["x"], t["y"])
    value.backward()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        opt.step()
    sync(device)
    return round((time.perf_counter() - t0) / n * 1000, 2)


def one_batch(model: torch.nn.Module, x: torch.Tensor, device: str) -> torch.Tensor:
    """The logits of one training-mode forward (the FP8 head runs only in training), without a gradient."""
    with torch.no_grad(), autocast(device):
        return model.train()(x).float()


def recipe_row(name: str, shape: Shape, device: str, opt: Optional[Callable], **fields: Any) -> dict[str, Any]:
    """One timed variant of part C: tokens/s and the optimizer's step time. ``fields``: a ModernGPT's config fields;
    none: gpt.py's GPT (stepped with ``adamw`` when ``opt`` is None)."""
    torch._dynamo.reset()
    model, loss, _ = modern_model(shape, device, **fields) if fields else ours(shape, device)
    t = time_steps(model, loss, shape, device, opt)
    return {"recipe": name, "tokens_per_s": round(shape.batch * shape.seq / t["step_s"]),
            "optimizer_step_ms": step_ms(model, loss, t, device), "model": model, "x": t["x"]}


def gpu_only_problem(device: str, what: str) -> Optional[str]:
    """Why a GPU-only part cannot run here (None: it can)."""
    from gpt_modern import fp8_supported

    if what == "fp8" and not fp8_supported(torch.device(device)):
        return "torch._scaled_mm needs CUDA compute capability >= 8.9 (torch has no CPU kernel)"
    if what == "flex" and device != "cuda":
        return "torch 2.7 compiles only FlexAttention's forward on CPU (the model uses SDPA + mask there)"
    return None


def part_c_model(shape: Shape, device: str, clock: Clock) -> list[dict]:
    """gpt.py + AdamW against modern + Muon (tokens/s, optimizer step ms), the FP8 head on and off (tokens/s, loss
    difference on one batch, same weights), a sliding window through FlexAttention and through SDPA with its mask
    (tokens/s, largest logit difference)."""
    plain = recipe_row("gpt.py + AdamW", shape, device, None)
    off = recipe_row("modern + Muon", shape, device, muon, fp8_head="false")
    rows = [plain, off]
    if (why := gpu_only_problem(device, "fp8")) is None and clock.left() > 20:
        on = recipe_row("modern + Muon, FP8 head", shape, device, muon, fp8_head="true")
        on["model"].load_state_dict(off["model"].state_dict())
        x, y = off["x"], torch.roll(off["x"], -1, 1)
        losses = [next_token_loss(one_batch(r["model"], x, device), y).item() for r in (on, off)]
        on["loss_diff_one_batch"] = round(abs(losses[0] - losses[1]), 5)
        rows.append(on)
    else:
        rows.append({"recipe": "modern + Muon, FP8 head", "skipped": why or "over the time budget"})
    window = max(1, shape.seq // 4)
    if (why := gpu_only_problem(device, "flex")) is None and clock.left() > 40:
        flex = recipe_row(f"modern, window {window}, FlexAttention", shape, device, muon, window=window,
                          flex_attention="true")
        dense = recipe_row(f"modern, window {window}, SDPA + mask", shape, device, muon, window=window,
                           flex_attention="false")
        dense["model"].load_state_dict(flex["model"].state_dict())
        diff = one_batch(flex["model"], flex["x"], device) - one_batch(dense["model"], flex["x"], device)
        flex["max_abs_logit_diff"] = round(diff.abs().max().item(), 4)
        rows += [flex, dense]
    else:
        rows.append({"recipe": f"modern, window {window}, FlexAttention", "skipped": why or "over the time budget"})
    for r in rows:
        r.pop("model", None), r.pop("x", None)
    return rows


def part_c_trainer(ds: Path, shape: Shape, steps: int, device: str, work: Path) -> dict:
    """``steps`` of each recipe through our trainer on the carried dataset (eager): plain (``gpt2-single.yaml``)
    and modern (``gpt2-modern.yaml``: its arch, Muon with momentum warmup, WSD), their step time and mean loss over
    the last 10 steps (the shapes and batch are ``shape``'s for both)."""
    precision = "precision=amp_bf16" if device == "cuda" else "precision=fp32"
    out = {}
    for name, yaml in (("plain", "gpt2-single.yaml"), ("modern", "gpt2-modern.yaml")):
        runs = work / f"c-{name}"
        args = train_args(ds, runs, shape, steps, precision, "compile.enabled=false", yaml=yaml)
        try:
            t = trained(runs / "check", steps, args, work / f"c-{name}.log")
        except TrainerFailed as e:
            out[name] = {"failed": str(e)}
            continue
        tail = t.pop("losses")[-10:]
        out[name] = {**t, "last_loss": round(sum(tail) / len(tail), 4)}
    return out


def part_c(ds: Optional[Path], shape: Shape, steps: int, device: str, clock: Clock, keep: Optional[str]) -> dict:
    """Issue 21's GPU check (<= 90 s of the budget on an H200): the model rows, then the two recipes trained."""
    problem = composer_problem()  # training/muon.py is a Composer callback's neighbour
    if problem is not None:
        return {"skipped": problem.replace("part B", "part C")}
    out: dict[str, Any] = {"model": part_c_model(shape, device, clock)}
    if ds is None or clock.left() < 60:
        out["trainer"] = {"skipped": "no --data" if ds is None else "over the time budget"}
        return out
    folder = contextlib.nullcontext(str(Path(keep).resolve())) if keep else tempfile.TemporaryDirectory(prefix="gpu-")
    with folder as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        out["trainer"] = part_c_trainer(ds, shape, steps, device, Path(tmp))
    return out


UNPINNED = {"zstd"}  # the lock's pin has no Python 3.12 wheel: any version that has one
# Imported only when present (torchmetrics' plots, Composer's SFTP store, huggingface_hub's xet transfers): left out
# so the wheels fit the device tool's 64 MiB carry. Checked on Python 3.12 + torch 2.11 without them: both parts run.
OPTIONAL = {"matplotlib", "fonttools", "kiwisolver", "cycler", "contourpy", "paramiko", "bcrypt", "pynacl",
            "cryptography", "hf-xet"}


# The GPU machine's image has these (torch 2.11's torchvision 0.26, numpy 2.5.2): part B ran on them on an H200.
ON_THE_GPU_MACHINE = {"torch", "torchvision", "setuptools", "numpy"}


def wheel_list() -> list[str]:
    """The distributions our training script imports (measured: its modules imported here, mapped to what
    installed them), without torch and torch's own requirements (the GPU machine has them): ``name==version`` as
    this venv holds them (the lock's pins), for the ``pip download --no-deps`` of BENCHMARKS.md (Python 3.12)."""
    import importlib
    import importlib.metadata as md
    import re

    for module in ("gpt_pile_composer", "training.trainer", "training.resume", "callbacks", "loaders.dataset"):
        importlib.import_module(module)
    # the ``composer`` launcher imports all of Composer without our work-arounds (mcli and its needs too)
    launcher = subprocess.run([sys.executable, "-c", "import sys, composer.cli.launcher; print(*sys.modules)"],
                              capture_output=True, text=True, check=True).stdout.split()
    owners = md.packages_distributions()
    dists = {d for name in [*sys.modules, *launcher] for d in owners.get(name.split(".")[0], [])}
    torch_own = {re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0].lower() for r in md.requires("torch") or []}
    skip = torch_own | OPTIONAL | ON_THE_GPU_MACHINE
    keep = sorted(d for d in dists if d.lower().replace("_", "-") not in skip)
    return [d if d.lower() in UNPINNED else f"{d}=={md.version(d)}" for d in keep]


# ---------------------------------------------------------------------------------------------------------- report


def report_a(rows: list[dict], shape: Shape) -> None:
    """Part A's rows, printed as soon as they exist (part B cannot lose them)."""
    print(f"part A: gpt.py (and nanoGPT) {shape.n_layer}L {shape.n_head}H {shape.n_embd}C seq {shape.seq} "
          f"batch {shape.batch}, bf16 autocast, AdamW; {shape.steps} timed steps")
    for r in rows:
        print("  " + json.dumps(r))
    base = {r["compile"]: r["tokens_per_s"] for r in rows if r["model"] == "gpt.py" and "tokens_per_s" in r}
    for r in rows:
        if r["model"] != "gpt.py" and "tokens_per_s" in r and r["compile"] in base:
            print(f"  gpt.py / nanoGPT ({r['compile']}): {base[r['compile']] / r['tokens_per_s']:.3f} (goal >= 1.0)")
    sys.stdout.flush()


def report_b(b: dict) -> None:
    print("part B: our trainer (gpt_pile_composer.py, composer -n 1)")
    if "skipped" in b:
        print(f"  {b['skipped']}")
        return
    for name, result in b.items():
        print(f"  {name}: {json.dumps(result)}")
    for name in ("ddp-eager", "fsdp-eager"):
        if "step_s" in b.get(name, {}):
            print(f"  trainer / plain ({name}): {b['plain']['step_s'] / b[name]['step_s']:.3f} (goal >= 0.97)")


def report_c(c: dict) -> None:
    print("part C: the modern recipe (issue 21)")
    if "skipped" in c:
        print(f"  {c['skipped']}")
        return
    for row in c["model"]:
        print("  " + json.dumps(row))
    rate = {r["recipe"]: r.get("tokens_per_s") for r in c["model"]}
    print(f"  modern + Muon / gpt.py + AdamW tokens/s (eager): {rate['modern + Muon'] / rate['gpt.py + AdamW']:.3f}")
    trainer = c["trainer"]
    for name, result in [("", trainer)] if "skipped" in trainer else trainer.items():
        print(f"  trainer {name}: {json.dumps(result)}".replace("trainer : ", "trainer: "))
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU (what the test suite runs)")
    parser.add_argument("--prepare", metavar="DIR", help="write part B's dataset into DIR and stop")
    parser.add_argument("--data", metavar="DIR", help="part B's dataset (from --prepare); without it, part A only")
    parser.add_argument("--nanogpt", metavar="DIR", help="a nanoGPT checkout: its model.py beside ours in part A")
    parser.add_argument("--steps-b", type=int, default=60, help="part B's training steps per run")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds; variants past it are skipped")
    parser.add_argument("--parts", default="acb", help="which parts to run, in this order (default acb: all three)")
    parser.add_argument("--steps-c", type=int, default=150, help="part C's training steps per recipe")
    parser.add_argument("--work", metavar="DIR", help="part B's runs and logs go here and are kept (else a temp dir)")
    parser.add_argument("--wheel-list", action="store_true", help="print the pins to download for the GPU machine")
    args = parser.parse_args()
    if args.wheel_list:
        print("\n".join(wheel_list()))
        return 0
    shape = SMOKE_SHAPE if args.cpu_smoke else GPU_SHAPE
    if args.prepare:
        print(f"part B's dataset: {prepare(Path(args.prepare), shape.seq)}")
        return 0
    device = "cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu"
    if device == "cpu" and not args.cpu_smoke:
        print("error: no CUDA device; run with --cpu-smoke for the CPU smoke run", file=sys.stderr)
        return 2
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}")
    clock = Clock(args.budget)
    if not args.parts or set(args.parts) - set("abc"):
        print(f"error: --parts takes the letters a, b and c (e.g. acb), got {args.parts!r}", file=sys.stderr)
        return 2
    data = Path(args.data).resolve() if args.data else None
    for part in args.parts:
        if part == "a":
            report_a(part_a(shape, device, args.nanogpt, args.cpu_smoke, clock), shape)
        elif part == "c":
            report_c(part_c(data, shape, args.steps_c, device, clock, args.work))
        elif data is not None:
            report_b(part_b(data, shape, args.steps_b, device, clock, args.cpu_smoke, args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
