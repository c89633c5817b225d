"""bench/nanogpt_parity.py's pieces that need no nanoGPT checkout: the fast recipe's claim and the val-row follower."""
from __future__ import annotations

import json

from bench.nanogpt_parity import FAST_YAML, YAML, _val_at_or_below
from training.config import load_config, plain_config


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_the_fast_recipe_changes_only_lr_batch_schedule_and_eval_cadence():
    """'A better lr, schedule or batch on the same data': the model, data, optimizer kind and precision rule stay
    (Adam's betas change with the lr)."""
    base, fast = (_flat(plain_config(load_config(str(y), []))) for y in (YAML, FAST_YAML))
    changed = {k for k in base if base[k] != fast[k]}
    assert changed == {"run_name", "global_train_batch_size", "device_train_microbatch_size", "max_duration",
                       "eval_interval", "save_interval", "optimizer.lr", "optimizer.betas", "scheduler.name",
                       "scheduler.t_warmup", "scheduler.decay_fraction", "scheduler.alpha_f", "log_interval"}
    assert fast["device_eval_batch_size"] == base["device_eval_batch_size"]  # the same 20 val batches


def test_a_val_row_counts_once_complete(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 3.0}, {"step": 100, "metrics/val/LanguageCrossEntropy": 2.0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 200, "metrics/val/Lang')
    below, offset = _val_at_or_below(metrics, 0, 1.9)
    assert not below and offset == len(metrics.read_text()) - len('{"step": 200, "metrics/val/Lang')
    with open(metrics, "a") as f:
        f.write('uageCrossEntropy": 1.8}\n')  # the torn row lands whole
    assert _val_at_or_below(metrics, offset, 1.9)[0]
    assert not _val_at_or_below(metrics, 0, 1.5)[0]
