"""Input formats and robust reading: every format read with the real libraries (gzip, zstandard, pyarrow, HF
datasets), bad records skipped or raised, whole-file problems always one InputError naming the file."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from conversion.convert import convert
from conversion.sources import BadRecordError, BadRecords, Document, expand_inputs, hf_hub_documents, iter_documents
from core.errors import InputError, OptionError

GROUP = "meta.pile_set_name"
SETS = ["Pile-CC", "Github", "ArXiv", "Wikipedia (en)"]


def records() -> list[dict]:
    """1,500 Pile-style records (more than one 1,024-row Arrow batch), some empty texts, non-ASCII, a nested
    group field, and extra fields."""
    out = []
    for i in range(1500):
        text = "" if i % 97 == 5 else f"doc {i}: naïve café 東京 🙂 " + "x" * (i % 13) + "\n" * (i % 3)
        out.append({"text": text, "id": f"id-{i}", "meta": {"pile_set_name": SETS[i % len(SETS)], "n": i}})
    return out


def expected(recs: list[dict]) -> list[tuple[str, str, int]]:
    """(text, group, 1-based line/row) of every non-empty record."""
    return [(r["text"], r["meta"]["pile_set_name"], i) for i, r in enumerate(recs, start=1) if r["text"]]


def jsonl_bytes(recs: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in recs).encode()


def write_parquet(path: Path, recs: list[dict], row_group_size: int = 400) -> Path:
    pq.write_table(pa.Table.from_pylist(recs), path, row_group_size=row_group_size)
    return path


def save_dataset(path: Path, recs: list[dict]) -> Path:
    from datasets import Dataset

    Dataset.from_list(recs).save_to_disk(str(path))
    return path


def seen(docs) -> list[tuple[str, str | None, int | None]]:
    return [(d.text, d.group, d.line) for d in docs]


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    """The same records in every supported record format, one folder each."""
    root = tmp_path_factory.mktemp("formats")
    recs, data = records(), jsonl_bytes(records())
    paths = {name: root / name / f"docs{suffix}" for name, suffix in
             [("jsonl", ".jsonl"), ("jsonl.gz", ".jsonl.gz"), ("json.gz", ".json.gz"), ("jsonl.zst", ".jsonl.zst"),
              ("parquet", ".parquet")]}
    for p in paths.values():
        p.parent.mkdir()
    paths["jsonl"].write_bytes(data)
    half = len(data) // 2
    paths["jsonl.gz"].write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))  # two gzip members
    paths["json.gz"].write_bytes(gzip.compress(data))
    paths["jsonl.zst"].write_bytes(zstandard.ZstdCompressor().compress(data))
    write_parquet(paths["parquet"], recs)
    paths["saved"] = save_dataset(root / "saved" / "ds", recs)
    return paths


# ---------------------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "json.gz", "jsonl.zst", "parquet", "saved"])
def test_every_format_gives_the_same_documents(formats, fmt):
    want = expected(records())
    assert seen(iter_documents([formats[fmt]], group_key=GROUP)) == want
    assert [(d.text, d.line) for d in iter_documents([formats[fmt]])] == [(t, n) for t, _, n in want]
    assert all(d.group is None and d.path == formats[fmt] for d in iter_documents([formats[fmt]]))


def test_saved_dataset_folder_is_one_input(formats, tmp_path):
    saved = formats["saved"]
    assert list(saved.glob("*.arrow"))  # what a walk must not descend into
    assert expand_inputs([str(saved)]) == [saved]
    assert expand_inputs([str(saved.parent)]) == [saved]
    assert expand_inputs([str(saved.parent.parent / "*")]) == sorted(formats.values(), key=str)
    with pytest.raises(InputError, match="no supported input files"):
        expand_inputs([str(tmp_path)])


def test_dataset_dict_folder_reads_train_or_names_its_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    recs = records()[:40]
    DatasetDict({"train": Dataset.from_list(recs[:30]), "test": Dataset.from_list(recs[30:])}).save_to_disk(
        str(tmp_path / "dd"))
    train = tmp_path / "dd" / "train"
    assert expand_inputs([str(tmp_path)]) == [train]
    assert expand_inputs([str(tmp_path / "dd"), str(train), str(tmp_path / "**")]) == [train]  # read once
    assert expand_inputs([str(tmp_path / "dd" / "*")]) == [tmp_path / "dd" / "test", train]  # asked for both
    for path in (tmp_path / "dd", train):
        assert seen(iter_documents([path], group_key=GROUP)) == expected(recs[:30])
    no_train = tmp_path / "no_train"
    DatasetDict({"validation": Dataset.from_list(recs), "test": Dataset.from_list(recs)}).save_to_disk(str(no_train))
    for call in (lambda: expand_inputs([str(no_train)]), lambda: list(iter_documents([no_train]))):
        with pytest.raises(InputError, match=r"without a 'train' split \(its splits: validation, test\)") as e:
            call()
        assert f"{no_train}/validation" in str(e.value)


def test_group_of_a_txt_input_is_refused_before_reading(tmp_path, formats):
    (tmp_path / "a.txt").write_text("hello")
    docs = iter_documents([formats["jsonl"], tmp_path / "a.txt"], group_key=GROUP)
    with pytest.raises(InputError, match=r"a\.txt: grouping by 'meta.pile_set_name' needs JSON lines, parquet"):
        next(docs)
    with pytest.raises(OptionError, match="dotted path"):
        next(iter_documents([formats["jsonl"]], group_key="meta..x"))
    assert Document("t", Path("p"), 3, "g") == Document(text="t", path=Path("p"), line=3, group="g")


# ------------------------------------------------------------------------------------------------------ bad records

BAD_LINES = [  # (line bytes, reason counted); good records in between
    (b'{"text": "a", "meta": {"pile_set_name": "A"}}', None),
    (b'{"text": oops}', "not valid JSON"),
    (b'["text"]', "not a JSON object"),
    (b'{"body": "b", "meta": {"pile_set_name": "A"}}', "no 'text' key"),
    (b'{"text": 42, "meta": {"pile_set_name": "A"}}', "text not a string"),
    (b'{"text": "caf\xe9", "meta": {"pile_set_name": "A"}}', "not UTF-8"),
    (b'{"text": "ok \\ud83d\\ude42 pair", "meta": {"pile_set_name": "B"}}', None),
    (b'{"text": "lone \\ud800 x", "meta": {"pile_set_name": "A"}}', "unpaired surrogate"),
    (b'{"text": "c", "meta": {}}', "no group value"),
    (b'{"text": "d", "meta": "Github"}', "no group value"),
    (b'{"text": "e", "meta": {"pile_set_name": 7}}', "group not a string"),
    (b'{"text": "f", "meta": {"pile_set_name": "C"}}', None),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_bad_records_are_skipped_and_counted(tmp_path, suffix):
    data = b"".join(line + b"\n" for line, _ in BAD_LINES)
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    bad = BadRecords()
    docs = seen(iter_documents([path], bad=bad, group_key=GROUP))
    assert docs == [("a", "A", 1), ("ok \U0001F642 pair", "B", 7), ("f", "C", 12)]
    reasons = [r for _, r in BAD_LINES if r]
    assert bad.total == len(reasons) == 9 and bad.counts == {r: reasons.count(r) for r in reasons}
    assert bad.examples == [f"{path}:2: not valid JSON (Expecting value at column 10)",
                            f"{path}:3: expected a JSON object, got a JSON array",
                            f"{path}:4: the record has no 'text' key (its keys: 'body', 'meta')",
                            f"{path}:5: 'text' holds a JSON number, not a string",
                            f"{path}:6: not valid UTF-8 (byte 0xe9 at column 14)"]
    summary = bad.summary()
    assert "\n" not in summary and summary.startswith("skipped 9 bad records (2 no group value, ")
    assert "1 unpaired surrogate" in summary and f"{path}:2: not valid JSON" in summary
    with pytest.raises(BadRecordError, match=rf"bad{suffix}:2: not valid JSON.*--skip-bad") as e:
        list(iter_documents([path], group_key=GROUP))
    assert isinstance(e.value, InputError)


def test_without_group_key_only_text_problems_count(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line, _ in BAD_LINES))
    bad = BadRecords()
    assert [d.line for d in iter_documents([path], bad=bad)] == [1, 7, 9, 10, 11, 12]
    assert bad.total == 6 and "no group value" not in bad.counts
    assert BadRecords().summary() == "no bad records"


def test_null_text_or_group_in_parquet_is_a_bad_record(tmp_path):
    recs = records()[:10]
    recs[2] = {**recs[2], "text": None}
    recs[4] = {**recs[4], "meta": None}
    path = write_parquet(tmp_path / "n.parquet", recs)
    bad = BadRecords()
    got = seen(iter_documents([path], bad=bad, group_key=GROUP))
    assert got == [t for t in expected(records()[:10]) if t[2] not in (3, 5)]
    assert bad.counts == {"text not a string": 1, "no group value": 1}
    assert bad.examples[0] == f"{path}:3: 'text' holds a JSON null, not a string"
    with pytest.raises(BadRecordError, match=r"n\.parquet:3: "):
        list(iter_documents([path]))


# ---------------------------------------------------------------------------------------------- whole-file problems


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _plain(recs: list[dict]) -> bytes:
    return jsonl_bytes(recs)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


WHOLE_FILE = {  # name: (file name, bytes, extra kwargs, expected message parts)
    "gz_truncated": ("t.jsonl.gz", lambda r: _truncated(gzip.compress(_plain(r))), {}, ["truncated", "gzip"]),
    "zst_truncated": ("t.jsonl.zst", lambda r: _truncated(zstandard.ZstdCompressor().compress(_plain(r))), {},
                      ["truncated", "zstd"]),
    "gz_mislabelled": ("m.jsonl.gz", _plain, {}, ["not a valid gzip file", "rename"]),
    "zst_mislabelled": ("m.jsonl.zst", _plain, {}, ["not a valid zstd file"]),
    "parquet_mislabelled": ("m.parquet", _plain, {}, ["not a valid parquet file", "rename"]),
    "parquet_truncated": ("t.parquet", lambda r: _truncated(_parquet_bytes(pa.Table.from_pylist(r))), {},
                          ["not a valid parquet file"]),
    "parquet_no_text_column": ("c.parquet", lambda r: _parquet_bytes(pa.table({"content": ["a"], "id": [1]})), {},
                               ["no 'text' column", "'content', 'id'", "--text-key"]),
    "parquet_int_text": ("i.parquet", lambda r: _parquet_bytes(pa.table({"text": [1, 2]})), {},
                         ["column 'text' holds int64, not strings"]),
    "parquet_no_group_column": ("g.parquet", lambda r: _parquet_bytes(pa.table({"text": ["a"]})),
                                {"group_key": GROUP}, ["no 'meta' column to group by"]),
    "parquet_group_not_string": ("g.parquet", lambda r: _parquet_bytes(pa.table({"text": ["a"], "meta": [
        {"pile_set_name": 3}]})), {"group_key": GROUP}, ["'meta.pile_set_name' holds int64, not strings"]),
}


@pytest.mark.parametrize("case", sorted(WHOLE_FILE))
def test_whole_file_problems_are_one_error_even_when_skipping(case, tmp_path):
    name, make, kwargs, parts = WHOLE_FILE[case]
    path = tmp_path / name
    path.write_bytes(make(records()[:300]))
    for bad in (None, BadRecords()):
        with pytest.raises(InputError, match=re.escape(str(path))) as e:
            list(iter_documents([path], bad=bad, **kwargs))
        message = str(e.value)
        assert not isinstance(e.value, BadRecordError) and str(path) in message and "\n" not in message
        for part in parts:
            assert part in message, message
        assert bad is None or bad.total == 0


def test_empty_inputs_give_no_documents(tmp_path):
    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "blank.json.gz").write_bytes(gzip.compress(b"\n \n"))
    write_parquet(tmp_path / "e.parquet", [])  # schema-less: no columns at all
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "rows0.parquet")
    with pytest.raises(InputError, match="no 'text' column"):
        list(iter_documents([tmp_path / "e.parquet"]))
    inputs = expand_inputs([str(tmp_path / "*.gz"), str(tmp_path / "rows0.parquet")])
    assert len(inputs) == 3 and list(iter_documents(inputs)) == []


# ------------------------------------------------------------------------------------------------------ the HF Hub


@pytest.mark.timeout(60)
def test_hub_offline_is_one_error_at_once(hf_offline):
    with pytest.raises(InputError, match=r"'no-such-user/no-such-dataset'.*with offline mode on") as e:
        hf_hub_documents("no-such-user/no-such-dataset", None, "train", "text")
    message = str(e.value)
    for part in ["'no-such-user/no-such-dataset'", "with offline mode on", "HF_HUB_OFFLINE", "save_to_disk"]:
        assert part in message, message
    assert "\n" not in message


def test_hub_streaming_rows_in_order(formats):
    """A local folder is a valid `load_dataset` name: the same streaming path as the hub, without network."""
    folder = str(formats["jsonl"].parent)
    docs = hf_hub_documents(folder, None, "train", "text", group_key=GROUP)
    want = expected(records())
    assert seen(docs) == want
    bad = BadRecords()
    assert len(list(hf_hub_documents(folder, None, "train", "id", bad=bad, group_key="meta.n"))) == 0
    assert bad.counts == {"group not a string": 1500}
    with pytest.raises(InputError, match=r"split nope.*Bad split: nope.*\['train'\]"):
        hf_hub_documents(folder, None, "nope", "text")


# ---------------------------------------------------------------------------------------------------- end to end


def test_new_formats_convert_to_the_same_tokens_as_jsonl(formats, tmp_path, read_split):
    streams = {}
    for fmt in ["jsonl", "jsonl.gz", "parquet", "saved"]:
        out = tmp_path / fmt
        meta = convert([str(formats[fmt])], str(out), "bytes", 64, val_fraction=0, progress=False)
        assert meta.splits["train"].documents == len(expected(records()))
        streams[fmt] = read_split(out / "train")
    assert streams["jsonl"].shape[0] > 100
    for fmt, samples in streams.items():
        assert np.array_equal(samples, streams["jsonl"]), fmt
