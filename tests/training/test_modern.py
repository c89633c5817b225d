"""``model.arch=modern`` (gpt_modern.py) in the trainer: a compiled, checkpointed run with Muon and WSD starts at
ln(vocab) and learns; eval.py and generate.py read it (greedy generation through the KV cache equals the full
forward's argmax); export_hf.py refuses it; a resume with the other architecture is refused before Composer loads
the checkpoint; losses track over 1 rank, DDP and FSDP2, and FSDP2 resumes exactly; the modern-only keys, init_from
and a forced FlexAttention on CPU are refused."""
from __future__ import annotations

import json
import math

import pytest

from core.errors import ConfigError
from core.metadata import read_metadata
from tests.helpers import (
    REPO,
    assert_same_run,
    kill_when,
    last_step,
    losses,
    metrics_rows,
    one_error,
    run_script,
    run_train,
    start_train,
    tiny_args,
)
from training.config import load_config
from training.resume import model_config


def modern_args(ds, runs, name: str, *extra: str) -> list[str]:
    return tiny_args(ds, runs, f"run_name={name}", "model.arch=modern", "model.n_head=4", "optimizer.name=muon",
                     "scheduler.name=wsd", "optimizer.muon.momentum_warmup=10ba", "max_duration=40ba",
                     "eval_interval=40ba", "save_interval=40ba", *extra)


@pytest.mark.slow
def test_a_modern_run_learns_and_the_tools_read_it(dataset, tmp_path):
    """Compiled per block, with activation checkpointing: both wrap the modern blocks (whose forward takes x0, v1
    and returns the values too) as they wrap GPT-2's."""
    run = tmp_path / "m"
    proc = run_train(modern_args(dataset, tmp_path, "m", "compile.enabled=true", "activation_checkpointing=true"),
                     timeout=600)
    assert "optimizer: Muon on 8 hidden matrices" in proc.stdout and "compile: " in proc.stdout
    assert json.loads((run / "model.json").read_text())["arch"] == "modern"
    vocab = read_metadata(dataset).vocab_size
    la = losses(run)
    assert la[1] == pytest.approx(math.log(vocab), abs=1e-3)  # the zero head: a uniform first guess
    assert la[40] < la[1] - 1.0
    assert "metrics/val/LanguageCrossEntropy" in metrics_rows(run)[-1]

    ev = run_script("eval.py", run, "--max-batches", "2")
    assert ev.returncode == 0 and "loss" in ev.stdout, ev.stderr[-3000:]
    gen = run_script("generate.py", run, "--prompt", "ROMEO:", "--max-new-tokens", "12", "--temperature", "0",
                     "--json")
    assert gen.returncode == 0, gen.stderr[-3000:]
    _greedy_equals_full_forward(run, json.loads(gen.stdout.strip().splitlines()[-1]))

    one_error(run_script("export_hf.py", run, tmp_path / "hf"), "model.arch=modern run", "eval.py and generate.py")
    assert not (tmp_path / "hf").exists()
    again = run_train(tiny_args(dataset, tmp_path, "run_name=m", "model.n_head=4", "optimizer.name=muon",
                                "max_duration=50ba"), check=False)
    one_error(again, "cannot resume exactly", "model.arch: checkpoint 'modern' -> now 'gpt2'")


def _greedy_equals_full_forward(run, generated: dict) -> None:
    """generate.py's greedy tokens (through the KV cache) are the argmax of the full forward, a token at a time."""
    import torch

    from evaluation.checkpoints import load_gpt

    model, ids = load_gpt(str(run)), list(generated["prompt_ids"])
    assert generated["new_ids"]
    with torch.no_grad():
        for _ in generated["new_ids"]:
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert ids[len(generated["prompt_ids"]):] == generated["new_ids"]


def test_modern_keys_need_the_modern_arch_and_bad_values_are_one_error(dataset):
    meta = read_metadata(dataset)

    def build(*overrides: str):
        return model_config(load_config(None, [f"data.path={dataset}", "model.preset=micro", *overrides]), meta,
                            False)

    with pytest.raises(ConfigError, match=r"model.rotary is a change of model.arch=modern; set model.arch=modern"):
        build("model.rotary=false")
    with pytest.raises(ConfigError, match=r"model: ModernConfig.softcap must be > 0"):
        build("model.arch=modern", "model.softcap=0")
    with pytest.raises(ConfigError, match=r"rotary needs an even head size"):
        build("model.arch=modern", "model.n_head=64", "model.n_embd=64")  # head size 1
    assert build("model.arch=modern", "model.value_residual=false").value_residual is False
    with pytest.raises(ConfigError, match=r"model.arch=modern with model.init_from"):
        load_config(None, ["data.path=x", "model.arch=modern", "model.init_from=hf:gpt2"])
    with pytest.raises(ConfigError, match=r"model.arch='rwkv'; valid: gpt2, modern"):
        load_config(None, ["data.path=x", "model.arch=rwkv"])


@pytest.mark.slow
def test_modern_muon_losses_track_over_one_rank_ddp_and_fsdp_and_fsdp_resumes_exactly(dataset, tmp_path):
    """Same global batch, 30 steps: 1 rank and DDP agree to float rounding, FSDP2 (Muon gathering each matrix's
    rows, orthogonalizing it whole and keeping its own rows; momentum buffers sharded) within 1e-3 (measured: 4.5e-4;
    reduce-scatter sums in another order than all-reduce). A SIGKILLed FSDP run re-run replays its uninterrupted
    twin bit for bit, from a sharded checkpoint and from a full (gathered) one."""
    def args(name: str, *extra: str) -> list[str]:
        return tiny_args(dataset, tmp_path, f"run_name={name}", "model.arch=modern", "optimizer.name=muon",
                         "optimizer.muon.lr=0.005", "optimizer.lr=3e-4", "model.n_layer=2", "model.n_head=4",
                         "model.n_embd=128", "global_train_batch_size=16", "device_train_microbatch_size=8",
                         "max_duration=30ba", "save_interval=10ba", "eval_interval=1000ba", *extra)

    run_train(args("one"))
    run_train(args("ddp"), nproc=2)
    run_train(args("fsdp", "parallelism=fsdp"), nproc=2)
    one, ddp, fsdp = (losses(tmp_path / n) for n in ("one", "ddp", "fsdp"))
    assert sorted(one) == sorted(ddp) == sorted(fsdp) == list(range(1, 31))
    assert max(abs(one[s] - ddp[s]) / ddp[s] for s in ddp) <= 1e-5
    assert max(abs(fsdp[s] - ddp[s]) / ddp[s] for s in ddp) <= 1e-3
    assert ddp[30] < ddp[1] - 0.2

    for name, state_dict in (("again", "sharded"), ("full", "full")):  # both checkpoint forms hold Muon's state
        run, fsdp_args = tmp_path / name, args(name, "parallelism=fsdp", f"fsdp.state_dict_type={state_dict}")
        kill_when(start_train(fsdp_args, tmp_path / f"{name}.log", nproc=2), lambda: last_step(run) >= 14)
        run_train(fsdp_args, nproc=2)
        assert_same_run(tmp_path / "fsdp", run)


def test_the_modern_yaml_sets_the_whole_recipe(dataset):
    from training.config import load_config as load

    cfg = load(str(REPO / "yamls" / "gpt2-modern.yaml"), [f"data.path={dataset}"])
    assert (cfg.model.arch, cfg.optimizer.name, cfg.scheduler.name) == ("modern", "muon", "wsd")
    assert (cfg.optimizer.muon.momentum_start, cfg.optimizer.muon.momentum, cfg.optimizer.muon.momentum_warmup) == \
        (0.85, 0.95, "300ba")
    assert cfg.compile.enabled and cfg.compile.per_block and cfg.precision == "amp_bf16"
    single = load(str(REPO / "yamls" / "gpt2-single.yaml"), [f"data.path={dataset}"])
    same = ("global_train_batch_size", "max_duration", "seed")  # only the recipe differs from gpt2-single's run
    assert [getattr(cfg, k) for k in same] == [getattr(single, k) for k in same]
    config = model_config(cfg, read_metadata(dataset), False)
    assert type(config).__name__ == "ModernConfig" and (config.n_layer, config.n_embd) == (12, 768)
    assert cfg.model.fp8_head == config.fp8_head == "auto"  # float8 head where the GPU has it


@pytest.mark.parametrize("key, extra, message", [
    ("flex_attention", ["model.window=8"], "model.flex_attention=true on CPU: torch 2.7 compiles only"),
    ("fp8_head", [], "model.fp8_head=true on CPU: float8 matmuls (torch._scaled_mm) need CUDA compute capability "
                     ">= 8.9"),
])
def test_a_gpu_only_kernel_forced_on_cpu_is_one_error_at_start(dataset, tmp_path, key, extra, message):
    proc = run_train(tiny_args(dataset, tmp_path, "run_name=forced", "model.arch=modern", "model.n_head=4", *extra,
                               f"model.{key}=true"), check=False)
    one_error(proc, message, f"use model.{key}=auto")
    assert not list((tmp_path / "forced").glob("checkpoints/*"))
