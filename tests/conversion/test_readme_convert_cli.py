"""README, "1. Convert text to MDS", through convert_to_mds.py as a user runs it:

- `--workers N` ... "`0` = one per core"; "the output is the same, byte for byte, whatever N".
- "Re-running is safe": the same command on a finished `--out` prints `... already converted with these
  arguments; nothing to do` and exits 0 without tokenizing, "even with `--overwrite`".
- `--hf-dataset NAME [--hf-config C] [--hf-split S]` streams a Hugging Face dataset (here a local folder in the
  Hub's layout with two configs: no network); the flags without `--hf-dataset` are refused; a Hub name that cannot
  be reached (offline) is one `error:` line naming the config and split.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PYTHON, REPO, SHAKESPEARE, paragraphs_jsonl

pytestmark = pytest.mark.slow  # subprocesses of the script (a few seconds each)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="offline", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", **extra)
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _cli(cwd: Path, *args: str | Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(REPO / "convert_to_mds.py"), *map(str, args)], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def _one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(split: Path) -> np.ndarray:
    from streaming import StreamingDataset

    ds = StreamingDataset(local=str(split), shuffle=False, batch_size=1)
    return np.stack([ds[i]["tokens"] for i in range(len(ds))])


def _texts(samples: np.ndarray, eos: int = 256) -> list[str]:
    """The documents of a bytes-tokenized split (consecutive samples share one token)."""
    stream = np.concatenate([samples[0], samples[1:, 1:].ravel()])
    pieces = np.split(stream, np.flatnonzero(stream == eos))
    return [bytes(p[p != eos].astype(np.uint8)).decode() for p in pieces[:-1]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Half of Tiny Shakespeare as ~3,500 paragraph documents: several 1,024-document batches for the workers."""
    return paragraphs_jsonl(SHAKESPEARE.read_text(encoding="utf-8")[:600_000],
                           tmp_path_factory.mktemp("corpus") / "docs.jsonl")


# ---------------------------------------------------------------------------------------------------- --workers 0


def test_workers_zero_means_one_per_core_and_writes_the_same_bytes(corpus, gpt2_dir, tmp_path):
    from conversion.convert import ConvertRequest, run

    zero = _cli(tmp_path, corpus, "--out", tmp_path / "w0", "--workers", "0", "--tokenizer", gpt2_dir, "--seq-len",
                "64", "--val-fraction", "0.05", "--size-limit", str(1 << 16), "--no-progress")
    assert zero.returncode == 0, zero.stderr
    assert zero.stdout.startswith(f"wrote {tmp_path / 'w0'} (uint16, seq_len 64): train: ")
    run(ConvertRequest((str(corpus),), str(tmp_path / "w1"), str(gpt2_dir), 64, val_fraction=0.05,
                       size_limit=1 << 16, workers=1, progress=False))
    a, b = _files(tmp_path / "w0"), _files(tmp_path / "w1")
    assert sum(name.endswith(".mds.zstd") for name in a) > 4  # several shards per split
    assert sorted(a) == sorted(b)
    assert a == b  # every file: shards, index.json, tokenizer/ and metadata.json


def test_workers_zero_starts_a_pool_of_one_process_per_core(corpus, tmp_path, monkeypatch):
    """In-process, the pool's size: os.cpu_count() processes for --workers 0 (a pool is used at all only above 1)."""
    import conversion.batches as batches
    from conversion.convert import ConvertRequest, run

    sizes = []
    real = batches.OrderedPool

    class Spy(real):
        def __init__(self, workers, *args, **kwargs):
            sizes.append(workers)
            super().__init__(workers, *args, **kwargs)

    monkeypatch.setattr(batches, "OrderedPool", Spy)
    small = paragraphs_jsonl(SHAKESPEARE.read_text(encoding="utf-8")[:300_000], tmp_path / "small.jsonl")
    conv = run(ConvertRequest((str(small),), str(tmp_path / "ds"), "bytes", 64, val_fraction=0, workers=0,
                              progress=False))
    assert conv.metadata.splits["train"].documents > 1024  # more than one batch
    cores = os.cpu_count() or 1
    assert sizes == ([cores] if cores > 1 else [])


# ------------------------------------------------------------------------------------- re-running, --overwrite


def test_rerun_with_overwrite_of_a_finished_conversion_is_skipped_without_tokenizing(corpus, tmp_path,
                                                                                   monkeypatch):
    import conversion.convert as convert_module
    from conversion.convert import ConvertRequest, run

    out = tmp_path / "ds"
    req = ConvertRequest((str(corpus),), str(out), "bytes", 64, val_fraction=0.1, progress=False)
    assert not run(req).skipped  # convert_to_mds.py CORPUS --out ds --tokenizer bytes --seq-len 64 --val-fraction 0.1
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = _cli(tmp_path, corpus, "--out", out, "--tokenizer", "bytes", "--seq-len", "64", "--val-fraction", "0.1",
                 "--no-progress", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{out}: already converted with these arguments; nothing to do"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # not rewritten
    assert not list(tmp_path.glob("ds.partial*"))

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(convert_module, "encode_batches", no_tokenizing)
    # --workers changes how, never what, is written: it is not part of "these arguments"
    done = run(replace(req, overwrite=True, workers=2))
    assert done.skipped and done.metadata.splits["train"].documents > 3 * 1024
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


# --------------------------------------------------------------------------------------- --hf-config / --hf-split


CONFIGS = {("en", "train"): 30, ("en", "test"): 7, ("fr", "train"): 20, ("fr", "test"): 5}


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory) -> Path:
    """A dataset in the Hub's layout: two configs (en, fr), each with a train and a test split, declared in the
    README's YAML header, as Hub datasets declare them. `load_dataset` reads such a folder without network."""
    root = tmp_path_factory.mktemp("hub") / "ds"
    header = ["---", "configs:"]
    for lang in ("en", "fr"):
        header += [f"- config_name: {lang}", "  data_files:"]
        for split in ("train", "test"):
            n = CONFIGS[lang, split]
            path = root / lang / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"text": f"{lang}/{split} document {i}\n" + "x" * i}) + "\n"
                                    for i in range(n)))
            header += [f"  - split: {split}", f"    path: {lang}/{split}.jsonl"]
    (root / "README.md").write_text("\n".join(header + ["---", ""]))
    return root


def _check_converted(out: Path, hub_folder: Path, config: str, split: str) -> None:
    n = CONFIGS[config, split]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["source"]["hf_dataset"] == {"name": str(hub_folder), "config": config, "split": split}
    assert meta["splits"]["train"]["documents"] == n
    docs = _texts(_read(out / "train"))
    want = [f"{config}/{split} document {i}\n" + "x" * i for i in range(n)]
    assert docs == want[:len(docs)] and len(docs) >= n - 1  # in row order (the last may be cut by packing)


def test_hf_config_and_split_choose_what_is_converted(hub_folder, tmp_path):
    out = tmp_path / "out"
    r = _cli(tmp_path, "--hf-dataset", hub_folder, "--hf-config", "fr", "--hf-split", "test", "--out", out,
             "--tokenizer", "bytes", "--seq-len", "8", "--val-fraction", "0", "--no-progress",
             HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    _check_converted(out, hub_folder, "fr", "test")


@pytest.mark.parametrize("split", ["train", None])
def test_hf_split_defaults_to_train(hub_folder, tmp_path, split, monkeypatch):
    """In-process (ConvertRequest is what the flags build): the other config; --hf-split left out is train."""
    import convert_to_mds
    from conversion.convert import run

    flags = ["--hf-dataset", str(hub_folder), "--hf-config", "en"] + (["--hf-split", split] if split else [])
    args = convert_to_mds.parse_args([*flags, "--out", str(tmp_path / "out"), "--tokenizer", "bytes", "--seq-len",
                                      "8", "--val-fraction", "0", "--no-progress"])
    run(convert_to_mds.request_from(args))
    _check_converted(tmp_path / "out", hub_folder, "en", "train")


def test_hf_unknown_config_or_split_is_one_error_line(hub_folder, tmp_path):
    common = ["--out", tmp_path / "out", "--tokenizer", "bytes", "--seq-len", "8", "--no-progress"]
    err = _one_error(_cli(tmp_path, "--hf-dataset", hub_folder, "--hf-config", "de", *common, HF_HUB_OFFLINE="1"))
    assert "(config de, split train)" in err and "'de' not found" in err and "en" in err and "fr" in err
    err = _one_error(_cli(tmp_path, "--hf-dataset", hub_folder, "--hf-config", "en", "--hf-split", "validation",
                          *common, HF_HUB_OFFLINE="1"))
    assert "(config en, split validation)" in err and "check the name, config and split" in err
    assert not (tmp_path / "out").exists()


def test_hf_split_without_hf_dataset_is_refused_for_a_saved_folder(tmp_path):
    """A saved DatasetDict folder given as an INPUT is read as its train split (tests/conversion/test_sources.py);
    --hf-split does not pick another (pass that split's folder instead): it is refused, not ignored."""
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"text": f"train {i}"} for i in range(20)]),
                 "test": Dataset.from_list([{"text": f"test {i}"} for i in range(5)])}
                ).save_to_disk(str(tmp_path / "dd"))
    err = _one_error(_cli(tmp_path, tmp_path / "dd", "--hf-split", "test", "--out", tmp_path / "out", "--tokenizer",
                          "bytes", "--seq-len", "4", "--val-fraction", "0", "--no-progress"))
    assert err == "error: --hf-config / --hf-split need --hf-dataset NAME", err
    assert not (tmp_path / "out").exists()


def test_hf_dataset_on_a_saved_folder_reads_the_split_or_says_to_pass_it_as_input(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"text": f"train {i}"} for i in range(20)]),
                 "test": Dataset.from_list([{"text": f"test {i}"} for i in range(5)])}
                ).save_to_disk(str(tmp_path / "dd"))
    r = _cli(tmp_path, "--hf-dataset", tmp_path / "dd", "--hf-split", "test", "--out", tmp_path / "out",
             "--tokenizer", "bytes", "--seq-len", "4", "--val-fraction", "0", "--no-progress", HF_HUB_OFFLINE="1")
    err = _one_error(r)
    assert "is a folder saved by datasets' save_to_disk, which is an input" in err, err
    assert f"convert_to_mds.py {tmp_path / 'dd' / 'test'}" in err and "_data_files" not in err, err
    assert not (tmp_path / "out").exists()


def test_hub_name_offline_is_one_error_line_naming_config_and_split(tmp_path):
    r = _cli(tmp_path, "--hf-dataset", "no-such-user/no-such-dataset", "--hf-config", "en", "--hf-split",
             "validation", "--out", tmp_path / "out", "--tokenizer", "bytes", "--seq-len", "8", "--no-progress",
             HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    err = _one_error(r)
    assert err.startswith("error: cannot stream the Hugging Face dataset 'no-such-user/no-such-dataset' "
                          "(config en, split validation) with offline mode on"), err
    assert "save_to_disk" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial*"))
