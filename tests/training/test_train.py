"""End-to-end training through gpt_pile_composer.py with the real Composer Trainer and StreamingDataset."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from core.errors import ConfigError
from tests.helpers import (
    LOSS,
    assert_view_is_metrics_jsonl,
    make_dataset,
    metrics_rows,
    one_error,
    run_train,
    tiny_args,
    train_env,
)
from training.config import load_config


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory) -> tuple[Path, str]:
    runs = tmp_path_factory.mktemp("runs")
    proc = run_train(tiny_args(dataset, runs, "run_name=e2e", "max_duration=60ba", "eval_interval=30ba",
                               "save_interval=20ba", "save_num_checkpoints_to_keep=2"))
    return runs / "e2e", proc.stdout


@pytest.mark.slow
def test_run_folder_has_config_metrics_and_checkpoints(tiny_run):
    run_dir, _ = tiny_run
    assert (run_dir / "config.yaml").read_text().count("max_duration: 60ba") == 1
    model = json.loads((run_dir / "model.json").read_text())
    assert model["block_size"] == 32 and model["vocab_size"] == 257  # read from the dataset, not typed
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("ep*-ba*-rank0.pt"))
    assert ckpts == ["ep0-ba40-rank0.pt", "ep0-ba60-rank0.pt"]  # keep-2 dropped ba20
    assert (run_dir / "checkpoints" / "latest-rank0.pt").resolve().name == "ep0-ba60-rank0.pt"


@pytest.mark.slow
def test_metrics_jsonl_one_row_per_step_and_loss_falls(tiny_run):
    rows = metrics_rows(tiny_run[0])
    assert [r["step"] for r in rows] == list(range(1, 61))
    losses = [r["loss/train/total"] for r in rows]
    assert math.isclose(losses[0], math.log(257), rel_tol=0.05)  # N(0, 0.02) init: near uniform
    assert sum(losses[-10:]) / 10 < losses[0] - 1.0
    val = [r for r in rows if "metrics/val/LanguageCrossEntropy" in r]
    assert [r["step"] for r in val] == [30, 60]
    assert val[1]["metrics/val/LanguageCrossEntropy"] < val[0]["metrics/val/LanguageCrossEntropy"]
    last = val[-1]
    # bytes tokenizer: one byte per token except EOS, so bits/byte is close to loss / ln 2
    assert last["metrics/val/BitsPerByte"] == pytest.approx(last["metrics/val/LanguageCrossEntropy"] / math.log(2),
                                                            rel=0.05)
    assert last["metrics/val/LanguagePerplexity"] == pytest.approx(math.exp(last["metrics/val/LanguageCrossEntropy"]),
                                                                   rel=1e-4)
    assert 0 < last["metrics/val/TokenAccuracy"] < 1


@pytest.mark.slow
def test_monitors_log_throughput_lr_and_grad_norm(tiny_run):
    rows = metrics_rows(tiny_run[0])
    row = rows[-1]
    assert row["throughput/tokens_per_sec"] > 0
    flops = row["throughput/flops_per_sec"] / row["throughput/tokens_per_sec"]
    model = json.loads((tiny_run[0] / "model.json").read_text())
    from gpt import GPT, GPTConfig

    expected = GPT(GPTConfig(**model)).flops_per_token(32)
    assert flops == pytest.approx(expected, rel=0.02)  # SpeedMonitor is fed our FLOPs per token
    assert "lr-DecoupledAdamW/group0" in row and "l2_norm/grad/global" in rows[9]
    assert "time/remaining_estimate" in row


@pytest.mark.slow
def test_startup_summary_printed(tiny_run):
    out = tiny_run[1]
    assert "parameters" in out and "FLOPs/token" in out and "tokens/step  256 (8 x 32" in out
    assert "run_name: e2e" in out
    assert "MFU peak     none on CPU: MFU not reported (set peak_flops=FLOP/s to report it)" in out


@pytest.mark.slow
def test_rerun_same_run_name_autoresumes(dataset, tmp_path):
    args = tiny_args(dataset, tmp_path, "run_name=again", "eval_interval=1000ba", "save_interval=10ba")
    run_train([*args, "max_duration=20ba"])
    first = metrics_rows(tmp_path / "again")
    run_train([*args, "max_duration=30ba"])
    rows = metrics_rows(tmp_path / "again")
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert rows[:20] == first  # steps 1-20 were not redone (their wall-clock figures would differ)
    ckpt = torch.load(tmp_path / "again" / "checkpoints" / "latest-rank0.pt", weights_only=False)
    assert ckpt["state"]["timestamp"]["Timestamp"]["batch"] == 30
    done = run_train([*args, "max_duration=30ba"])  # a finished run re-run: nothing to do, not a traceback
    assert "run again already reached max_duration=30ba; nothing to train" in done.stdout
    assert "Traceback" not in done.stderr and metrics_rows(tmp_path / "again") == rows


@pytest.mark.slow
def test_two_rank_launch_trains(dataset, tmp_path):
    env = {k: v for k, v in train_env().items() if k != "OMP_NUM_THREADS"}  # the suite's, on several workers
    proc = run_train(tiny_args(dataset, tmp_path, "run_name=ddp", "max_duration=6ba", "eval_interval=6ba",
                               "save_interval=6ba", "tensorboard.enabled=true"), nproc=2, env=env)
    rows = metrics_rows(tmp_path / "ddp")
    assert [r["step"] for r in rows] == list(range(1, 7))
    # TensorBoard: rank 0's event file only (Composer's TensorboardLogger writes one a rank), metrics.jsonl's points
    assert len(list((tmp_path / "ddp" / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    assert [s for s, _ in assert_view_is_metrics_jsonl(tmp_path / "ddp")[LOSS]] == list(range(1, 7))
    cores = os.cpu_count() or 1
    assert f"4 per rank x 2 ranks; {max(1, cores // 2)} CPU threads per rank" in proc.stdout  # cores split, as torchrun
    assert (tmp_path / "ddp" / "checkpoints" / "ep0-ba6-rank0.pt").exists()


# Config errors: load_config in-process (pytest.raises names the message); one end-to-end check that the script
# turns such an error into one `error:` line and exit 2.


def test_unknown_dotlist_key_lists_valid_keys(tmp_path):
    args = tiny_args(tmp_path / "ds", tmp_path, "data.pth=x")
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.pth'; valid keys under 'data': path, cache, "
                                          "streams"):
        load_config(args[0], args[1:])


def test_typo_in_yaml_key_lists_valid_keys(tmp_path):
    yaml = tmp_path / "typo.yaml"
    yaml.write_text(f"data:\n  path: {tmp_path / 'ds'}\nmax_duraton: 10ba\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'max_duraton'; valid keys at top level: .*max_duration"):
        load_config(str(yaml), [f"runs_root={tmp_path}"])
    assert [p.name for p in tmp_path.iterdir()] == ["typo.yaml"]  # nothing was created
    assert not (tmp_path / "runs").exists()


def test_wrong_type_is_named(tmp_path):
    args = tiny_args(tmp_path / "ds", tmp_path, "global_train_batch_size=many")
    with pytest.raises(ConfigError, match=r"config key 'global_train_batch_size': .*many"):
        load_config(args[0], args[1:])


def test_missing_yaml(tmp_path):
    missing = tmp_path / "yamls" / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(missing))} does not exist"):
        load_config(str(missing))


def test_config_error_is_one_error_line_exit_2(tmp_path):
    """End to end: the script reports a config error as one `error:` line, exit 2, no traceback, and starts no run."""
    proc = run_train(tiny_args(tmp_path / "ds", tmp_path, "run_name=typo", "data.pth=x"), check=False, timeout=120)
    one_error(proc, "'data.pth'", "path, cache, streams")
    assert not (tmp_path / "typo").exists()


def test_unknown_optimizer_is_one_error_line_naming_the_valid_ones(tmp_path):
    proc = run_train(tiny_args(tmp_path / "ds", tmp_path, "run_name=sgd", "optimizer.name=sgd"), check=False)
    one_error(proc, "optimizer.name='sgd'; valid: decoupled_adamw, adamw")
    assert not (tmp_path / "sgd").exists()


@pytest.mark.parametrize("override, needles", [
    ("device_train_microbatch_size=auto", ("device_train_microbatch_size=auto needs a GPU",
                                           "set a number", "device_train_microbatch_size=8 ")),
    ("precision=amp_fp16", ("precision=amp_fp16 needs a GPU", "precision=amp_bf16", "precision=fp32")),
])
def test_gpu_only_settings_are_refused_on_cpu_at_start(dataset, tmp_path, override, needles):
    """Valid config (a GPU takes them), refused where the device is decided: one line naming the fix, before the
    run folder, the data or the weights."""
    proc = run_train(tiny_args(dataset, tmp_path, "run_name=gpu-only", override), check=False, timeout=120)
    one_error(proc, *needles)
    assert not (tmp_path / "gpu-only").exists()


@pytest.mark.slow
def test_data_path_without_metadata(tmp_path):
    empty = tmp_path / "not-a-dataset"
    empty.mkdir()
    proc = run_train(tiny_args(empty, tmp_path / "runs"), check=False)
    one_error(proc, "metadata.json", "convert_to_mds.py")
    proc = run_train(tiny_args(tmp_path / "missing", tmp_path / "runs"), check=False)
    one_error(proc, "does not exist")


@pytest.mark.slow
def test_bf16_on_cpu_trains_like_fp32(tiny_run, dataset, tmp_path):
    """precision=amp_bf16 on CPU (Composer allows only fp32 there): the forward autocasts itself to bf16. Same init
    and batches as the fp32 tiny_run: the losses differ (another arithmetic) but track it, and fall."""
    run_train(tiny_args(dataset, tmp_path, "run_name=bf16", "precision=amp_bf16", "max_duration=60ba",
                        "eval_interval=60ba", "save_interval=60ba"))  # tiny_run's schedule
    bf16, fp32 = metrics_rows(tmp_path / "bf16"), metrics_rows(tiny_run[0])
    pairs = [(a["loss/train/total"], b["loss/train/total"]) for a, b in zip(bf16, fp32)]
    assert len(pairs) == 60 and pairs[0][0] != pairs[0][1]
    assert max(abs(a - b) for a, b in pairs) < 0.05, pairs
    assert sum(a for a, _ in pairs[-10:]) / 10 < pairs[0][0] - 1.0
    val = bf16[-1]["metrics/val/LanguageCrossEntropy"]
    assert val == pytest.approx(bf16[-1]["metrics/val/BitsPerByte"] * math.log(2), rel=0.05)


def test_cpu_bf16_forward_runs_in_bf16():
    from gpt import GPTConfig
    from training.config import TrainConfig
    from training.model import ComposerGPT
    from training.trainer import apply_precision

    model = ComposerGPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=16), torch.ones(11))
    assert apply_precision(TrainConfig(precision="amp_bf16"), model, "gpu") == "amp_bf16"  # Composer's AMP
    assert model.cpu_autocast_dtype is None
    assert apply_precision(TrainConfig(precision="amp_bf16"), model, "cpu") == "fp32"  # ours
    batch = {"input_ids": torch.randint(0, 11, (2, 8)), "labels": torch.randint(0, 11, (2, 8))}
    outputs = model(batch)
    assert outputs.dtype == torch.bfloat16  # the matmuls ran in bf16
    loss = model.loss(outputs, batch)
    loss.backward()
    assert loss.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for p in model.parameters())
    assert model.eval_forward(batch).dtype == torch.float32  # val metrics in fp32


@pytest.mark.slow
def test_wandb_offline_run_is_written_and_resumed(dataset, tmp_path):
    items = tmp_path / "mc.jsonl"  # an eval_tasks file: its metrics reach wandb as the val metrics do
    items.write_text("".join(json.dumps({"ctx": f"ROMEO {i}:", "endings": ["the", "xqz"], "label": 0}) + "\n"
                             for i in range(5)))
    args = tiny_args(dataset, tmp_path, "run_name=wb", "wandb.enabled=true", "wandb.project=tests",
                     "save_interval=4ba", "eval_interval=4ba", f"eval_tasks=[{{name: mc, path: {items}}}]")
    run_train([*args, "max_duration=4ba"])
    run_train([*args, "max_duration=8ba"])
    from training.trainer import wandb_id

    run_id = wandb_id("wb")
    runs = sorted((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 2  # one folder per process, same run id: wandb sync merges them into one run
    history = _wandb_history(runs[-1] / f"run-{run_id}.wandb")
    steps = [row["_step"] for row in history if "loss/train/total" in row]
    assert steps and min(steps) >= 4  # the resumed process logged steps 4.. only
    summary_loss = [row for row in history if "metrics/val/BitsPerByte" in row]
    assert summary_loss, "eval metrics reached wandb"
    choices = [row for row in history if "metrics/mc/acc_norm" in row]
    assert choices and all(0 <= row["metrics/mc/acc"] <= 1 for row in choices), "eval_tasks metrics reached wandb"


def _wandb_history(path: Path) -> list[dict]:
    """Read the history records of an offline .wandb file with wandb's own reader."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    store = datastore.DataStore()
    store.open_for_scan(str(path))
    rows = []
    while (data := store.scan_data()) is not None:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in rec.history.item})
    return rows


@pytest.mark.slow
def test_gpt2_tokenized_dataset_trains(tmp_path, shakespeare_text, gpt2_dir):
    ds = make_dataset(tmp_path / "gpt2data", shakespeare_text[:60_000], seq_len=32, tokenizer=str(gpt2_dir))
    run_train(tiny_args(ds, tmp_path / "runs", "run_name=g2", "max_duration=4ba", "eval_interval=4ba",
                        "save_interval=4ba"))
    model = json.loads((tmp_path / "runs" / "g2" / "model.json").read_text())
    assert model["vocab_size"] == 50257  # padded to 50304 inside the model, never predicted
    val = [r for r in metrics_rows(tmp_path / "runs" / "g2") if "metrics/val/BitsPerByte" in r][-1]
    # GPT-2 tokens average ~4 bytes of English: bits/byte is well under loss/ln2
    assert val["metrics/val/BitsPerByte"] < 0.5 * val["metrics/val/LanguageCrossEntropy"] / math.log(2)


@pytest.mark.slow
def test_streams_mixture_trains(tmp_path, shakespeare_text, dataset):
    other = make_dataset(tmp_path / "other", shakespeare_text[300_000:400_000], seq_len=32)
    run_train(tiny_args(dataset, tmp_path / "runs", "run_name=mix", "max_duration=6ba", "eval_interval=6ba",
                        "save_interval=6ba", "data.path=null",
                        f"data.streams.a.path={dataset}", "data.streams.a.proportion=0.75",
                        f"data.streams.b.path={other}", "data.streams.b.proportion=0.25"))
    rows = metrics_rows(tmp_path / "runs" / "mix")
    assert [r["step"] for r in rows] == list(range(1, 7)) and "metrics/val/BitsPerByte" in rows[-1]


@pytest.mark.slow
def test_streams_must_share_tokenizer(tmp_path, shakespeare_text, dataset, gpt2_dir):
    other = make_dataset(tmp_path / "g2", shakespeare_text[:30_000], seq_len=32, tokenizer=str(gpt2_dir))
    proc = run_train(tiny_args(dataset, tmp_path / "runs", "data.path=null", f"data.streams.a.path={dataset}",
                               f"data.streams.b.path={other}"), check=False)
    one_error(proc, "streams disagree on tokenizer")


def test_flops_per_batch_follow_the_batch_sequence_length():
    """MFU must count attention at the data's sequence length: a model initialised from GPT-2 has block_size 1024
    while its dataset may be cut at 256."""
    import torch

    from gpt import GPTConfig
    from training.model import ComposerGPT

    model = ComposerGPT(GPTConfig(block_size=64, vocab_size=257, n_layer=2, n_head=2, n_embd=32), torch.ones(257))
    for T in (16, 64):
        batch = {"input_ids": torch.zeros(3, T, dtype=torch.long)}
        assert model.flops_per_batch(batch) == 3 * T * model.model.flops_per_token(T)
    assert model.flops_per_batch({"input_ids": torch.zeros(3, 16, dtype=torch.long)}) < \
        3 * 16 * model.model.flops_per_token(64)
