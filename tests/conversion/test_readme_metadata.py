"""README, "1. Convert text to MDS", what the output records:

- "The output holds `train/`, `val/`, `tokenizer/` and `metadata.json` (tokenizer identity and hash, vocab size,
  EOS id, seq len, dtype, per-split document/token/byte/sample counts, and under `source` the arguments, each
  input's path, size and mtime, and the sha256 of each split's `index.json`). Each shard's sha256 is in its split's
  `index.json` (Streaming's MDSWriter `hashes`)."
- "Tokens are stored as `uint16` when the vocab fits, zstd-compressed."
- "`convert_to_mds.py --out` writes to `s3://` only" (another store's URL is refused before any work).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conversion.convert import convert
from core.errors import OptionError
from core.tokenizer import load_tokenizer, token_dtype
from tests.helpers import paragraphs_jsonl


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, shakespeare_text, gpt2_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("meta")
    src = paragraphs_jsonl(shakespeare_text[:200_000], root / "src" / "docs.jsonl")
    out = root / "ds"
    convert([str(src)], str(out), str(gpt2_dir), 64, val_fraction=0.1, size_limit=1 << 15, progress=False)
    return src, out


def test_metadata_records_tokenizer_counts_and_sources(converted, gpt2_dir):
    src, out = converted
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "tokenizer", "train", "val"]
    meta = json.loads((out / "metadata.json").read_text())
    tok = load_tokenizer(str(gpt2_dir))
    assert meta["tokenizer"]["sha256"] == tok.identity()["sha256"] and meta["tokenizer"]["kind"] == "hf"
    assert meta["vocab_size"] == 50257 and meta["eos_id"] == 50256 and meta["seq_len"] == 64
    assert meta["sample_len"] == 65 and meta["dtype"] == "uint16"
    for split in ("train", "val"):
        counts = meta["splits"][split]
        assert set(counts) >= {"documents", "tokens", "bytes", "samples"}
        assert counts["samples"] > 0 and counts["tokens"] == counts["samples"] * 64 + 1
    total_docs = sum(meta["splits"][s]["documents"] for s in ("train", "val"))
    assert total_docs == sum(1 for _ in src.open())
    source = meta["source"]
    assert source["val_fraction"] == 0.1 and source["text_key"] == "text" and source["size_limit"] == 1 << 15
    assert source["compression"] == "zstd"
    stat = src.stat()
    assert source["input_files"] == [{"path": str(src.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}]
    for split in ("train", "val"):
        assert source["index_sha256"][split] == _sha256(out / split / "index.json")


def test_each_shard_sha256_is_in_its_index_and_shards_are_zstd_uint16(converted):
    _, out = converted
    for split in ("train", "val"):
        index = json.loads((out / split / "index.json").read_text())
        shards = index["shards"]
        assert len(shards) > (1 if split == "train" else 0)
        on_disk = sorted(p.name for p in (out / split).iterdir() if p.name != "index.json")
        assert on_disk == sorted(s["zip_data"]["basename"] for s in shards)
        for shard in shards:
            assert shard["compression"] == "zstd" and shard["zip_data"]["basename"].endswith(".mds.zstd")
            assert shard["zip_data"]["hashes"]["sha256"] == _sha256(out / split / shard["zip_data"]["basename"])
            assert shard["column_encodings"] == ["ndarray:uint16:65"]


@pytest.mark.parametrize("vocab, dtype", [(257, "uint16"), (50257, "uint16"), (1 << 16, "uint16"),
                                          ((1 << 16) + 1, "uint32"), (128256, "uint32")])
def test_token_dtype_is_uint16_when_the_vocab_fits(vocab, dtype):
    assert token_dtype(vocab) == dtype


@pytest.mark.parametrize("url", ["gs://bucket/prefix", "azure://container/prefix", "oci://bucket@ns/prefix"])
def test_out_writes_to_s3_only(url, tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n")
    with pytest.raises(OptionError, match=rf"--out {url}: only s3:// URLs can be written"):
        convert([str(tmp_path / "a.txt")], url, "bytes", 4, val_fraction=0, progress=False)
