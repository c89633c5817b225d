"""bench/gpu_check.py cannot rot: its CPU smoke run (tiny shapes, both parts) runs here, as the GPU check does."""
from __future__ import annotations

import json
import math
import re
import subprocess

import pytest

from tests.helpers import PYTHON, REPO, train_env

pytestmark = pytest.mark.slow  # trains with the launcher


def gpu_check(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(REPO / "bench" / "gpu_check.py"), *args], cwd=cwd, env=train_env(),
                          capture_output=True, text=True, timeout=600)


def test_cpu_smoke_runs_both_parts_and_reports_them(tmp_path):
    prepared = gpu_check("--cpu-smoke", "--prepare", str(tmp_path / "data"), cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    data = prepared.stdout.strip().splitlines()[-1].removeprefix("part B's dataset: ")
    proc = gpu_check("--cpu-smoke", "--data", data, "--steps-b", "6", "--steps-c", "12", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("  {")]
    part_a = [r for r in rows if "model" in r]
    assert [(r["model"], r["compile"]) for r in part_a] == [("gpt.py", "eager"), ("gpt.py", "whole"),
                                                            ("gpt.py", "per-block")]
    assert all(r["tokens_per_s"] > 0 and "scaled_dot_product" in r["sdpa"] for r in part_a)
    assert "trainer / plain (ddp-eager): " in proc.stdout
    # part C (issue 21): both recipes timed with their optimizer's step; the GPU-only parts say why they are skipped
    part_c = {r["recipe"]: r for r in rows if "recipe" in r}
    assert all(part_c[k]["tokens_per_s"] > 0 and part_c[k]["optimizer_step_ms"] > 0
               for k in ("gpt.py + AdamW", "modern + Muon"))
    assert part_c["modern + Muon, FP8 head"]["skipped"].startswith("torch._scaled_mm needs CUDA compute capability")
    assert "FlexAttention's forward on CPU" in part_c["modern, window 16, FlexAttention"]["skipped"]
    trained = {m.group(1): json.loads(m.group(2))
               for m in re.finditer(r"^  trainer (plain|modern): (\{.*\})$", proc.stdout, re.M)}
    assert sorted(trained) == ["modern", "plain"], proc.stdout[-3000:]
    assert all(t["step_s"] > 0 and 0 < t["last_loss"] < math.log(50257) + 1 for t in trained.values()), trained


def test_without_a_gpu_it_says_how_to_run_on_cpu(tmp_path):
    proc = gpu_check(cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "error: no CUDA device; run with --cpu-smoke for the CPU smoke run"
