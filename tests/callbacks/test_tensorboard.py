"""README "TensorBoard": `tensorboard.enabled=true` writes `{run_dir}/tensorboard`, one point per step as in
metrics.jsonl; a run killed with SIGKILL and re-run with the same command shows in TensorBoard as one run, each step
once, with the losses of an uninterrupted run. Read back with TensorBoard's own reader (EventAccumulator, which
applies the purges a resumed run writes), and raw (event_file_loader) to see what the purge hides. Two ranks write
one event file: tests/training/test_train.py's two-rank run.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import (
    EVAL_LOSS,
    LOSS,
    assert_view_is_metrics_jsonl,
    kill_when,
    last_step,
    losses,
    make_dataset,
    metrics_rows,
    rows_by_step,
    run_train,
    start_train,
    tensorboard_view,
    tiny_args,
)

pytestmark = pytest.mark.slow  # every test here trains real runs



def tb_args(ds: Path, runs: Path, name: str, *extra: str) -> list[str]:
    """A model big enough that a step takes tens of ms (a kill lands between two checkpoints); eval at each
    checkpoint, so the checkpoint's step holds an eval that a resume must keep."""
    return tiny_args(ds, runs, f"run_name={name}", "tensorboard.enabled=true", "model.n_layer=2", "model.n_head=4",
                     "model.n_embd=128", "global_train_batch_size=16", "device_train_microbatch_size=16",
                     "max_duration=30ba", "save_interval=10ba", "eval_interval=10ba", *extra)


def raw_steps(run_dir: Path, tag: str) -> list[int]:
    """The steps of ``tag`` in every event file, nothing purged."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary"):
                steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def test_sigkill_and_rerun_show_each_step_once_with_the_uninterrupted_losses(dataset, tmp_path):
    """The uninterrupted run first: TensorBoard holds what its metrics.jsonl holds, in one event file. Then the
    killed and re-run one."""
    run_train(tb_args(dataset, tmp_path / "ref", "a"))
    reference = losses(tmp_path / "ref" / "a")
    view = assert_view_is_metrics_jsonl(tmp_path / "ref" / "a")
    assert [s for s, _ in view[LOSS]] == list(range(1, 31))
    assert [s for s, _ in view[EVAL_LOSS]] == [10, 20, 30]
    assert len(list((tmp_path / "ref" / "a" / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one process

    run = tmp_path / "b"
    args = tb_args(dataset, tmp_path, "b")
    kill_when(start_train(args, tmp_path / "b.first.log"), lambda: last_step(run) >= 15)  # after checkpoint 10
    killed_steps = raw_steps(run, LOSS)
    assert max(killed_steps) > 10, "the killed run wrote steps past its checkpoint (what the purge must hide)"
    run_train(args)

    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    raw = Counter(raw_steps(run, LOSS))
    assert any(n == 2 for n in raw.values()), "steps 11.. are in both files"
    view = assert_view_is_metrics_jsonl(run)
    steps = [s for s, _ in view[LOSS]]
    assert steps == list(range(1, 31))  # each step once, 1..N
    assert [v for _, v in view[LOSS]] == pytest.approx([reference[s] for s in steps], rel=1e-6, abs=1e-6)
    assert [s for s, _ in view[EVAL_LOSS]] == [10, 20, 30]  # the checkpoint's eval kept, none twice


def test_a_loss_spike_rollback_shows_each_step_once(dataset, tmp_path):
    """A spike on a sample of batch 14 (tests/helpers.py's spike launcher): the run goes back to checkpoint 12 in
    the same process; its second fit's event file purges the abandoned step 13."""
    spike_args = ("model.dropout=0.1", "max_duration=22ba", "save_interval=4ba", "eval_interval=1000ba",
                  "log_sample_ids=true", "spike.window=5", "spike.patience=1", "spike.skip_batches=2")
    run_train(tiny_args(dataset, tmp_path, "run_name=ref", *spike_args))
    sample = metrics_rows(tmp_path / "ref")[13]["data/sample_ids"][0]  # row 14: a sample of batch 14
    run = tmp_path / "spk"
    out = run_train(tiny_args(dataset, tmp_path, "run_name=spk", "tensorboard.enabled=true", *spike_args),
                    spike=(sample, 50.0)).stdout
    assert "loss spike at step 14" in out and "rolled back to ep0-ba12" in out
    assert Counter(raw_steps(run, LOSS))[13] == 2  # written before the spike, and again after the rollback
    view = assert_view_is_metrics_jsonl(run)  # the rows metrics.jsonl keeps, after the rollback
    assert [s for s, _ in view[LOSS]] == list(range(1, 23))


def test_a_resume_that_redoes_the_epoch_end_eval_writes_it_once(tmp_path, shakespeare_text):
    """A checkpoint on an epoch's last batch E, eval at each epoch's end: killed after that eval was written, the
    re-run resumes from E and evaluates again at E's epoch end; TensorBoard holds that eval once."""
    from core.metadata import read_metadata

    ds = make_dataset(tmp_path / "small", shakespeare_text[:30_000], seq_len=32)
    epoch = read_metadata(ds).splits["train"].samples // 8  # batches of an epoch (8 a batch, the last dropped)
    run = tmp_path / "ep"
    args = tb_args(ds, tmp_path, "ep", "model.n_embd=64", "global_train_batch_size=8",
                   "device_train_microbatch_size=8", "max_duration=2ep", "eval_interval=1ep",
                   f"save_interval={epoch}ba", "save_num_checkpoints_to_keep=-1")
    kill_when(start_train(args, tmp_path / "ep.first.log"),
              lambda: last_step(run) >= epoch + 2 and EVAL_LOSS in rows_by_step(run).get(epoch, {}))
    assert epoch in [s for s, _ in tensorboard_view(run)[EVAL_LOSS]]  # the killed run wrote it
    run_train(args)
    view = assert_view_is_metrics_jsonl(run)
    assert [s for s, _ in view[EVAL_LOSS]] == [epoch, 2 * epoch]
    assert [s for s, _ in view[LOSS]] == list(range(1, 2 * epoch + 1))
