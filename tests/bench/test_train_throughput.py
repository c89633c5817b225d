"""bench/train_throughput.py part 3 without llm-foundry: the yaml it hands llm-foundry's trainer has the shape and
the run we claim, its step times are read back as ours are, and the part cannot start without its venv."""
from __future__ import annotations

import subprocess

from bench.train_throughput import BATCH, SEQ, YAML, foundry_config, foundry_step_end_times, overrides
from gpt import PRESETS
from tests.helpers import PYTHON, REPO, train_env
from training.config import load_config


def test_the_llm_foundry_yaml_is_our_mini_run(tmp_path):
    ds, log = tmp_path / "ds", tmp_path / "metrics.txt"
    cfg = foundry_config(ds, 50257, 20, log)
    ours = load_config(str(YAML), overrides(str(ds), 20, "fp32"))
    m, mini = cfg["model"], PRESETS["mini"]
    assert (m["name"], m["n_layers"], m["n_heads"], m["d_model"]) == ("mpt_causal_lm", mini["n_layer"],
                                                                       mini["n_head"], mini["n_embd"])
    assert (m["expansion_ratio"], m["max_seq_len"], m["vocab_size"], cfg["max_seq_len"]) == (4, SEQ, 50257, SEQ)
    assert (m["attn_config"]["attn_impl"], m["resid_pdrop"], m["emb_pdrop"], m["attn_config"]["attn_pdrop"]) == \
        ("torch", 0.0, 0.0, 0.0)
    assert (m["no_bias"], m["learned_pos_emb"], m["use_train_metrics"]) == (False, True, False)
    assert (cfg["precision"], cfg["global_train_batch_size"], cfg["device_train_microbatch_size"]) == \
        ("fp32", BATCH, BATCH)
    assert cfg["max_duration"] == "20ba" and "eval_loader" not in cfg and "save_folder" not in cfg
    o, our_o = cfg["optimizer"], ours.optimizer
    assert (o["name"], o["lr"], o["betas"], o["weight_decay"]) == \
        ("decoupled_adamw", our_o.lr, list(our_o.betas), our_o.weight_decay * our_o.lr)
    assert cfg["algorithms"]["gradient_clipping"]["clipping_threshold"] == ours.grad_clip_norm == 1.0
    data = cfg["train_loader"]["dataset"]
    assert (data["local"], data["split"], data["max_seq_len"]) == (str(ds), "train", SEQ)
    assert cfg["tokenizer"]["name"] == str(ds / "tokenizer")
    assert cfg["loggers"]["file"]["filename"] == str(log)
    assert cfg["callbacks"]["speed_monitor"]["time_unit"] == "seconds"


def test_step_end_times_come_from_its_file_logger():
    text = ("[metric][batch=2]: time/train: 2.5000 \n[metric][batch=2]: time/val: 0.0000 \n"
            "[metric][batch=1]: time/train: 1.2500 \n[hyperparameter]: seed: 17 \n"
            "[metric][batch=3]: loss/train/total: 9 \n[metric][batch=3]: time/train: 3.7500 \n")
    assert foundry_step_end_times(text) == [1.25, 2.5, 3.75]


def test_part_3_needs_its_venv(tmp_path):
    script = str(REPO / "bench" / "train_throughput.py")
    run = lambda *a: subprocess.run([PYTHON, script, *a], cwd=tmp_path, env=train_env(),  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    alone = run("--foundry-only")
    assert alone.returncode == 2 and "--foundry-only needs --foundry-venv DIR" in alone.stderr
    missing = run("--foundry-venv", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no bin/python there" in missing.stderr
