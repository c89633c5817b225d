"""DDP: one process, `composer -n 2`, and two single-rank "nodes" on 127.0.0.1 follow the same loss curve."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import (
    COMPOSER,
    LOSS,
    TRAIN_SCRIPT,
    free_port,
    private_shm_cmd,
    rows_by_step,
    run_train,
    tiny_args,
    train_env,
    workdir,
)

pytestmark = pytest.mark.slow  # every test here trains with `composer`


def ddp_args(ds: Path, runs: Path, name: str) -> list[str]:
    # num_canonical_nodes fixed: Streaming's default follows the node count, which differs between layouts
    return tiny_args(ds, runs, f"run_name={name}", "model.n_embd=64", "global_train_batch_size=16",
                     "device_train_microbatch_size=8", "max_duration=20ba", "save_interval=20ba",
                     "eval_interval=20ba", "data.num_canonical_nodes=2", "log_sample_ids=true")


@pytest.fixture(scope="module")
def two_rank(dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("two")
    run_train(ddp_args(dataset, runs, "n2"), nproc=2)
    return runs / "n2"


def _assert_same_curve(a: Path, b: Path, rel: float) -> None:
    ra, rb = rows_by_step(a), rows_by_step(b)
    assert sorted(ra) == sorted(rb) == list(range(1, 21))
    assert all(sorted(ra[s]["data/sample_ids"]) == sorted(rb[s]["data/sample_ids"]) for s in ra)
    worst = max(abs(ra[s][LOSS] - rb[s][LOSS]) / ra[s][LOSS] for s in ra)
    assert worst <= rel, f"loss curves differ (worst relative difference {worst:.2e})"


def test_one_process_and_two_ranks_follow_the_same_curve(dataset, two_rank, tmp_path):
    run_train(ddp_args(dataset, tmp_path, "n1"))
    _assert_same_curve(tmp_path / "n1", two_rank, rel=1e-4)


def test_two_nodes_on_loopback_match_one_node_with_two_ranks(dataset, two_rank, tmp_path):
    port = free_port()
    args = ddp_args(dataset, tmp_path, "nodes")
    procs = []
    for rank in (0, 1):
        # Two machines share nothing but the network and the run folder: each "node" gets its own /dev/shm
        # (a private tmpfs in its own mount namespace) and TMPDIR, where Streaming keeps its per-node state.
        tmp = tmp_path / f"node{rank}-tmp"
        tmp.mkdir()
        launch = [COMPOSER, "--world_size", "2", "--node_rank", str(rank), "--master_addr", "127.0.0.1",
                  "--master_port", str(port), "-n", "1", str(TRAIN_SCRIPT), *args]
        procs.append(subprocess.Popen(private_shm_cmd(launch), cwd=workdir(), env={**train_env(), "TMPDIR": str(tmp)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    assert "8 per rank x 2 ranks" in outs[0]
    _assert_same_curve(tmp_path / "nodes", two_rank, rel=1e-6)
