"""Text → MDS conversion end to end: real files, real MDSWriter, read back with the real StreamingDataset."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zstandard

from conversion.convert import BATCH_CHARS, ConvertRequest, assign_split, convert
from conversion.convert import run as run_conversion
from conversion.packing import Packer, flatten_documents
from conversion.sources import expand_inputs, iter_documents, supported_suffixes
from core.errors import DataError, InputError, OptionError, OutputExistsError
from core.metadata import METADATA_FILE, read_metadata
from core.tokenizer import BYTES_EOS_ID, load_tokenizer
from tests.helpers import convert_main, error_line, one_error, run_convert, start_convert, wait_until

DOCS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "All:\nSpeak, speak.",
    "naïve café — déjà vu, Straße, 東京 🙂",
    "You are all resolved rather to die than to famish?",
    "x",
    "Resolved. resolved.\n\n\n",
]


# ---------------------------------------------------------------------------------------------------------- helpers


def write_jsonl(path: Path, texts: list[str], key: str = "text") -> Path:
    path.write_text("".join(json.dumps({key: t, "meta": {"i": i}}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")
    return path


def stream_of(samples: np.ndarray) -> np.ndarray:
    """Undo the packing: the first sample whole, then each later sample minus the token it shares."""
    assert (samples[1:, 0] == samples[:-1, -1]).all(), "consecutive samples must overlap by exactly one token"
    return np.concatenate([samples[0], samples[1:, 1:].ravel()])


def bytes_stream(texts: list[str]) -> np.ndarray:
    ids: list[int] = []
    for t in texts:
        ids += list(t.encode("utf-8")) + [BYTES_EOS_ID]
    return np.array(ids)


def complete_docs(stream: np.ndarray, eos: int = BYTES_EOS_ID) -> list[str]:
    """Texts of the documents whose EOS made it into the stream (bytes tokenizer)."""
    pieces = np.split(stream, np.flatnonzero(stream == eos))
    return [bytes(p[p != eos].astype(np.uint8)).decode("utf-8") for p in pieces[:-1]]


def assert_nothing_finished(out: Path, existed_before: bool = False) -> None:
    assert not (out / METADATA_FILE).exists()
    assert out.exists() == existed_before
    assert not out.with_name(out.name + ".partial").exists()


def shakespeare_jsonl(path: Path, text: str, copies: int) -> Path:
    paras = [p for p in text.split("\n\n") if p]
    return write_jsonl(path, [f"{r}: {p}" for r in range(copies) for p in paras])


# ------------------------------------------------------------------------------------------------------- round trip


def test_round_trip_bytes(tmp_path, read_split):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = [src / "a.txt", src / "b.txt", src / "sub" / "c.txt", src / "z.txt"]
    for i, f in enumerate(files):
        f.write_text(DOCS[i], encoding="utf-8")
    (src / "notes.md").write_text("not an input")
    out = tmp_path / "ds"
    seq_len = 16
    meta = convert([str(src)], str(out), "bytes", seq_len, val_fraction=0, size_limit=1 << 9, progress=False)

    samples = read_split(out / "train")
    assert samples.dtype == np.uint16 and samples.shape[1] == seq_len + 1
    stream = stream_of(samples)
    expected = bytes_stream(DOCS[:4])  # sorted: a, b, sub/c, z
    assert np.array_equal(stream, expected[:len(stream)])
    assert len(expected) - len(stream) == meta.splits["train"].dropped_tokens < seq_len
    assert complete_docs(stream) == DOCS[:len(complete_docs(stream))] and len(complete_docs(stream)) >= 3
    eos_positions = np.flatnonzero(stream == BYTES_EOS_ID)
    assert list(eos_positions) == list(np.cumsum([len(d.encode()) + 1 for d in DOCS[:len(eos_positions)]]) - 1)
    assert len(list((out / "train").glob("shard.*.mds.zstd"))) > 1  # several shards, read back in order

    train = meta.splits["train"]
    assert set(meta.splits) == {"train"} and not (out / "val").exists()
    assert (train.documents, train.samples, train.tokens) == (4, len(samples), len(stream))
    assert train.bytes == sum(len(d.encode("utf-8")) for d in DOCS[:4])
    assert train.tokens + train.dropped_tokens == len(expected)
    assert (meta.seq_len, meta.sample_len, meta.dtype, meta.vocab_size, meta.eos_id) == (16, 17, "uint16", 257, 256)
    assert meta.tokenizer == {"kind": "bytes", "name": "bytes", "sha256": None, "files": ["bytes_tokenizer.json"]}
    assert read_metadata(out) == meta
    assert meta.source["inputs"] == [str(f) for f in files] and meta.source["val_fraction"] == 0


def test_mds_layout_and_metadata_written_last(tmp_path):
    out = tmp_path / "ds"
    convert([str(write_jsonl(tmp_path / "d.jsonl", DOCS * 3))], str(out), "bytes", 8, val_fraction=0,
            progress=False)
    index = json.loads((out / "train" / "index.json").read_text())
    shard = index["shards"][0]
    assert shard["column_encodings"] == ["ndarray:uint16:9"] and shard["column_names"] == ["tokens"]
    assert shard["column_sizes"] == [18] and shard["compression"] == "zstd"
    assert not (out.parent / "ds.partial").exists()
    last = (out / METADATA_FILE).stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= last for p in out.rglob("*") if p.is_file())
    tok = load_tokenizer(str(out / "tokenizer"))
    assert (tok.kind, tok.vocab_size, tok.eos_id) == ("bytes", 257, 256)


def test_gpt2_dataset_round_trip(tmp_path, gpt2_dir, read_split):
    docs = ["Hello world. A literal <|endoftext|> stays text.", "naïve café 東京 🙂", "Second doc.\n" * 5]
    out = tmp_path / "ds"
    meta = convert([str(write_jsonl(tmp_path / "d.jsonl", docs))], str(out), str(gpt2_dir), 8, val_fraction=0,
                   progress=False)
    tok = load_tokenizer(str(out / "tokenizer"))
    assert (meta.vocab_size, meta.eos_id, meta.dtype) == (50257, 50256, "uint16")
    assert meta.tokenizer["sha256"] == load_tokenizer(str(gpt2_dir)).identity()["sha256"]
    expected = np.concatenate([tok.encode(d) + [tok.eos_id] for d in docs])
    samples = read_split(out / "train")
    assert samples.dtype == np.uint16 and samples.shape[1] == 9
    stream = stream_of(samples)
    assert np.array_equal(stream, expected[:len(stream)])
    assert int((stream == 50256).sum()) == len(docs) - (len(expected) - len(stream) > 0)  # one EOS per doc
    assert tok.decode(stream[:len(tok.encode(docs[0]))].tolist()) == docs[0]
    table = tok.token_bytes()
    assert int(table[expected].sum()) == meta.splits["train"].bytes == sum(len(d.encode()) for d in docs)


def test_chars_dataset_round_trip(tmp_path, read_split):
    """--tokenizer chars: the vocabulary is the corpus's characters (a first pass over every input), saved next to
    the shards like any tokenizer, and the shards hold nanoGPT's char ids."""
    docs = ["First Citizen:\nBefore we proceed", "naïve café 東京 🙂", "a literal <|endoftext|> stays text"]
    out = tmp_path / "ds"
    meta = convert([str(write_jsonl(tmp_path / "d.jsonl", docs))], str(out), "chars", 8, val_fraction=0,
                   progress=False)
    chars = sorted(set("".join(docs)))
    assert (meta.vocab_size, meta.eos_id, meta.dtype) == (len(chars) + 1, len(chars), "uint16")
    assert (meta.tokenizer["kind"], meta.tokenizer["name"]) == ("hf", "chars")
    tok = load_tokenizer(str(out / "tokenizer"))
    assert tok.identity()["sha256"] == meta.tokenizer["sha256"] and tok.vocab_size == meta.vocab_size
    stream = stream_of(read_split(out / "train"))
    expected = np.concatenate([[chars.index(ch) for ch in d] + [len(chars)] for d in docs])
    assert np.array_equal(stream, expected[:len(stream)]) and len(expected) - len(stream) < 9
    assert meta.splits["train"].bytes == sum(len(d.encode()) for d in docs) == int(tok.token_bytes()[expected].sum())
    again = run_conversion(ConvertRequest((str(tmp_path / "d.jsonl"),), str(out), "chars", 8, val_fraction=0,
                                          progress=False))
    assert again.skipped and again.metadata == meta  # the same corpus gives the same alphabet: already converted


# ---------------------------------------------------------------------------------------------------------- packing


@pytest.mark.parametrize("seq_len, capacity", [(1, 4), (3, 7), (16, 40), (50, 1 << 20)])
def test_packer_matches_reference_slicing(seq_len, capacity):
    rng = random.Random(seq_len)
    docs = [[rng.randrange(256) for _ in range(rng.randrange(0, 60))] for _ in range(40)]
    out: list[np.ndarray] = []
    p = Packer(seq_len, 256, "uint16", lambda s: out.append(s.copy()), capacity=capacity)
    for i in range(0, len(docs), 7):
        p.add_tokens(flatten_documents(docs[i:i + 7], 256, "uint16"))
    dropped = p.finish()
    stream = np.concatenate([d + [256] for d in docs])
    n = (len(stream) - 1) // seq_len
    assert len(out) == p.samples == n
    for k, s in enumerate(out):
        assert np.array_equal(s, stream[k * seq_len:k * seq_len + seq_len + 1])
    assert dropped == len(stream) - (n * seq_len + 1) and dropped < seq_len
    assert p.tokens + dropped == p.total_tokens == len(stream)


def test_packer_too_little_input():
    p = Packer(10, 256, "uint16", lambda s: pytest.fail("no sample expected"))
    p.add_tokens(flatten_documents([[1, 2, 3]], 256, "uint16"))
    assert p.finish() == 4 and p.samples == 0 and p.tokens == 0


# ------------------------------------------------------------------------------------------------------------ split


def test_split_by_document_hash_ignores_position(tmp_path, read_split):
    docs = [f"document number {i} says {'ha' * (i % 7)}" for i in range(300)]
    expected_val = {d for d in docs if assign_split(d.encode(), 0.3) == "val"}
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "b" / "1.jsonl", shuffled[:100])
    write_jsonl(tmp_path / "b" / "2.jsonl", shuffled[100:])
    runs = {}
    for name, inputs in {"a": [str(write_jsonl(tmp_path / "a.jsonl", docs))], "b": [str(tmp_path / "b")]}.items():
        # seq_len 1: samples of 2 tokens, nothing dropped, so every document can be read back whole
        meta = convert(inputs, str(tmp_path / f"out_{name}"), "bytes", 1, val_fraction=0.3, progress=False)
        runs[name] = {s: complete_docs(stream_of(read_split(tmp_path / f"out_{name}" / s))) for s in ("train", "val")}
        assert meta.splits["val"].documents == len(expected_val) and meta.splits["val"].dropped_tokens == 0
    for run in runs.values():
        assert set(run["val"]) == expected_val
        assert set(run["train"]) == set(docs) - expected_val
    assert runs["a"]["val"] == [d for d in docs if d in expected_val]  # order inside a split follows the input
    assert 0.2 < len(expected_val) / len(docs) < 0.4


def test_val_fraction_is_roughly_respected():
    texts = [f"doc {i}".encode() for i in range(20000)]
    for f in (0.01, 0.1, 0.5):
        share = sum(assign_split(t, f) == "val" for t in texts) / len(texts)
        assert abs(share - f) < 0.15 * f + 0.002
    assert all(assign_split(t, 0) == "train" for t in texts[:100])


def test_no_val_folder_with_zero_fraction(tmp_path):
    meta = convert([str(write_jsonl(tmp_path / "d.jsonl", DOCS * 20))], str(tmp_path / "ds"), "bytes", 4,
                   val_fraction=0, progress=False)
    assert set(meta.splits) == {"train"} and not (tmp_path / "ds" / "val").exists()


def test_empty_val_split_is_omitted_with_warning(tmp_path):
    docs = ["a" * 50] + [d for d in DOCS if assign_split(d.encode(), 0.01) == "train"]
    with pytest.warns(UserWarning, match="no val split"):
        meta = convert([str(write_jsonl(tmp_path / "d.jsonl", docs))], str(tmp_path / "ds"), "bytes", 4,
                       val_fraction=0.01, progress=False)
    assert set(meta.splits) == {"train"} and not (tmp_path / "ds" / "val").exists()


# ---------------------------------------------------------------------------------------------------------- sources


def test_jsonl_zst_and_text_key(tmp_path, read_split):
    docs = DOCS * 50
    (tmp_path / "p").mkdir()
    plain = write_jsonl(tmp_path / "p" / "d.jsonl", docs, key="content")
    data = plain.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    (tmp_path / "z").mkdir()
    zst = tmp_path / "z" / "d.jsonl.zst"
    zst.write_bytes(cctx.compress(data[:half]) + cctx.compress(b"\n  \n" + data[half:]))  # two frames, blank lines
    streams = []
    for name, src in {"plain": plain, "zst": zst}.items():
        meta = convert([str(src)], str(tmp_path / name), "bytes", 32, val_fraction=0, text_key="content",
                       progress=False)
        assert meta.splits["train"].documents == len(docs) and meta.source["text_key"] == "content"
        streams.append(stream_of(read_split(tmp_path / name / "train")))
    assert np.array_equal(streams[0], streams[1])
    assert np.array_equal(streams[0], bytes_stream(docs)[:len(streams[0])])
    lines = [d.line for d in iter_documents([zst], "content")]
    assert lines[:2] == [1, 2] and lines[-1] == len(docs) + 2  # physical line numbers, blank lines counted


def test_expand_inputs(tmp_path):
    for rel in ["b/2.jsonl", "b/1.txt", "a.jsonl.zst", "b/.hidden/x.txt", "b/skip.json", "c/deep/3.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    got = expand_inputs([str(tmp_path / "c"), str(tmp_path / "b"), str(tmp_path / "*.zst"),
                         str(tmp_path / "b" / "1.txt")])
    assert got == [tmp_path / "a.jsonl.zst", tmp_path / "b/1.txt", tmp_path / "b/2.jsonl", tmp_path / "c/deep/3.txt"]
    assert expand_inputs([str(tmp_path / "**" / "*.txt")]) == [tmp_path / "b/1.txt", tmp_path / "c/deep/3.txt"]
    assert supported_suffixes() == [".json.gz", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt"]
    with pytest.raises(InputError, match="not a supported file kind"):
        expand_inputs([str(tmp_path / "b" / "skip.json")])


# ------------------------------------------------------------------------------------------------- bad input (CLI)


def _zst_bytes(docs: list[str]) -> bytes:
    return zstandard.ZstdCompressor().compress("".join(json.dumps({"text": d}) + "\n" for d in docs).encode())


BAD_INPUTS = {
    # name: (files to create {relative path: bytes}, input argument, extra CLI args, expected message parts)
    "missing_path": ({}, "nope.jsonl", [], ["nope.jsonl", "does not exist"]),
    "dir_without_supported": ({"d/x.csv": b"a,b"}, "d", [], ["no supported input files", ".jsonl.zst", ".txt"]),
    "glob_without_match": ({"x.csv": b"a"}, "*.jsonl", [], ["matches no supported input files", ".jsonl"]),
    "unsupported_file": ({"x.csv": b"a"}, "x.csv", [], ["not a supported file kind", ".txt"]),
    "empty_input": ({"e/a.txt": b"", "e/b.jsonl": b'{"text": ""}\n\n'}, "e", [], ["no documents", "--text-key"]),
    "txt_not_utf8": ({"l.txt": "caf\u00e9 au lait".encode("latin-1")}, "l.txt", [], ["l.txt", "not valid UTF-8"]),
    "jsonl_not_utf8": ({"l.jsonl": b'{"text": "ok"}\n{"text": "caf\xe9"}\n'}, "l.jsonl", [],
                       ["l.jsonl:2", "not valid UTF-8"]),
    "jsonl_not_json": ({"j.jsonl": b'{"text": "a"}\n{"text": "b"}\n{"text": oops}\n'}, "j.jsonl", [],
                       ["j.jsonl:3", "not valid JSON"]),
    "jsonl_not_object": ({"j.jsonl": b'["text"]\n'}, "j.jsonl", [], ["j.jsonl:1", "JSON object"]),
    "jsonl_missing_key": ({"k.jsonl": b'{"body": "a", "id": 1}\n'}, "k.jsonl", [],
                          ["k.jsonl:1", "'text'", "'body', 'id'", "--text-key"]),
    "jsonl_value_not_string": ({"k.jsonl": b'{"text": "a"}\n{"text": 42}\n'}, "k.jsonl", [],
                               ["k.jsonl:2", "number, not a string"]),
    "lone_surrogate": ({"s.jsonl": b'{"text": "a\\ud800b"}\n'}, "s.jsonl", [], ["s.jsonl:1", "surrogate"]),
    "zst_truncated": ({"t.jsonl.zst": _zst_bytes(DOCS * 200)[:-40]}, "t.jsonl.zst", [], ["t.jsonl.zst", "truncated"]),
    "zst_corrupt": ({"c.jsonl.zst": b"this is not zstd data"}, "c.jsonl.zst", [],
                    ["c.jsonl.zst", "not a valid zstd file"]),
    "seq_len_zero": ({"a.txt": b"hello"}, "a.txt", ["--seq-len", "0"], ["--seq-len", "positive"]),
    "seq_len_negative": ({"a.txt": b"hello"}, "a.txt", ["--seq-len", "-3"], ["--seq-len", "-3"]),
    "val_fraction_one": ({"a.txt": b"hello"}, "a.txt", ["--val-fraction", "1"], ["--val-fraction", "[0, 1)"]),
    "val_fraction_negative": ({"a.txt": b"hello"}, "a.txt", ["--val-fraction", "-0.1"], ["--val-fraction"]),
    "unknown_tokenizer": ({"a.txt": b"hello"}, "a.txt", ["--tokenizer", "no-such-tokenizer-xyz"],
                          ["unknown tokenizer", "no-such-tokenizer-xyz"]),
    "input_too_small": ({"a.txt": b"hello"}, "a.txt", ["--seq-len", "1000"],
                        ["input too small for seq_len 1000: 6 tokens"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_bad_input(case, tmp_path, capsys):
    """convert_to_mds.main in-process (cheap; the end-to-end script is checked below): one error line, exit 2."""
    files, arg, extra, expected = BAD_INPUTS[case]
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    out = tmp_path / "out"
    opts = {"--tokenizer": "bytes", "--seq-len": "8", "--val-fraction": "0"}
    opts.update(dict(zip(extra[::2], extra[1::2])))
    code, _, err = convert_main(capsys, tmp_path / arg if "*" not in arg else f"{tmp_path}/{arg}", "--out", out,
                                *[x for kv in opts.items() for x in kv])
    assert code == 2, err
    line = error_line(err)
    for part in expected:
        assert part in line, line
    assert_nothing_finished(out)


def test_cli_refuses_non_empty_out_without_overwrite(tmp_path):
    """End to end: the script as a user runs it."""
    (tmp_path / "a.txt").write_text("hello world " * 10)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = run_convert(tmp_path / "a.txt", "--out", out, "--tokenizer", "bytes", "--seq-len", "8")
    one_error(r, "--overwrite", str(out))
    assert r.stderr.startswith("error: ")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "out.partial").exists()


def test_bad_options_raise_data_errors(tmp_path):
    src = [str(write_jsonl(tmp_path / "d.jsonl", DOCS))]
    for kwargs, message in [
        ({"seq_len": 0}, "--seq-len must be a positive integer, got 0"),
        ({"seq_len": 4, "val_fraction": 1.5}, re.escape("--val-fraction must be in [0, 1), got 1.5")),
        ({"seq_len": 4, "compression": "lz4"}, "--compression 'lz4' is not supported"),
        ({"seq_len": 4, "size_limit": 0}, re.escape("--size-limit must be in (0, 2**32) bytes, got 0")),
        ({"seq_len": 4, "text_key": ""}, "--text-key must not be empty"),
    ]:
        with pytest.raises(OptionError, match=message):
            convert(src, str(tmp_path / "ds"), "bytes", **kwargs)
    with pytest.raises(OptionError, match="only s3://"):
        convert(src, "gs://bucket/ds", "bytes", 4)
    with pytest.raises(OptionError, match="inside --out"):
        convert(src, str(tmp_path), "bytes", 4, overwrite=True)
    assert not (tmp_path / "ds").exists()


# -------------------------------------------------------------------------------------------- overwrite & atomicity


def test_overwrite_replaces(tmp_path):
    src = [str(write_jsonl(tmp_path / "d.jsonl", DOCS * 10))]
    out = tmp_path / "ds"
    convert(src, str(out), "bytes", 8, val_fraction=0, progress=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        convert(src, str(out), "bytes", 16, val_fraction=0, progress=False)
    assert read_metadata(out).seq_len == 8
    (tmp_path / "ds.partial").mkdir()  # stale leftovers of a killed run are cleared
    (tmp_path / "ds.partial" / "junk").write_text("x")
    meta = convert(src, str(out), "bytes", 16, val_fraction=0, overwrite=True, progress=False)
    assert read_metadata(out) == meta and meta.seq_len == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "ds"]


@pytest.mark.slow  # a ~3 MB conversion
def test_failure_midway_leaves_old_dataset_untouched(tmp_path, shakespeare_text):
    out = tmp_path / "ds"
    (tmp_path / "in").mkdir()
    first = write_jsonl(tmp_path / "in" / "a.jsonl", DOCS * 10)
    convert([str(first)], str(out), "bytes", 8, val_fraction=0, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    big = shakespeare_jsonl(tmp_path / "in" / "b.jsonl", shakespeare_text, 3)
    assert big.stat().st_size > BATCH_CHARS  # samples get written before the bad line is reached
    (tmp_path / "in" / "c.jsonl").write_text('{"text": "fine"}\n{"text": 7}\n')
    with pytest.raises(InputError, match="c.jsonl:2"):
        convert([str(tmp_path / "in")], str(out), "bytes", 8, val_fraction=0.01, overwrite=True, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "ds.partial").exists() and not (tmp_path / "ds.replaced").exists()


@pytest.mark.slow  # a ~9 MB conversion subprocess, killed, then run again
def test_sigkill_midway_leaves_no_dataset_and_rerun_succeeds(tmp_path, shakespeare_text):
    src = shakespeare_jsonl(tmp_path / "big.jsonl", shakespeare_text, 8)  # ~9 MB
    out = tmp_path / "ds"
    args = [src, "--out", out, "--tokenizer", "bytes", "--seq-len", "64", "--size-limit", 1 << 16, "--no-progress"]
    proc = start_convert(*args, stdout=subprocess.DEVNULL)
    partial_train = tmp_path / "ds.partial" / "train"
    wait_until(partial_train.exists, "the conversion writes ds.partial/train", timeout=60, proc=proc)
    assert proc.poll() is None, f"conversion ended before it could be killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not (out / METADATA_FILE).exists()

    r = run_convert(*args)
    assert r.returncode == 0, r.stderr
    meta = read_metadata(out)
    assert meta.splits["train"].samples > 0 and not (tmp_path / "ds.partial").exists()


def test_data_errors_share_one_base():
    for cls in (InputError, OptionError, OutputExistsError):
        assert issubclass(cls, DataError)
