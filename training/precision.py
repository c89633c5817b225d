"""``precision: auto``: the faster of fp32 and bf16 autocast for this model, batch and device, chosen once per run.

On a GPU the rule is fixed (bf16 autocast, fp16 where the GPU has no bf16): tensor cores make it the faster one at
every GPT-2 size. On a CPU it depends on the shape and the chip: with AMX or AVX512-BF16 a bf16 matmul is several
times an fp32 one, but at small widths the casts cost more than the matmuls save (BENCHMARKS.md: the nanoGPT
shape trains faster in fp32). So rank 0 times one forward + backward of the real model on a batch of the real shape
in each precision and every rank takes its answer. A run keeps the precision its first start chose
(``RUN/precision.json``), so a requeued run computes what it computed before its kill.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from composer.utils import dist

from core.files import write_atomic
from core.runs import PRECISION_FILE
from gpt import GPT, next_token_loss
from training.config import AUTO

PROBE_REPEATS = 3  # timed steps per precision, after one warm-up step each (oneDNN builds its bf16 kernels)
BF16_MARGIN = 0.95  # bf16 must be at least 5 % faster: between near-equal times, keep fp32's exactness


@dataclass
class PrecisionChoice:
    """What ``auto`` became, and why (printed at start)."""

    precision: str
    why: str


def choose_precision(configured: str, gpt: GPT, batch: int, seq_len: int, device: str,
                     run_dir: str) -> PrecisionChoice:
    """The precision to train with: ``configured`` unless it is ``auto``. Rank 0 decides and records it; every rank
    gets its answer (call on every rank, before the model is compiled or wrapped)."""
    if configured != AUTO:
        return PrecisionChoice(configured, "set in the config")
    choice: list[PrecisionChoice | None] = [None]
    if dist.get_global_rank() == 0:
        choice[0] = recorded_choice(run_dir)
        if choice[0] is None:  # the run's first start: measure, and record what was measured
            choice[0] = decide(gpt, batch, seq_len, device)
            write_atomic(str(Path(run_dir) / PRECISION_FILE), json.dumps(asdict(choice[0])) + "\n")
    dist.broadcast_object_list(choice)
    assert choice[0] is not None
    return choice[0]


def recorded_choice(run_dir: str) -> PrecisionChoice | None:
    """What an earlier start of this run chose, if it chose."""
    path = Path(run_dir) / PRECISION_FILE
    if not path.is_file():
        return None
    saved = PrecisionChoice(**json.loads(path.read_text(encoding="utf-8")))
    return PrecisionChoice(saved.precision, f"kept from this run's first start, where {saved.why}")


def decide(gpt: GPT, batch: int, seq_len: int, device: str) -> PrecisionChoice:
    """GPU: the fixed rule. CPU: the measured faster one."""
    if device != "cpu":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("amp_bf16", "bf16 autocast on a GPU with bf16")
        return PrecisionChoice("amp_fp16", "fp16 autocast: this GPU has no bf16")
    fp32, bf16 = probe_cpu(gpt, batch, seq_len)
    shape = f"a forward + backward of {batch} x {seq_len} took {fp32 * 1e3:.1f} ms in fp32, {bf16 * 1e3:.1f} ms in bf16"
    if bf16 < BF16_MARGIN * fp32:
        return PrecisionChoice("amp_bf16", f"{shape} on this CPU")
    return PrecisionChoice("fp32", f"{shape} on this CPU (bf16 must be 5 % faster)")


def probe_cpu(gpt: GPT, batch: int, seq_len: int) -> tuple[float, float]:
    """Seconds of one forward + backward in fp32 and in bf16 autocast (best of PROBE_REPEATS, interleaved so that
    other load on the machine slows both alike). Leaves no gradients and no trace in the global RNG; the weights
    are not touched (no optimizer step: it runs in fp32 either way)."""
    idx = torch.randint(0, gpt.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.random.fork_rng(devices=[]):
        for _ in range(PROBE_REPEATS + 1):
            for bf16 in times:
                times[bf16].append(_step_seconds(gpt, idx, bf16))
    for p in gpt.parameters():
        p.grad = None
    return min(times[False][1:]), min(times[True][1:])


def _step_seconds(gpt: GPT, idx: torch.Tensor, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = gpt(idx)  # (B, T, V)
    next_token_loss(logits, idx).backward()
    return time.perf_counter() - start
