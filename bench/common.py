"""Helpers the benchmarks share: the Tiny Shakespeare dataset they train on, and reading our trainer's timings."""
from __future__ import annotations

import json
from pathlib import Path

from core.runs import read_metrics

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT / "assets" / "tinyshakespeare.txt"
GPT2_TOKENIZER = ROOT / "assets" / "gpt2"


def prepare_data(work: Path, seq_len: int = 64, tokenizer: str = "bytes", val_fraction: float = 0.1,
                 copies: int = 1) -> Path:
    """Tiny Shakespeare converted by our converter: paragraphs as documents, ``val_fraction`` of them (by hash) for
    val. ``tokenizer`` is ``bytes``, ``chars`` or ``gpt2`` (the shipped GPT-2 BPE folder); ``copies`` > 1 repeats
    the text (a bigger dataset, same paragraphs, same split). Returns the dataset root."""
    from conversion.convert import convert

    src = work / "src" / f"shakespeare-x{copies}.jsonl"
    if not src.exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "w") as f:
            for _ in range(copies):
                for para in SHAKESPEARE.read_text().split("\n\n"):
                    if para.strip():
                        f.write(json.dumps({"text": para + "\n\n"}) + "\n")
    out = work / (f"shakespeare-{tokenizer}-{seq_len}" + (f"-x{copies}" if copies > 1 else ""))
    spec = str(GPT2_TOKENIZER) if tokenizer == "gpt2" else tokenizer
    convert([str(src)], str(out), spec, seq_len, val_fraction=val_fraction, progress=False)
    return out


def metrics_rows(run_dir: Path) -> list[dict]:
    """Our trainer's metrics.jsonl: one row per step."""
    return read_metrics(run_dir)


def step_end_times(rows: list[dict]) -> list[float]:
    """Training seconds at the end of each step 1..N (SpeedMonitor's ``time/train``: wall time of the training loop,
    data loading included, eval excluded), from the trainer's metrics rows."""
    by_step = {r["step"]: r["time/train"] for r in rows if "time/train" in r}
    return [by_step[s] for s in sorted(by_step)]


def timed_rate(ends: list[float], warmup: int, tokens_per_step: int) -> tuple[float, float]:
    """(tokens/s over the steps after the first ``warmup``, tokens/s of the fastest such step), from the wall times
    at which steps 1..N ended. Both loops are timed this way: from the end of step ``warmup`` to the end of step N."""
    if not 1 <= warmup < len(ends):
        raise ValueError(f"need 1 <= warmup < steps, got warmup {warmup} of {len(ends)} steps")
    durations = [b - a for a, b in zip(ends[warmup - 1:-1], ends[warmup:])]
    return tokens_per_step * len(durations) / sum(durations), tokens_per_step / min(durations)
