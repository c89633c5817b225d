"""FSDP2 on CPU over gloo with `composer -n 2`: same losses as DDP, sharded and full checkpoints, exact resume."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import kill_when, last_step, losses, one_error, run_train, start_train, tiny_args

pytestmark = pytest.mark.slow  # every test here trains with `composer -n 2`


def fsdp_args(ds: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return tiny_args(ds, runs, f"run_name={name}", "model.n_layer=2", "model.n_head=4", "model.n_embd=128",
                     "global_train_batch_size=16", "device_train_microbatch_size=8", "max_duration=30ba",
                     "save_interval=10ba", "eval_interval=30ba", "optimizer.lr=3e-4", *extra)


@pytest.fixture(scope="module")
def fsdp_run(dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("fsdp")
    run_train(fsdp_args(dataset, runs, "f", "parallelism=fsdp"), nproc=2)
    return runs / "f"


def test_fsdp_matches_ddp(dataset, fsdp_run, tmp_path):
    run_train(fsdp_args(dataset, tmp_path, "d"), nproc=2)
    ddp, fsdp = losses(tmp_path / "d"), losses(fsdp_run)
    assert sorted(ddp) == sorted(fsdp) == list(range(1, 31))
    worst = max(abs(ddp[s] - fsdp[s]) / ddp[s] for s in ddp)
    assert worst <= 1e-3, f"FSDP left DDP's loss curve (worst relative difference {worst:.2e})"
    assert ddp[30] < ddp[1] - 0.5


def test_fsdp_saves_sharded_checkpoints(fsdp_run):
    ckpt = fsdp_run / "checkpoints" / "ep0-ba30"
    assert ckpt.is_dir() and (ckpt / ".metadata").is_file()
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (fsdp_run / "checkpoints" / "latest-rank0.pt").resolve() == ckpt.resolve()


def test_fsdp_sigkill_resumes_bit_identically(dataset, fsdp_run, tmp_path):
    run = tmp_path / "b"
    args = fsdp_args(dataset, tmp_path, "b", "parallelism=fsdp")
    kill_when(start_train(args, tmp_path / "first.log", nproc=2), lambda: last_step(run) >= 15)
    run_train(args, nproc=2, timeout=240)
    a, b = losses(fsdp_run), losses(run)
    assert sorted(b) == list(range(1, 31))
    diffs = [s for s in a if a[s] != b[s]]
    assert not diffs, f"losses differ at steps {diffs[:5]}"


def test_sharded_checkpoint_in_a_bucket_gives_its_fingerprint_without_its_weights(dataset, fsdp_run, moto_s3,
                                                                                 monkeypatch):
    """A sharded run whose checkpoints are in a bucket resumes from what the bucket's latest pointer names; that
    checkpoint's fingerprint is read with ranged GETs (a few KiB), the same as the local folder's."""
    from core.remote import upload_dir
    from training.config import load_config
    from training.resume import _resume_source
    from training.resume.bucket import bucket_fingerprint
    from training.resume.checkpoints import saved_fingerprint

    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    bucket = moto_s3.new_bucket()
    cfg = load_config(None, [f"data.path={dataset}", "run_name=f", "parallelism=fsdp",
                             f"save_folder=s3://{bucket}/runs/{{run_name}}"])
    assert _resume_source(cfg, autoresume=True) == (None, False)  # an empty bucket: a fresh start
    upload_dir(fsdp_run / "checkpoints" / "ep0-ba30", f"s3://{bucket}/runs/f/ep0-ba30")
    moto_s3.client().put_object(Bucket=bucket, Key="runs/f/latest-rank0.pt.symlink", Body=b"runs/f/ep0-ba30")
    source, resuming = _resume_source(cfg, autoresume=True)
    assert (source, resuming) == (f"s3://{bucket}/runs/f/ep0-ba30", True)
    assert bucket_fingerprint(source) == saved_fingerprint(str(fsdp_run / "checkpoints" / "ep0-ba30"))
    assert bucket_fingerprint(source)["model.n_embd"] == 128


def test_fsdp_full_state_dict_and_activation_checkpointing(dataset, fsdp_run, tmp_path):
    run_train(fsdp_args(dataset, tmp_path, "full", "parallelism=fsdp", "fsdp.state_dict_type=full",
                        "fsdp.activation_checkpointing=true"), nproc=2)
    ckpt = tmp_path / "full" / "checkpoints" / "ep0-ba30-rank0.pt"
    assert ckpt.is_file()  # one gathered file, loadable without a process group
    from evaluation.checkpoints import load_gpt

    model = load_gpt(str(tmp_path / "full"))
    assert model.config.n_embd == 128
    full, sharded = losses(tmp_path / "full"), losses(fsdp_run)
    worst = max(abs(full[s] - sharded[s]) / sharded[s] for s in sharded)
    assert worst <= 1e-5, f"activation checkpointing changed the losses ({worst:.2e})"


def test_sharded_resume_checks_the_fingerprint_before_loading(dataset, fsdp_run, tmp_path):
    """The fingerprint of a sharded (.distcp) checkpoint is read without its weights, so a changed model shape is
    refused with the keys named, as for a monolithic checkpoint."""
    from training.resume.checkpoints import saved_fingerprint

    saved = saved_fingerprint(str(fsdp_run / "checkpoints" / "latest-rank0.pt"))
    assert saved["model.n_embd"] == 128 and saved["optimizer"]["betas"] == [0.9, 0.99]
    assert saved["data"]["content"] and saved["global_train_batch_size"] == 16
    shutil.copytree(fsdp_run, tmp_path / "f", symlinks=True)  # the re-run writes its config.yaml there
    proc = run_train(fsdp_args(dataset, tmp_path, "f", "parallelism=fsdp", "model.n_embd=64", "max_duration=40ba"),
                     check=False)
    one_error(proc, "cannot resume exactly", "model.n_embd: checkpoint 128 -> now 64")
