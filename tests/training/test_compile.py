"""``compile:``: compiled runs (each block, or the whole forward) track eager, eval does not recompile at every eval,
a compiled `composer -n 2` run SIGKILLed and re-run replays the uninterrupted one exactly, its checkpoints keep
GPT-2's names, and a machine without a C++ compiler is refused at start.

Every run of the module shares one inductor cache, made empty for it: each test compiles as on a fresh machine the
first time a graph is met, and the re-runs (the resume) load the kernels from the cache as a user's re-run does,
which saves ~30 s per run on 2 cores and gives the very same kernels.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (
    assert_same_run,
    final_weights,
    kill_when,
    last_step,
    losses,
    one_error,
    run_script,
    run_train,
    start_train,
    tiny_args,
    train_env,
)

VAL = "metrics/val/LanguageCrossEntropy"
RECOMPILE = "Recompiling function"  # TORCH_LOGS=recompiles: one such line per recompile, with the guard that failed


@pytest.fixture(scope="module")
def compile_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {**train_env(), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path_factory.mktemp("inductor")),
            "TORCH_LOGS": "recompiles"}


def compile_args(ds: Path, runs: Path, name: str, *extra: str) -> list[str]:
    """30 steps, an eval every 10 over the whole val split in batches of 7: its last batch is smaller."""
    return tiny_args(ds, runs, f"run_name={name}", "max_duration=30ba", "eval_interval=10ba", "save_interval=10ba",
                     "eval_subset_num_batches=-1", "device_eval_batch_size=7", *extra)


@pytest.fixture(scope="module")
def eager_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory, compile_env: dict[str, str]) -> Path:
    runs = tmp_path_factory.mktemp("eager")
    run_train(compile_args(dataset, runs, "eager"), env=compile_env)
    return runs / "eager"


@pytest.mark.slow
@pytest.mark.parametrize("per_block", ["true", "false"])
def test_compiled_losses_track_eager_and_eval_compiles_once(dataset, eager_run, compile_env, tmp_path, per_block):
    proc = run_train(compile_args(dataset, tmp_path, "c", "compile.enabled=true", f"compile.per_block={per_block}",
                                  "sample_prompt=ROMEO:", "sample_max_new_tokens=8"), env=compile_env)
    eager, compiled = losses(eager_run), losses(tmp_path / "c")
    assert sorted(compiled) == sorted(eager) == list(range(1, 31))
    worst = max(abs(compiled[s] - eager[s]) / eager[s] for s in eager)
    assert worst <= 1e-4, f"compiled losses drift from eager ({worst:.2e})"
    val_eager, val_compiled = losses(eager_run, VAL), losses(tmp_path / "c", VAL)
    assert sorted(val_compiled) == sorted(val_eager) == [10, 20, 30]
    assert all(abs(val_compiled[s] - val_eager[s]) <= 1e-4 * val_eager[s] for s in val_eager)
    assert len([line for line in proc.stdout.splitlines() if line.startswith("compile: ")]) == 1, proc.stdout[-2000:]
    # 3 evals of 142 batches, the last one smaller: eval mode + no grad (1), the smaller batch (at most 1, the batch
    # dimension then dynamic), at most one more for a batch of 1; never one per eval, per batch or per sampled token
    assert 1 <= proc.stderr.count(RECOMPILE) <= 3, proc.stderr[-3000:]
    assert final_weights(tmp_path / "c").keys() == final_weights(eager_run).keys()  # no _orig_mod. in the keys


@pytest.mark.slow
def test_compiled_ddp_run_resumes_bit_identically_after_sigkill(dataset, compile_env, tmp_path):
    """Two ranks, dropout on (inductor draws its own random numbers: their state must come back too)."""
    def args(name: str) -> list[str]:
        return compile_args(dataset, tmp_path, name, "compile.enabled=true", "model.dropout=0.1",
                            "eval_subset_num_batches=2")

    run_train(args("a"), nproc=2, env=compile_env, timeout=600)
    run = tmp_path / "b"
    kill_when(start_train(args("b"), tmp_path / "first.log", nproc=2, env=compile_env), lambda: last_step(run) >= 15,
              timeout=400)
    rerun = run_train(args("b"), nproc=2, env=compile_env, timeout=600)
    assert rerun.stdout.count("compile: ") == 1, rerun.stdout[-2000:]  # rank 0 only, once
    assert_same_run(tmp_path / "a", run)
    proc = run_script("eval.py", run, "--max-batches", "2", env=compile_env)  # reads weights by GPT-2's names
    assert proc.returncode == 0 and "loss" in proc.stdout, proc.stderr[-3000:]


def test_no_cpp_compiler_is_refused_at_start(dataset, tmp_path):
    proc = run_train(tiny_args(dataset, tmp_path, "compile.enabled=true"), check=False,
                     env={**train_env(), "CXX": str(tmp_path / "no-such-g++")})
    one_error(proc, "compile.enabled=true on CPU needs a C++ compiler", "install one", "compile.enabled=false")
    assert not any(tmp_path.iterdir()), "nothing written before the check"


def test_whole_model_compile_under_fsdp_is_refused():
    from core.errors import ConfigError
    from training.config import load_config

    with pytest.raises(ConfigError, match="compile.per_block=false with parallelism=fsdp.*use compile.per_block=true"):
        load_config(None, ["data.path=x", "parallelism=fsdp", "compile.enabled=true", "compile.per_block=false"])
    load_config(None, ["data.path=x", "parallelism=fsdp", "compile.enabled=true"])  # per block: the way with FSDP


@pytest.mark.parametrize("per_block", [True, False])
def test_a_compiled_run_compiles_its_loss_too_and_it_equals_the_eager_loss(per_block):
    """The loss runs outside the GPT's graph: compiled on its own, it fuses the logits' copies (an H200 measured the
    whole-model compile at 0.81x nanoGPT's model.py without it, 0.995x with it: BENCHMARKS.md, GPU check)."""
    import torch

    from gpt import GPTConfig, next_token_loss
    from training.compile import apply_compile
    from training.config import CompileConfig
    from training.model import ComposerGPT

    model = ComposerGPT(GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16), torch.ones(50))
    assert model.loss_fn is next_token_loss
    apply_compile(model, CompileConfig(enabled=False))
    assert model.loss_fn is next_token_loss  # compile off: nothing compiled
    apply_compile(model, CompileConfig(enabled=True, per_block=per_block))
    assert model.loss_fn is not next_token_loss
    logits, labels = torch.randn(2, 16, 50, requires_grad=True), torch.randint(0, 50, (2, 16))
    compiled = model.loss(logits, {"labels": labels})
    compiled.backward()
    grad, logits.grad = logits.grad.clone(), None
    eager = next_token_loss(logits, labels)
    eager.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, logits.grad, rtol=1e-6, atol=1e-7)
