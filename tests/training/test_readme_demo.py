"""README, "Two commands": `make demo` tokenizes ~6 MB of this Python's standard library with the built-in byte
tokenizer, trains `yamls/tiny.yaml` (a 1.8M-parameter GPT) on CPU, then prints the final val loss, bits/byte and a
generated sample, and writes `runs/tiny/loss.png`. It needs no network and no GPU.

`make demo` is `.venv/bin/python scripts/demo.py`, which writes data/demo, data/demo_src and runs/ inside the
repository; so the test runs it in a copy of the repository under tmp_path. Extra arguments of scripts/demo.py are
training overrides: the run is cut to 40 steps to keep the suite short (the yaml's 1000 are checked as written).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO

pytestmark = pytest.mark.slow

STEPS = 40
SKIP_TOP = {"tests", "bench", "runs", "data", "wandb"}


def _copy_repo(dst: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
        if Path(folder) == REPO:
            skipped |= {n for n in names if n in SKIP_TOP or n.startswith(".")}
        return skipped

    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


def test_make_demo_end_to_end(tmp_path):
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t\$\(PY\) scripts/demo\.py$", makefile, re.M), "make demo no longer runs demo.py"
    tiny = (REPO / "yamls" / "tiny.yaml").read_text()
    assert re.search(r"^max_duration: 1000ba$", tiny, re.M) and re.search(r"^run_name: tiny$", tiny, re.M)

    repo = _copy_repo(tmp_path / "repo")
    env = dict(os.environ, WANDB_MODE="offline", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               # no network: any attempt to reach one fails at once
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    proc = subprocess.run([PYTHON, str(repo / "scripts" / "demo.py"), f"max_duration={STEPS}ba", "eval_interval=20ba",
                           "save_interval=20ba", "progress_bar=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout

    # the dataset: ~6 MB of the standard library, byte-tokenized, written inside the (copied) repository
    meta = json.loads((repo / "data" / "demo" / "metadata.json").read_text())
    assert meta["tokenizer"]["kind"] == "bytes" and meta["vocab_size"] == 257 and meta["seq_len"] == 128
    total = sum(s["bytes"] for s in meta["splits"].values())
    assert 5.5e6 < total < 7e6, total
    assert set(meta["splits"]) == {"train", "val"}

    # the run: yamls/tiny.yaml's model, ~1.8M parameters
    run = repo / "runs" / "tiny"
    from gpt import GPT, GPTConfig

    config = GPTConfig(**json.loads((run / "model.json").read_text()))
    assert (config.n_layer, config.n_embd, config.block_size, config.vocab_size) == (4, 192, 128, 257)
    assert GPT(config).num_params(non_embedding=False) == pytest.approx(1.8e6, rel=0.05)

    # what it prints: the final val loss and bits/byte (the run's last logged val), a sample, the plot
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "metrics/val/LanguageCrossEntropy" in r][-1]
    assert last["step"] == STEPS and rows[-1]["step"] == STEPS
    loss = re.search(r"^final val loss +([0-9.]+) nats/token \(step (\d+)\)$", out, re.M)
    bpb = re.search(r"^final val bpb +([0-9.]+) bits/byte$", out, re.M)
    assert loss and bpb, out[-2000:]
    assert int(loss.group(2)) == STEPS
    assert float(loss.group(1)) == pytest.approx(last["metrics/val/LanguageCrossEntropy"], abs=1e-4)
    assert float(bpb.group(1)) == pytest.approx(last["metrics/val/BitsPerByte"], abs=1e-4)
    assert float(loss.group(1)) < 5.0  # below uniform over 257 ids (5.55): it trained
    # the precision tiny.yaml's `auto` chose on this machine, and why: the times it measured, as recorded
    chosen = re.search(r"^precision +(fp32|amp_bf16) \(auto: a forward \+ backward of 24 x 128 took [\d.]+ ms in fp32, "
                       r"[\d.]+ ms in bf16 on this CPU", out, re.M)
    assert chosen, out[-2000:]
    assert json.loads((run / "precision.json").read_text())["precision"] == chosen.group(1)
    assert f"\nprecision: {chosen.group(1)}\n" in (run / "config.yaml").read_text()
    # the next-line multiple-choice task, scored at each eval (eval_tasks) and printed by step
    scores = {r["step"]: r["metrics/next_line/acc_norm"] for r in rows if "metrics/next_line/acc_norm" in r}
    assert sorted(scores) == [20, 40]
    shown = re.search(r"^next-line choice acc_norm by step (.*)  \(chance 0.25; 200 items\)$", out, re.M)
    assert shown and shown.group(1) == ", ".join(f"{k}: {v:.2f}" for k, v in sorted(scores.items())), out[-2000:]
    items = [json.loads(line) for line in (repo / "data" / "demo_src" / "next_line.jsonl").read_text().splitlines()]
    assert len(items) == 200 and all(len(i["endings"]) == 4 and len(set(i["endings"])) == 4 for i in items)
    assert all(len({"".join(sorted(e)) for e in i["endings"]}) == 1 for i in items)  # one line's words, reordered
    png = run / "loss.png"
    assert re.search(rf"^loss curve +{re.escape(str(png))}$", out, re.M)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    sample = re.search(r"^sample .*\n-{72}\n(.*?)\n-{72}$", out, re.M | re.S)
    assert sample, out[-2000:]
    assert sample.group(1).startswith("def ") and len(sample.group(1)) > 50
