"""One dataset converted as tasks on many "machines" (processes with their own TMPDIR), merged once: the same bytes
as one command, however many machines or workers ran the tasks; locally and into a bucket (moto's server); a task
run twice at once; a killed run resumed; and the bad input of the task options. Real subprocesses of the script,
real Streaming (MDSWriter, merge_index, StreamingDataset)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, one_error, run_convert, script_cmd, start_convert, train_env, wait_until

SEQ_LEN = 32
COMMON = ("--tokenizer", "gpt2", "--seq-len", SEQ_LEN, "--val-fraction", "0.05", "--size-limit", 8192,
          "--no-progress")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shakespeare_text) -> Path:
    """Five JSON-lines files of unequal size, each document tagged with one of three groups."""
    root = tmp_path_factory.mktemp("task_inputs")
    paras = [p for p in shakespeare_text[:150_000].split("\n\n") if p.strip()]
    cuts = [int(f * len(paras)) for f in (0, 0.1, 0.4, 0.55, 0.8, 1)]
    for f, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
        with open(root / f"part{f}.jsonl", "w", encoding="utf-8") as fh:
            for i, p in enumerate(paras[lo:hi]):
                fh.write(json.dumps({"text": p + "\n", "meta": {"set": ["A", "B b", "C"][i % 3]}}) + "\n")
    return root


@pytest.fixture(scope="module")
def one_command(inputs, tmp_path_factory) -> Path:
    """The reference: every task converted by one command, one worker, merged at its end. Never read with a
    StreamingDataset (that would unpack shards beside it)."""
    out = tmp_path_factory.mktemp("one") / "ds"
    proc = run_convert(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--workers", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 tasks (3 converted), merged: wrote" in proc.stdout
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _machines(commands: list[tuple], envs: list[dict]) -> list[subprocess.CompletedProcess]:
    """Start every command at once (each a "machine": its own TMPDIR), then wait for all."""
    procs = [start_convert(*cmd, env=env) for cmd, env in zip(commands, envs)]
    results = []
    for proc, cmd in zip(procs, commands):
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


def _machine_env(tmp_path: Path, name: str, base: dict | None = None) -> dict:
    tmp = tmp_path / f"machine-{name}"
    tmp.mkdir()
    return {**(base or train_env()), "TMPDIR": str(tmp)}


# ----------------------------------------------------------------------------------------------------------- plan


def test_the_plan_is_whole_files_contiguous_balanced_and_from_the_inputs_alone():
    from conversion.tasks import TASK_BYTES, parse_tasks, plan

    assert plan([10, 10, 10, 10], 2) == [range(0, 2), range(2, 4)]
    assert plan([100, 1, 1, 1], 3) == [range(0, 1), range(1, 2), range(2, 4)]  # a big file alone, none empty
    assert plan([1, 1, 1, 100], 3) == [range(0, 2), range(2, 3), range(3, 4)]
    assert plan([5] * 7, 7) == [range(i, i + 1) for i in range(7)]
    assert len(plan([TASK_BYTES] * 5 + [1], None)) == 6  # default: one task per GiB, at most one per file
    assert len(plan([10, 10], None)) == 1
    assert parse_tasks("all", 4) == [0, 1, 2, 3]
    assert parse_tasks("3,0-1,1", 5) == [3, 0, 1]


# ------------------------------------------------------------------------------------- many machines, one dataset


@pytest.mark.slow
def test_three_machines_by_two_workers_write_the_bytes_of_one_command(inputs, one_command, tmp_path, read_split):
    out = tmp_path / "ds"
    envs = [_machine_env(tmp_path, str(i)) for i in range(3)]
    procs = _machines([(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--task", i, "--workers", 2)
                       for i in range(3)], envs)
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"tasks {i} of 3 in {out} (1 converted); when all 3 are done: convert_to_mds.py --merge" in proc.stdout
    assert not (out / "metadata.json").exists()  # not a dataset until merged
    merged = run_convert("--merge", out)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert _files(out) == _files(one_command)
    assert all(not any(Path(e["TMPDIR"]).iterdir()) for e in envs)  # no machine left scratch files

    meta = json.loads((out / "metadata.json").read_text())
    assert [t["task"] for t in meta["source"]["tasks"]] == [0, 1, 2]
    assert meta["source"]["num_tasks"] == 3
    # the merged split is the tasks' partitions in task order, read as one StreamingDataset
    parts = [read_split(out / "train" / f"{i:05d}") for i in range(3)]
    whole = read_split(out / "train")
    assert np.array_equal(whole, np.concatenate(parts))
    assert len(whole) == meta["splits"]["train"]["samples"] == sum(len(p) for p in parts)
    assert run_convert("--verify", out).stdout.startswith("ok: ")

    again = run_convert(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--task", "1")
    assert again.returncode == 0 and "(0 converted, 1 already done)" in again.stdout


@pytest.mark.slow
def test_chars_tasks_each_find_the_whole_corpus_alphabet(inputs, tmp_path, read_split):
    """--tokenizer chars across machines: every task reads all inputs for the alphabet (not only its own files), so
    the tasks' tokenizers agree, they merge, and the ids are those of one command."""
    common = ("--tokenizer", "chars", "--seq-len", SEQ_LEN, "--val-fraction", "0", "--no-progress")
    out, one = tmp_path / "ds", tmp_path / "one"
    for i in range(2):
        proc = run_convert(inputs, "--out", out, *common, "--num-tasks", 2, "--task", i)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_convert("--merge", out).returncode == 0
    assert run_convert(inputs, "--out", one, *common, "--num-tasks", 2).returncode == 0  # all tasks, one command
    alphabet = sorted({ch for f in sorted(inputs.glob("*.jsonl")) for line in f.read_text().splitlines()
                       for ch in json.loads(line)["text"]})
    meta = json.loads((out / "metadata.json").read_text())
    assert (meta["vocab_size"], meta["eos_id"]) == (len(alphabet) + 1, len(alphabet))
    assert meta["tokenizer"] == json.loads((one / "metadata.json").read_text())["tokenizer"]
    assert np.array_equal(read_split(out / "train"), read_split(one / "train"))


def test_the_merged_index_is_the_bytes_streaming_merge_index_writes(one_command, tmp_path):
    """--merge writes the index itself (Streaming's import costs a merge ~1.5 s of torch): the very bytes of
    Streaming's own ``merge_index`` over the same partitions."""
    import logging

    from streaming.base.util import merge_index

    for split in ("train", "val"):
        parts = sorted(p.parent.name for p in (one_command / split).glob("*/index.json"))
        assert parts == ["00000", "00001", "00002"], split
        for name in parts:
            (tmp_path / split / name).mkdir(parents=True)
            shutil.copy(one_command / split / name / "index.json", tmp_path / split / name / "index.json")
        logging.disable(logging.WARNING)  # merge_index announces its temporary folder as a warning
        try:
            merge_index([str(tmp_path / split / name / "index.json") for name in parts], str(tmp_path / split))
        finally:
            logging.disable(logging.NOTSET)
        assert (one_command / split / "index.json").read_bytes() == (tmp_path / split / "index.json").read_bytes()


@pytest.mark.slow
def test_grouped_tasks_merge_into_one_dataset_per_group(inputs, tmp_path):
    one, many = tmp_path / "one", tmp_path / "many"
    grouped = (*COMMON, "--group-by", "meta.set", "--num-tasks", 2)
    assert run_convert(inputs, "--out", one, *grouped).returncode == 0
    procs = _machines([(inputs, "--out", many, *grouped, "--task", i, "--workers", 2) for i in range(2)],
                      [_machine_env(tmp_path, str(i)) for i in range(2)])
    assert all(p.returncode == 0 for p in procs), [p.stderr[-2000:] for p in procs]
    merged = run_convert("--merge", many)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert _files(many) == _files(one)
    groups = json.loads((many / "groups.json").read_text())
    assert sorted(groups["groups"]) == ["A", "B_b", "C"]
    for folder in groups["groups"]:
        assert sorted(p.name for p in (many / folder / "train").iterdir()) == ["00000", "00001", "index.json"]
    assert run_convert("--verify", many).stdout.startswith("ok: ")


@pytest.mark.slow
def test_two_machines_write_tasks_into_one_bucket_then_merge(inputs, one_command, moto_s3, tmp_path,
                                                             s3_process_env):
    bucket = moto_s3.new_bucket()
    url = f"s3://{bucket}/ds"
    envs = [_machine_env(tmp_path, name, moto_s3.env()) for name in ("a", "b")]
    procs = _machines([(inputs, "--out", url, *COMMON, "--num-tasks", 3, "--task", "0-1"),
                       (inputs, "--out", url, *COMMON, "--num-tasks", 3, "--task", "2", "--workers", 2)], envs)
    assert all(p.returncode == 0 for p in procs), [p.stderr[-2000:] for p in procs]
    merged = run_convert("--merge", url, env=_machine_env(tmp_path, "c", moto_s3.env()))
    assert merged.returncode == 0, merged.stderr[-3000:]
    expected = _files(one_command)
    assert moto_s3.keys(bucket, "ds") == sorted(expected)
    assert all(moto_s3.get(bucket, f"ds/{name}") == data for name, data in expected.items())
    written = {name: moto_s3.versions(bucket, f"ds/{name}")[-1].last_modified for name in expected}
    assert written["metadata.json"] >= max(t for n, t in written.items() if n != "metadata.json")

    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec

    spec = build_dataspec([StreamSource(url)], "train", 16, LoaderSettings(shuffle=False), str(tmp_path / "cache"),
                          False)
    ids = [int(i) for batch in spec.dataloader for i in batch["sample_ids"]]
    assert sorted(ids) == list(range(json.loads(expected["metadata.json"])["splits"]["train"]["samples"]))


@pytest.mark.slow
def test_one_task_run_twice_at_once_is_published_whole(inputs, one_command, tmp_path):
    """Tasks 0 and 2 as SLURM array elements (scripts/slurm_convert.sbatch run by bash, as sbatch would), task 1 by
    two commands at once."""
    out = tmp_path / "ds"
    for i in (0, 2):
        env = {**train_env(), "INPUTS": str(inputs), "OUT": str(out), "TASKS": "3", "SLURM_ARRAY_TASK_ID": str(i),
               "SLURM_CPUS_PER_TASK": "1"}
        proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm_convert.sbatch"), *map(str, COMMON[:-1])],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"tasks {i} of 3 in {out} (1 converted)" in proc.stdout
    procs = _machines([(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--task", 1)] * 2,
                      [train_env(), train_env()])  # the same machine, even: one TMPDIR
    assert all(p.returncode == 0 for p in procs), [p.stderr[-2000:] for p in procs]
    assert run_convert("--merge", out).returncode == 0
    assert _files(out) == _files(one_command)


@pytest.mark.slow
def test_a_killed_command_keeps_its_done_tasks(inputs, one_command, tmp_path):
    out = tmp_path / "ds"
    proc = start_convert(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--workers", 1)
    wait_until(lambda: (out / "tasks" / "00000" / "done.json").exists() or proc.poll() is not None, "task 0 done")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (out / "metadata.json").exists() or proc.returncode == 0
    again = run_convert(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--workers", 1)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done)" in again.stdout  # task 0 at least was not converted again
    assert _files(out) == _files(one_command)  # no staging folder of the killed run is left either


# ----------------------------------------------------------------------------------------------------- bad input


@pytest.mark.slow
def test_bad_task_options_are_one_error_and_publish_nothing(inputs, tmp_path):
    out = tmp_path / "ds"
    one_error(run_convert(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--task", 3),
              "--task 3: this conversion has 3 tasks, numbered 0-2")
    one_error(run_convert(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--task", "x"),
              "--task 'x': give a task number")
    one_error(run_convert(inputs, "--out", out, *COMMON, "--num-tasks", 6),
              "--num-tasks 6 but the inputs are 5 file(s)")
    one_error(run_convert("--hf-dataset", "someone/corpus", "--out", out, *COMMON, "--num-tasks", 2),
              "--task / --num-tasks split input files; a --hf-dataset is one stream")
    assert not out.exists()
    assert run_convert(inputs, "--out", out, *COMMON, "--num-tasks", 3, "--task", "0,2").returncode == 0
    one_error(run_convert("--merge", out), "1 of 3 tasks not done (1: no tasks/IIIII/done.json)", "--task 1")
    unmerged = run_convert("--verify", out)
    assert unmerged.returncode == 2 and f"{out}: a task output not merged yet" in unmerged.stdout
    assert not (out / "metadata.json").exists()
    one_error(run_convert(inputs, "--out", out, *COMMON[:2], "--seq-len", 64, *COMMON[4:], "--num-tasks", 3,
                          "--task", 1), "task 0 in", "other arguments (--seq-len 32 there, 64 here)")
    redo = run_convert(inputs, "--out", out, *COMMON[:2], "--seq-len", 64, *COMMON[4:], "--num-tasks", 3, "--task",
                       1, "--overwrite")
    assert redo.returncode == 0, redo.stderr[-2000:]
    one_error(run_convert("--merge", out), "task 1 was converted with other arguments than task 0",
              "--seq-len 64 in task 1, 32 in task 0", "--task 1 --overwrite")
    assert not (out / "metadata.json").exists()
    one_error(run_convert("--merge", inputs), f"--merge {inputs}: no tasks/IIIII/done.json: not a task output")
    one_error(run_convert("--merge", out, "--out", out), "--merge DIR takes no --out")
    plain = tmp_path / "plain"
    assert run_convert(inputs / "part0.jsonl", "--out", plain, *COMMON).returncode == 0
    one_error(run_convert(inputs, "--out", plain, *COMMON, "--num-tasks", 2, "--task", 0),
              f"--out {plain} is not empty and holds no tasks/: not a task output")


@pytest.mark.slow
def test_ray_runs_the_tasks_on_a_local_cluster_then_merges(inputs, one_command, tmp_path):
    """scripts/convert_ray.py on a local Ray cluster (127.0.0.1, started by the script: no RAY_ADDRESS)."""
    out = tmp_path / "ds"
    short = tempfile.mkdtemp(prefix="ray-")  # Ray's sockets live under TMPDIR: pytest's is past the 107-byte limit
    env = {**train_env(), "TMPDIR": short, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(script_cmd("scripts/convert_ray.py", "--cpus-per-task", 1, "--", inputs, "--out", out,
                                         *COMMON, "--num-tasks", 3), env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 tasks done on Ray; merging" in proc.stdout
    assert _files(out) == _files(one_command)
    one_error(subprocess.run(script_cmd("scripts/convert_ray.py", "--", inputs, "--out", out, *COMMON), env=env,
                             capture_output=True, text=True), "convert_ray.py needs --num-tasks")
