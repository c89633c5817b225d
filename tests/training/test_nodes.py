"""Two "nodes" on 127.0.0.1 (one `composer` launcher each, its own /dev/shm and TMPDIR): requeued after a kill -9
of every launcher, a run resumes on every node from the same step, with a shared run folder and with node-local
run folders that keep checkpoints in a bucket; node-local folders with local checkpoints, and a save_folder that
differs between nodes, are refused at start with one line."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers import (
    assert_same_run,
    last_step,
    metrics_rows,
    start_nodes,
    tiny_args,
    wait_nodes,
    wait_until,
)

pytestmark = pytest.mark.slow  # every test here starts two launchers

NODE_LOCAL = "/dev/shm/runs"  # each node's private /dev/shm (tests/helpers.start_nodes): a disk of its own


def node_args(ds: Path, runs: Path | str, *extra: str) -> list[str]:
    # num_canonical_nodes fixed: Streaming's default follows the node count
    return tiny_args(ds, runs, "run_name=nodes", "model.n_embd=64", "model.dropout=0.1",
                     "global_train_batch_size=16", "device_train_microbatch_size=8", "max_duration=30ba",
                     "save_interval=10ba", "eval_interval=1000ba", "data.num_canonical_nodes=2", *extra)


def run_nodes(args: list[str], tmp: Path, env=None, nodes: int = 2) -> list[str]:
    procs = start_nodes([args] * nodes, tmp, env=env)
    logs = wait_nodes(procs, tmp)
    assert [p.returncode for p in procs] == [0] * nodes, "\n".join(log[-3000:] for log in logs)
    return logs


def kill_all_when(procs, ready) -> None:
    """SIGKILL every node's launcher (a preemption) once ``ready()``."""
    wait_until(ready, "the kill point", timeout=240, poll=0.005, proc=procs[0])
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


@pytest.fixture(scope="module")
def references(dataset, tmp_path_factory) -> dict:
    """The 2-node run, uninterrupted, in a shared run folder, per parallelism (built when first asked for)."""
    built: dict[str, Path] = {}

    def reference(parallelism: str) -> Path:
        if parallelism not in built:
            runs = tmp_path_factory.mktemp(f"ref-{parallelism}")
            run_nodes(node_args(dataset, runs, f"parallelism={parallelism}"), runs)
            built[parallelism] = runs / "nodes"
        return built[parallelism]

    return reference


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_shared_run_folder_requeued_after_kill_resumes_every_node_at_the_same_step(dataset, references, parallelism,
                                                                                   tmp_path):
    """FSDP: sharded checkpoints (one .distcp per rank, each node writing its own into the shared folder)."""
    run = tmp_path / "nodes"
    args = node_args(dataset, tmp_path, f"parallelism={parallelism}")
    kill_all_when(start_nodes([args, args], tmp_path), lambda: last_step(run) >= 15)
    run_nodes(args, tmp_path)  # the requeue: the same command on every node
    assert [r["step"] for r in metrics_rows(run)] == list(range(1, 31))  # steps 11-15 redone, each logged once
    if parallelism == "fsdp":
        assert sorted(p.name for p in (run / "checkpoints" / "ep0-ba30").glob("*.distcp")) == \
            ["__0_0.distcp", "__1_0.distcp"]
    assert_same_run(references(parallelism), run)


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_node_local_run_folders_with_a_bucket_resume_every_node_from_the_bucket(dataset, references, moto_s3,
                                                                                 parallelism, tmp_path):
    """Each node's run folder under its own TMPDIR (``${oc.env:TMPDIR}``: another disk per node), checkpoints in
    the bucket. DDP: after the kill each node's local rank 0 fetches the bucket's newest checkpoint into its own
    folder. FSDP sharded: every rank reads its shard of the checkpoint the bucket's pointer names."""
    bucket = moto_s3.new_bucket()
    args = node_args(dataset, "${oc.env:TMPDIR}/runs", f"save_folder=s3://{bucket}/runs/{{run_name}}",
                     f"parallelism={parallelism}")
    env = moto_s3.env()
    saved = {"ddp": "ep0-ba10-rank0.pt", "fsdp": "latest-rank0.pt.symlink"}[parallelism]  # what a resume reads
    kill_all_when(start_nodes([args, args], tmp_path, env=env),
                  lambda: saved in (keys := moto_s3.keys(bucket, "runs/nodes")) and
                  any(k.startswith("ep0-ba20") for k in keys))
    logs = run_nodes(args, tmp_path, env=env)
    for rank, log in enumerate(logs):
        assert log.count("[batch=1/30]") == 1, log[-3000:]  # the requeue resumed: it did not start again
        if parallelism == "ddp":
            assert "resuming from the bucket's newest checkpoint, ep0-ba" in log, log[-3000:]
            assert (tmp_path / f"node{rank}-tmp" / "runs" / "nodes" / "checkpoints" / "latest-rank0.pt").is_symlink()
    final = {"ddp": {"ep0-ba30-rank0.pt"}, "fsdp": {"ep0-ba30/__0_0.distcp", "ep0-ba30/__1_0.distcp"}}[parallelism]
    assert final <= set(moto_s3.keys(bucket, "runs/nodes"))
    run = tmp_path / "node0-tmp" / "runs" / "nodes"
    if parallelism == "fsdp":  # the final sharded checkpoint lives in the bucket only: fetched to compare weights
        for key in moto_s3.keys(bucket, "runs/nodes/ep0-ba30"):
            (run / "checkpoints" / "ep0-ba30").mkdir(parents=True, exist_ok=True)
            (run / "checkpoints" / "ep0-ba30" / key).write_bytes(moto_s3.get(bucket, f"runs/nodes/ep0-ba30/{key}"))
        (run / "checkpoints" / "latest-rank0.pt").symlink_to("ep0-ba30")
    assert_same_run(references(parallelism), run)


def test_node_local_run_folders_with_local_checkpoints_are_refused_at_start(dataset, tmp_path):
    procs = start_nodes([node_args(dataset, NODE_LOCAL)] * 2, tmp_path)
    logs = wait_nodes(procs, tmp_path, timeout=180)
    for proc, log in zip(procs, logs):
        assert proc.returncode != 0
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert errors and all("is not shared between the nodes" in e and "save_folder=s3://" in e for e in errors), \
            log[-3000:]
        assert "Traceback" not in log and "tokens/step" not in log  # refused before the model was built


def test_save_folder_differing_between_nodes_is_refused_at_start(dataset, tmp_path):
    args = [node_args(dataset, tmp_path, f"save_folder={tmp_path / f'ck{rank}'}") for rank in (0, 1)]
    procs = start_nodes(args, tmp_path)
    logs = wait_nodes(procs, tmp_path, timeout=180)
    assert all(p.returncode != 0 for p in procs)
    expected = f"error: save_folder differs between nodes ({tmp_path / 'ck0'} on rank 0, {tmp_path / 'ck1'} on rank 1)"
    for log in logs:
        assert expected in log and "Traceback" not in log, log[-3000:]
    assert not any((tmp_path / f"ck{rank}").exists() for rank in (0, 1))
