"""convert_to_mds.py at Pile scale: worker processes, --group-by, bad records, restarts, kills and --verify.

Real components throughout: the GPT-2 BPE files, Streaming's MDSWriter / StreamingDataset, spawned worker processes
and real subprocesses of the script where the CLI or a kill is what is tested.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import psutil
import pytest
import zstandard

from conversion import convert as convert_module
from conversion.batches import EncoderSpec, encode_in_worker, init_worker
from conversion.convert import ConvertRequest, HFSource, assign_split, run
from conversion.groups import GROUPS_FILE, group_folder
from conversion.parallel import OrderedPool
from conversion.verify import verify
from core.errors import OutputExistsError
from core.metadata import METADATA_FILE, read_metadata
from core.tokenizer import load_tokenizer
from tests.helpers import convert_main, error_line, one_error, run_convert, start_convert, wait_until

SETS = ["Pile-CC", "PubMed Central", "Gutenberg (PG-19)", "ArXiv"]
FOLDERS = {"Pile-CC", "PubMed_Central", "Gutenberg__PG-19_", "ArXiv"}


# ---------------------------------------------------------------------------------------------------------- helpers


def pile_records(text: str, n: int, seed: int) -> list[dict]:
    """Pile-format records: shuffled paragraphs (1-12 per document), a subset name under meta."""
    paras = [p for p in text.split("\n\n") if p.strip()]
    rng = random.Random(seed)
    return [{"text": f"{i}: " + "\n\n".join(rng.sample(paras, rng.randrange(1, 12))),
             "meta": {"pile_set_name": rng.choice(SETS)}} for i in range(n)]


def write_zst(path: Path, records: list[dict]) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    return path


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def complete_docs(samples: np.ndarray, tok) -> list[str]:
    """Decoded documents whose EOS made it into the packed stream (consecutive samples share one token)."""
    stream = np.concatenate([samples[0], samples[1:, 1:].ravel()])
    pieces = np.split(stream, np.flatnonzero(stream == tok.eos_id))
    rust = tok.hf.backend_tokenizer  # decodes exactly (no clean-up of spaces before punctuation)
    return [rust.decode(p[p != tok.eos_id].tolist(), skip_special_tokens=False) for p in pieces[:-1]]


def _exited(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE  # a reparented zombie counts as exited
    except psutil.NoSuchProcess:
        return True


def gone(procs: list[psutil.Process], timeout: float = 30) -> bool:
    """Whether every process exits (polled; ``timeout`` is a hang guard)."""
    try:
        wait_until(lambda: all(_exited(p) for p in procs), "the processes exit", timeout=timeout, poll=0.05)
    except AssertionError:
        return False
    return True


def request(src: Path, out: Path, tokenizer: str, **kw) -> ConvertRequest:
    base = dict(seq_len=128, val_fraction=0.05, size_limit=1 << 16, progress=False)
    return ConvertRequest((str(src),), str(out), tokenizer, **{**base, **kw})


# --------------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pile(tmp_path_factory, shakespeare_text) -> dict:
    """~1 MB of Pile-format text in a .jsonl.zst, and the records it holds."""
    root = tmp_path_factory.mktemp("pile")
    records = pile_records(shakespeare_text, 900, seed=1)
    return {"root": root, "records": records, "src": write_zst(root / "pile.jsonl.zst", records)}


@pytest.fixture(scope="module")
def grouped(pile, gpt2_dir) -> dict:
    """The same grouped conversion by the CLI with 2 workers and in this process with 1."""
    w2 = pile["root"] / "grouped_w2"
    r = run_convert(pile["src"], "--out", w2, "--tokenizer", gpt2_dir, "--seq-len", "128", "--val-fraction", "0.05",
            "--size-limit", str(1 << 16), "--group-by", "meta.pile_set_name", "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    w1 = pile["root"] / "grouped_w1"
    conv = run(request(pile["src"], w1, str(gpt2_dir), group_by="meta.pile_set_name", workers=1))
    return {"w1": w1, "w2": w2, "stdout": r.stdout, "conv": conv}


@pytest.fixture(scope="module")
def single(pile, gpt2_dir) -> Path:
    out = pile["root"] / "single_w1"
    run(request(pile["src"], out, str(gpt2_dir), workers=1))
    return out


# ------------------------------------------------------------------------------------------------- workers: bytes


def test_grouped_output_is_identical_with_one_or_two_workers(grouped):
    one, two = files_of(grouped["w1"]), files_of(grouped["w2"])
    assert sorted(one) == sorted(two) and one == two  # every file, index.json and metadata included
    assert sum(name.endswith(".mds.zstd") for name in one) > 8


def test_single_output_is_identical_with_one_or_two_workers(single, pile, gpt2_dir, tmp_path):
    run(request(pile["src"], tmp_path / "w2", str(gpt2_dir), workers=2))
    assert files_of(single) == files_of(tmp_path / "w2")


def test_pool_keeps_a_bounded_window_and_input_order():
    pulled = []

    def jobs():  # endless: an unbounded read-ahead would never return
        i = 0
        while True:
            pulled.append(i)
            yield [f"job {i} " * 50], None
            i += 1

    spec = EncoderSpec("bytes", None, 256, "uint16", 0.0)
    with OrderedPool(2, init_worker, (spec,), window=3) as pool:
        results = pool.map(encode_in_worker, jobs())
        got = [next(results) for _ in range(5)]
        workers = [p for p in psutil.Process().children() if "multiprocessing.spawn" in " ".join(p.cmdline())]
    for i, (job, result) in enumerate(got):
        assert job[0][0].startswith(f"job {i} ")
        assert bytes(result.chunks[(None, "train")].tokens[:-1].astype(np.uint8)).decode() == job[0][0]
    assert len(pulled) <= 5 + 3
    assert len(workers) == 2 and gone(workers)


def test_lean_mds_writer_writes_what_streamings_writes(tmp_path):
    from streaming import MDSWriter

    from upstream.streaming import LeanMDSWriter

    samples = np.random.default_rng(0).integers(0, 50257, (300, 129), dtype=np.uint16)
    for name, cls in (("stock", MDSWriter), ("lean", LeanMDSWriter)):
        with cls(out=str(tmp_path / name), columns={"tokens": "ndarray:uint16:129"}, compression="zstd",
                 hashes=["sha256"], size_limit=10_000) as writer:
            for sample in samples:
                writer.write({"tokens": sample})
    stock = files_of(tmp_path / "stock")
    assert files_of(tmp_path / "lean") == stock and len(stock) > 4


# ------------------------------------------------------------------------------------------------------- group-by


def test_group_folder_rule():
    assert group_folder("Pile-CC") == "Pile-CC"
    assert group_folder("PubMed Central") == "PubMed_Central"
    assert group_folder("Gutenberg (PG-19)") == "Gutenberg__PG-19_"
    assert group_folder("Wikipedia (en)") == "Wikipedia__en_" and group_folder("a.b_c-1") == "a.b_c-1"


def test_group_by_writes_one_complete_dataset_per_group(grouped, pile, gpt2_dir, read_split):
    out, records = grouped["w1"], pile["records"]
    tok = load_tokenizer(str(gpt2_dir))
    assert {p.name for p in out.iterdir()} == FOLDERS | {GROUPS_FILE}
    listing = json.loads((out / GROUPS_FILE).read_text())
    assert listing["group_by"] == "meta.pile_set_name" and set(listing["groups"]) == FOLDERS
    for value in SETS:
        folder = out / group_folder(value)
        meta = read_metadata(folder)
        assert meta.source["group"] == {"key": "meta.pile_set_name", "value": value}
        assert (folder / "tokenizer").is_dir() and set(meta.splits) == {"train", "val"}
        entry = listing["groups"][folder.name]
        assert entry["value"] == value
        assert entry["tokens"] == sum(s.tokens for s in meta.splits.values())
        assert entry["samples"] == sum(s.samples for s in meta.splits.values())
        texts = [r["text"] for r in records if r["meta"]["pile_set_name"] == value]
        assert entry["documents"] == len(texts)
        for split in ("train", "val"):  # the split is still decided per document, by hash
            expected = [t for t in texts if assign_split(t.encode(), 0.05) == split]
            got = complete_docs(read_split(folder / split), tok)
            assert got == expected[:len(got)] and len(expected) - len(got) <= 3
    assert sum(g["documents"] for g in listing["groups"].values()) == len(records)


def test_group_by_prints_tokens_per_group(grouped):
    out = grouped["stdout"]
    listing = json.loads((grouped["w2"] / GROUPS_FILE).read_text())
    for folder, entry in listing["groups"].items():
        line = next(line for line in out.splitlines() if line.startswith(folder + " "))
        assert f"{entry['tokens']:,}" in line and f"{entry['documents']:,}" in line
    assert "total" in out


def test_group_values_sharing_a_folder_are_refused(tmp_path, capsys):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i}", "meta": {"set": s}}) + "\n"
                           for i, s in enumerate(["A B", "C", "A_B"])))
    code, _, stderr = convert_main(capsys, src, "--out", tmp_path / "out", "--tokenizer", "bytes", "--seq-len", "2",
                                   "--group-by", "meta.set", "--no-progress")
    assert code == 2, stderr
    err = error_line(stderr)
    assert "'A B'" in err and "'A_B'" in err and "folder 'A_B'" in err and "d.jsonl:3" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_many_groups_flush_shards_early_to_bound_memory(pile, tmp_path, read_split, monkeypatch):
    """Past the pending-shard budget the fullest shard is written early: smaller shards, the same samples."""
    kw = dict(group_by="meta.pile_set_name", seq_len=256, size_limit=1 << 22, val_fraction=0)
    roomy = run(request(pile["src"], tmp_path / "roomy", "bytes", **kw))
    monkeypatch.setattr(convert_module, "SHARD_CACHE_BUDGET", 200_000)
    tight = run(request(pile["src"], tmp_path / "tight", "bytes", **kw))
    assert {f: m.splits for f, m in roomy.datasets.items()} == {f: m.splits for f, m in tight.datasets.items()}
    for folder in FOLDERS:
        shards = json.loads((tmp_path / "tight" / folder / "train" / "index.json").read_text())["shards"]
        assert len(shards) > 1 and all(s["raw_data"]["bytes"] <= 200_000 + 4096 for s in shards)
        assert np.array_equal(read_split(tmp_path / "roomy" / folder / "train"),
                              read_split(tmp_path / "tight" / folder / "train"))


@pytest.mark.slow  # three grouped conversions, one uploaded
def test_grouped_conversion_to_a_bucket_uploads_markers_last_and_rerun_skips(s3_process_env, pile, tmp_path):
    s3 = s3_process_env
    bucket = s3.new_bucket()
    kw = dict(group_by="meta.pile_set_name", seq_len=256, size_limit=1 << 18, val_fraction=0)
    run(request(pile["src"], f"s3://{bucket}/pile", "bytes", **kw))
    run(request(pile["src"], tmp_path / "local", "bytes", **kw))
    expected = files_of(tmp_path / "local")
    assert s3.keys(bucket, "pile") == sorted(expected)
    assert all(s3.get(bucket, f"pile/{name}") == data for name, data in expected.items())
    written = {name: s3.versions(bucket, f"pile/{name}")[-1].last_modified for name in expected}
    assert written[GROUPS_FILE] == max(written.values())
    for folder in FOLDERS:  # each group looks finished only once all of it is there
        mine = [t for name, t in written.items() if name.startswith(folder + "/") and not name.endswith(METADATA_FILE)]
        assert written[f"{folder}/{METADATA_FILE}"] > max(mine)
    again = run(request(pile["src"], f"s3://{bucket}/pile", "bytes", **kw))
    assert again.skipped and set(again.datasets) == FOLDERS
    assert s3.versions(bucket, f"pile/{GROUPS_FILE}")[-1].last_modified == written[GROUPS_FILE]


# ---------------------------------------------------------------------------------------------- bad records & CLI


def test_skip_bad_counts_and_reports(tmp_path, read_split, capsys):
    good = [f"good document {i} " * 5 for i in range(40)]
    lines = [json.dumps({"text": t}) for t in good]
    lines.insert(3, '{"text": oops}')
    lines.insert(10, '{"body": "no text key"}')
    lines.insert(20, '{"text": "lone \\ud800 surrogate"}')
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(lines) + "\n")
    args = [src, "--tokenizer", "bytes", "--seq-len", "16", "--val-fraction", "0", "--no-progress"]
    code, _, stderr = convert_main(capsys, *args, "--out", tmp_path / "strict")
    assert code == 2, stderr
    err = error_line(stderr)
    assert "bad.jsonl:4" in err and "--skip-bad" in err and not (tmp_path / "strict").exists()

    code, stdout, stderr = convert_main(capsys, *args, "--out", tmp_path / "ds", "--skip-bad")
    assert code == 0, stderr
    assert "skipped 3 bad records" in stdout and "bad.jsonl:4" in stdout and "bad.jsonl:11" in stdout
    meta = read_metadata(tmp_path / "ds")
    assert meta.source["bad_records"] == 3 and meta.splits["train"].documents == len(good)
    assert meta.splits["train"].bytes == sum(len(t) for t in good)


@pytest.mark.parametrize("extra, expected", [
    (["--workers", "-1"], ["--workers", "-1"]),
    (["--hf-config", "en"], ["--hf-config", "--hf-dataset"]),
    (["--hf-dataset", "some/dataset"], ["INPUT", "--hf-dataset", "not both"]),
    (["--verify", "x"], ["--verify", "INPUT"]),
    (["--seq-len", "ten"], ["--seq-len", "invalid int value"]),
])
def test_cli_option_errors(extra, expected, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello")
    opts = {"--out": str(tmp_path / "out"), "--tokenizer": "bytes", "--seq-len": "4"}
    args = [x for kv in opts.items() for x in kv if kv[0] not in extra] + extra
    code, _, stderr = convert_main(capsys, tmp_path / "a.txt", *args)
    assert code == 2, stderr
    err = error_line(stderr)
    for part in expected:
        assert part in err, err
    assert not (tmp_path / "out").exists()


def test_cli_requires_out_tokenizer_and_seq_len(tmp_path):
    """End to end: the script as a user runs it."""
    err = one_error(run_convert(tmp_path / "a.txt"))
    assert "--out, --tokenizer, --seq-len required" in err


def test_hf_dataset_gives_the_samples_files_give(tmp_path, shakespeare_text, read_split, hf_offline):
    records = pile_records(shakespeare_text[:100_000], 60, seed=2)
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # hf_offline: a local folder, nothing may be fetched (flags and module constants restored after the test)
    kw = dict(seq_len=64, val_fraction=0.2, size_limit=1 << 14, progress=False)
    hub = run(ConvertRequest((), str(tmp_path / "from_hub"), "bytes", hf=HFSource(str(tmp_path / "hub")), **kw))
    files = run(ConvertRequest((str(tmp_path / "hub" / "data.jsonl"),), str(tmp_path / "from_files"), "bytes", **kw))
    assert hub.metadata.splits == files.metadata.splits
    assert hub.metadata.source["hf_dataset"] == {"name": str(tmp_path / "hub"), "config": None, "split": "train"}
    for split in ("train", "val"):
        assert np.array_equal(read_split(tmp_path / "from_hub" / split), read_split(tmp_path / "from_files" / split))


# -------------------------------------------------------------------------------------------------------- restarts


@pytest.mark.slow  # three runs of the script
def test_finished_output_is_skipped_until_arguments_or_inputs_change(tmp_path, shakespeare_text):
    src = write_zst(tmp_path / "p.jsonl.zst", pile_records(shakespeare_text[:200_000], 100, seed=3))
    out = tmp_path / "ds"
    args = [src, "--out", out, "--tokenizer", "bytes", "--seq-len", "64", "--val-fraction", "0", "--no-progress"]
    assert run_convert(*args).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    r = run_convert(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{out}: already converted with these arguments; nothing to do"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    other = [str(a) if a != "64" else "32" for a in args]  # other arguments
    assert "--overwrite" in one_error(run_convert(*other))
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))  # the input changed
    assert "--overwrite" in one_error(run_convert(*args))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    base = dict(seq_len=64, val_fraction=0.0, progress=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run(ConvertRequest((str(src),), str(out), "bytes", **base))
    redone = run(ConvertRequest((str(src),), str(out), "bytes", overwrite=True, **base))
    assert not redone.skipped and redone.metadata.source["input_files"][0]["mtime_ns"] == src.stat().st_mtime_ns
    assert run(ConvertRequest((str(src),), str(out), "bytes", **base)).skipped


def test_finished_grouped_output_is_skipped(grouped, pile, gpt2_dir):
    again = run(request(pile["src"], grouped["w1"], str(gpt2_dir), group_by="meta.pile_set_name", workers=2))
    assert again.skipped and set(again.datasets) == FOLDERS


def _is_worker(p: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _workers_running(proc: subprocess.Popen, partial: Path, shards: bool = True,
                     timeout: float = 120) -> list[psutil.Process]:
    """Wait (polling) until a conversion has two live workers (and is writing shards); returns its children."""

    def ready() -> bool:
        kids = [k for k in psutil.Process(proc.pid).children() if _is_worker(k)]
        return len(kids) == 2 and (not shards or any((partial / "train").glob("shard.*")))

    wait_until(ready, "the conversion has two workers writing shards", timeout=timeout, poll=0.02, proc=proc)
    return psutil.Process(proc.pid).children(recursive=True)


@pytest.fixture(scope="module")
def big(tmp_path_factory, shakespeare_text) -> Path:
    """~4 MB of Pile-format text: seconds of BPE work on two workers."""
    return write_zst(tmp_path_factory.mktemp("big") / "big.jsonl.zst", pile_records(shakespeare_text, 3000, seed=4))


@pytest.mark.slow  # a real multi-second BPE conversion with 2 worker processes, killed
def test_sigkill_with_workers_leaves_no_dataset_no_orphans_and_rerun_matches(big, gpt2_dir, tmp_path):
    out = tmp_path / "ds"
    args = [big, "--out", out, "--tokenizer", gpt2_dir, "--seq-len", "256", "--size-limit", str(1 << 16),
            "--val-fraction", "0", "--workers", "2", "--no-progress"]
    proc = start_convert(*args)
    children = _workers_running(proc, tmp_path / "ds.partial")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert gone(children), children  # the workers notice their parent is gone
    assert not out.exists()

    r = run_convert(*args)
    assert r.returncode == 0, r.stderr
    reference = tmp_path / "reference"
    run(ConvertRequest((str(big),), str(reference), str(gpt2_dir), 256, val_fraction=0, size_limit=1 << 16,
                       progress=False))
    assert files_of(out) == files_of(reference) and not (tmp_path / "ds.partial").exists()


@pytest.mark.slow  # a real multi-second BPE conversion with 2 worker processes, killed
def test_ctrl_c_with_workers_cleans_up(big, gpt2_dir, tmp_path):
    out = tmp_path / "ds"
    proc = start_convert(big, "--out", out, "--tokenizer", gpt2_dir, "--seq-len", "256", "--size-limit", 1 << 16,
                         "--workers", "2", "--no-progress")
    children = _workers_running(proc, tmp_path / "ds.partial")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error: ")] == \
        [f"error: interrupted; partial output removed, {out} left as it was"]
    assert gone(children) and not out.exists() and not (tmp_path / "ds.partial").exists()


@pytest.mark.slow  # a real multi-second BPE conversion with 2 worker processes, killed
def test_a_killed_worker_is_one_error(big, gpt2_dir, tmp_path):
    out = tmp_path / "ds"
    proc = start_convert(big, "--out", out, "--tokenizer", gpt2_dir, "--seq-len", "256", "--val-fraction", "0",
                         "--size-limit", 1 << 16, "--workers", "2", "--no-progress")
    children = _workers_running(proc, tmp_path / "ds.partial", shards=False)  # jobs are still pending
    worker = next(c for c in children if _is_worker(c))
    worker.kill()  # what the kernel's OOM killer does
    _, stderr = proc.communicate(timeout=60)
    one_error(proc, "a tokenizer worker process died", stderr=stderr)
    assert stderr.count("error: ") == 1
    assert gone(children) and not out.exists() and not (tmp_path / "ds.partial").exists()


# ---------------------------------------------------------------------------------------------------------- verify


def test_verify_passes_a_good_dataset_and_names_every_damage(single, tmp_path):
    good = run_convert("--verify", single)
    meta = read_metadata(single)
    shards = {s: json.loads((single / s / "index.json").read_text())["shards"] for s in meta.splits}
    n_shards = sum(map(len, shards.values()))
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.strip() == f"ok: {n_shards} shards, {sum(s.samples for s in meta.splits.values())} samples"

    bad = tmp_path / "bad"
    shutil.copytree(single, bad)
    names = [s["zip_data"]["basename"] for s in shards["train"]]
    flipped, truncated, deleted = (bad / "train" / n for n in names[:3])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-10])
    deleted.unlink()
    record = json.loads((bad / METADATA_FILE).read_text())
    record["splits"]["train"]["samples"] += 1
    (bad / METADATA_FILE).write_text(json.dumps(record))

    r = run_convert("--verify", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4, r.stdout
    assert any(str(flipped) in line and "sha256" in line for line in lines)
    assert any(str(truncated) in line and "bytes" in line for line in lines)
    assert any(str(deleted) in line and "missing" in line for line in lines)
    assert any(METADATA_FILE in line and "samples" in line for line in lines)
    assert one_error(r).startswith(f"error: {bad}: 4 problem(s)")


def test_verify_checks_every_group(grouped, tmp_path):
    assert verify(grouped["w1"]).ok
    copy = tmp_path / "g"
    shutil.copytree(grouped["w1"], copy)
    shard = sorted((copy / "ArXiv" / "val").glob("shard.*.mds.zstd"))[0]
    shard.write_bytes(shard.read_bytes()[:-1] + bytes([shard.read_bytes()[-1] ^ 0xFF]))
    listing = json.loads((copy / GROUPS_FILE).read_text())
    listing["groups"]["Pile-CC"]["tokens"] += 5
    (copy / GROUPS_FILE).write_text(json.dumps(listing))
    report = verify(copy)
    assert len(report.problems) == 2, report.problems
    assert str(shard) in report.problems[0] or str(shard) in report.problems[1]
    assert any("'Pile-CC'" in p and GROUPS_FILE in p for p in report.problems)
