"""Loss spikes and NaN, on real runs: a spike injected on one sample (tests/helpers.py's spike launcher) is rolled
back, its data skipped, and training goes on; killed during and after the recovery and re-run, the run is the
uninterrupted one bit for bit; a run that keeps producing NaN stops after spike.max_rollbacks with one error line and
``latest`` on a finite checkpoint; a checkpoint is never written from NaN weights; and a run without spikes is the
same with the feature on or off.

The numbers: 8 samples a batch, a checkpoint every 4 batches; the spike is on a sample of batch 14, so the run
goes back to ep0-ba12 and skips batches 13-14 (which led into it) and 2 more: samples 96..127 of epoch 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    NAN_GRAD,
    assert_same_run,
    kill_when,
    last_step,
    losses,
    one_error,
    rows_by_step,
    run_train,
    sample_ids,
    start_train,
    tiny_args,
)

pytestmark = pytest.mark.slow  # every test here trains (and kills) real runs

SPIKE_STEP, CHECKPOINT, SKIPPED = 14, "ep0-ba12-rank0.pt", 4  # batches 13, 14 and skip_batches=2


def spike_args(ds: Path, runs: Path, name: str, *extra: str) -> list[str]:
    """A tiny run with dropout (the RNG must be restored too) and a short, sensitive detector."""
    return tiny_args(ds, runs, f"run_name={name}", "model.dropout=0.1", "max_duration=22ba", "save_interval=4ba",
                     "eval_interval=1000ba", "log_sample_ids=true", "spike.window=5", "spike.patience=1",
                     "spike.skip_batches=2", *extra)


def spiked_sample(reference: Path, step: int) -> int:
    """A sample the reference run trained on at ``step``: injected there, the spike lands on that step."""
    return sample_ids(reference)[step][0]


def all_finite(checkpoint: Path) -> bool:
    """Every floating tensor of a checkpoint's model and optimizer state is finite."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]

    def tensors(obj):
        if torch.is_tensor(obj):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from tensors(value)

    found = [t for t in tensors([state["model"], state["optimizers"]]) if t.is_floating_point()]
    return bool(found) and all(bool(torch.isfinite(t).all()) for t in found)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """No spike, the detector on."""
    runs = tmp_path_factory.mktemp("spike_ref")
    run_train(spike_args(dataset, runs, "ref"))
    return runs / "ref"


@pytest.fixture(scope="module")
def spiked(dataset, reference, tmp_path_factory) -> tuple[Path, str]:
    """The uninterrupted run with the spike; (its folder, its stdout)."""
    runs = tmp_path_factory.mktemp("spiked")
    proc = run_train(spike_args(dataset, runs, "spk"), spike=(spiked_sample(reference, SPIKE_STEP), 50.0))
    return runs / "spk", proc.stdout


def test_a_spike_is_rolled_back_skipped_and_training_goes_on(reference, spiked):
    run, out = spiked
    assert f"loss spike at step {SPIKE_STEP}" in out and f"rolled back to {CHECKPOINT}" in out
    [record] = [json.loads(line) for line in (run / "rollbacks.jsonl").read_text().splitlines()]
    assert record["step"] == record["first_step"] == SPIKE_STEP and record["checkpoint"] == CHECKPOINT
    assert (record["resumed_at"], record["epoch"], record["skipped_batches"]) == (12, 0, SKIPPED)
    assert record["skipped_samples"] == [12 * 8, (SPIKE_STEP + 2) * 8]
    first_after = rows_by_step(run)[13]  # metrics.jsonl: the first row of the new trajectory carries the record
    assert first_after["spike/rollbacks"] == 1 and first_after["spike/step"] == SPIKE_STEP
    assert first_after["spike/resumed_at"] == 12 and first_after["spike/skipped_batches"] == SKIPPED
    ref, spk = losses(reference), losses(run)
    assert first_after["spike/loss"] > 10 * ref[SPIKE_STEP]
    assert sorted(spk) == list(range(1, 23)) and all(spk[s] == ref[s] for s in range(1, 13))
    ids_ref, ids = sample_ids(reference), sample_ids(run)
    assert all(ids[s] == ids_ref[s + SKIPPED] for s in range(13, 19)), "batch 13 on must train on batch 17's data on"
    after = [spk[s] for s in range(13, 23)]
    assert all(loss == loss for loss in after) and max(after) < 1.05 * spk[12], f"not recovered: {after}"


def test_sigkill_during_and_after_the_recovery_replays_the_spiked_run(dataset, reference, spiked, tmp_path):
    """Killed right after the rollback (it resumes from before the spike and meets it again), then after the first
    checkpoint of the new trajectory (it resumes past the skipped samples), then run to the end."""
    run, args = tmp_path / "k", spike_args(dataset, tmp_path, "k")
    spike, latest = (spiked_sample(reference, SPIKE_STEP), 50.0), run / "checkpoints" / "latest-rank0.pt"
    first, second = tmp_path / "first.parked", tmp_path / "second.parked"
    # parked at the start of step 15 of the new trajectory (the old one stopped at 14), step 14 logged
    kill_when(start_train(args, tmp_path / "first.log", spike=spike, pause=("batch:14", first)), first.exists)
    assert last_step(run) == 14 and "spike/rollbacks" in rows_by_step(run)[13]
    assert latest.resolve().name == CHECKPOINT
    # resumed from ep0-ba12, met the spike again, rolled back; parked at the start of step 18, ep0-ba16 written
    kill_when(start_train(args, tmp_path / "second.log", spike=spike, pause=("batch:17", second)), second.exists)
    assert last_step(run) == 17 and latest.resolve().name == "ep0-ba16-rank0.pt"
    run_train(args, spike=spike)
    assert_same_run(spiked[0], run)
    assert (run / "rollbacks.jsonl").read_text() == (spiked[0] / "rollbacks.jsonl").read_text()
    assert sample_ids(run) == sample_ids(spiked[0])


def test_nan_from_a_huge_lr_stops_after_max_rollbacks_on_a_finite_checkpoint(dataset, tmp_path):
    proc = run_train(tiny_args(dataset, tmp_path, "run_name=nan", "optimizer.lr=1e3", "max_duration=22ba",
                               "save_interval=3ba", "eval_interval=1000ba", "spike.max_rollbacks=2"), check=False)
    one_error(proc, "non-finite loss", "spike.max_rollbacks=2 rollbacks are used up", "latest is ep0-ba")
    run = tmp_path / "nan"
    assert len((run / "rollbacks.jsonl").read_text().splitlines()) == 2
    latest = (run / "checkpoints" / "latest-rank0.pt").resolve()
    assert latest.name in proc.stderr and all_finite(latest)
    assert all(all_finite(p) for p in (run / "checkpoints").glob("ep*-ba*-rank0.pt"))


def test_no_checkpoint_is_written_from_nan_weights(dataset, reference, tmp_path):
    """NaN gradients on a checkpoint's batch: the loss looked fine, the weights did not. That checkpoint is never
    written; with spike.max_rollbacks=0 the run stops at once, latest on the one before."""
    run = tmp_path / "g"
    proc = run_train(spike_args(dataset, tmp_path, "g", "spike.max_rollbacks=0"), check=False,
                     spike=(spiked_sample(reference, 12), NAN_GRAD))
    one_error(proc, "loss spike at step 12: non-finite weights or optimizer state at a checkpoint")
    assert not (run / "checkpoints" / CHECKPOINT).exists()
    latest = (run / "checkpoints" / "latest-rank0.pt").resolve()
    assert latest.name == "ep0-ba8-rank0.pt" and all_finite(latest)
    assert losses(run)[12] == losses(reference)[12]  # the loss of that batch was finite, as in the reference


def test_without_spikes_the_detector_changes_nothing(dataset, reference, tmp_path):
    run_train(spike_args(dataset, tmp_path, "off", "spike.enabled=false"))
    assert not (reference / "rollbacks.jsonl").exists()
    assert_same_run(reference, tmp_path / "off")
    assert sample_ids(reference) == sample_ids(tmp_path / "off")
