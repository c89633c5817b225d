"""Datasets made by llm-foundry's converters train as they are: one ``tokens`` column, ``ndarray:int32`` (its current
form) or ``bytes`` of raw int64 ids (its older form), no metadata.json, the tokenizer named by ``data.tokenizer``.

The folders are written here with Streaming's real MDSWriter and llm-foundry's columns, read back by the real
StreamingDataset (locally and from a moto S3 bucket), trained on by the real script, verified and evaluated.
"""
from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import MetadataError
from tests.helpers import (
    convert_main,
    make_dataset,
    metrics_rows,
    one_error,
    run_script,
    run_train,
    tiny_args,
)

CONCAT_TOKENS = 17  # llm-foundry's --concat_tokens: every sample holds exactly this many ids -> seq_len 16
SPLITS = {"train": 48, "val": 16}  # samples per split
GPT2_VOCAB, GPT2_EOS = 50257, 50256
FORMS = {"ndarray": "ndarray:int32", "bytes": "bytes"}  # llm-foundry's current and older tokens column


def foundry_tokens(split: str) -> np.ndarray:
    """(samples, CONCAT_TOKENS) GPT-2 ids, an EOS between 'documents' as ConcatTokensDataset leaves them."""
    rng = np.random.default_rng(len(split))
    tokens = rng.integers(0, GPT2_VOCAB - 1, size=(SPLITS[split], CONCAT_TOKENS), dtype=np.int64)
    tokens[:, 5] = GPT2_EOS
    return tokens


def write_foundry(root: Path, form: str, hashes: tuple[str, ...] = (), compression: str | None = None) -> Path:
    """A dataset as llm-foundry's converters write it: ``root/<split>/`` MDS folders, nothing else."""
    from streaming import MDSWriter

    for split in SPLITS:
        with MDSWriter(out=str(root / split), columns={"tokens": FORMS[form]}, compression=compression,
                       hashes=list(hashes), size_limit=1 << 10) as out:
            for sample in foundry_tokens(split):
                value = sample.astype(np.int32) if form == "ndarray" else sample.astype(np.int64).tobytes()
                out.write({"tokens": value})
    return root


@pytest.fixture(scope="module")
def foundry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both forms: the current one zstd-compressed with sha256 recorded, the older one raw with no hashes (as
    llm-foundry's converters write by default)."""
    base = tmp_path_factory.mktemp("foundry")
    return {"ndarray": write_foundry(base / "ndarray", "ndarray", ("sha256",), "zstd"),
            "bytes": write_foundry(base / "bytes", "bytes")}


@pytest.fixture
def bucket_copy(s3_process_env, foundry):
    """Each form uploaded to a fresh bucket (no metadata.json anywhere), by form."""
    from core.remote import upload_dir

    bucket = s3_process_env.new_bucket()
    urls = {form: f"s3://{bucket}/{form}" for form in foundry}
    for form, url in urls.items():
        upload_dir(foundry[form], url)
    return urls


def read_all(path: str, cache: str | None, split: str) -> dict[str, np.ndarray]:
    """Every batch of a split through the project's loader, in order, concatenated."""
    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec

    spec = build_dataspec([StreamSource(path)], split, 4, LoaderSettings(shuffle=False), cache, drop_last=False)
    batches = list(spec.dataloader)
    out = {key: np.concatenate([b[key].numpy() for b in batches]) for key in ("input_ids", "labels", "sample_ids")}
    del spec, batches
    gc.collect()
    return out


# ------------------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("where", ["local", "bucket"])
@pytest.mark.parametrize("form", list(FORMS))
def test_loader_yields_the_ids_written(form, where, request, tmp_path):
    from core.metadata import FOUNDRY_FORMAT
    from loaders.dataset import fetch_metadata

    path, cache = str(request.getfixturevalue("foundry")[form]), None
    if where == "bucket":
        path, cache = request.getfixturevalue("bucket_copy")[form], str(tmp_path / "cache")
    meta = fetch_metadata(path, cache, "gpt2")
    assert (meta.format, meta.seq_len, meta.vocab_size, meta.eos_id) == (FOUNDRY_FORMAT, CONCAT_TOKENS - 1,
                                                                         GPT2_VOCAB, GPT2_EOS)
    assert {name: s.samples for name, s in meta.splits.items()} == SPLITS
    for split in SPLITS:
        got, want = read_all(path, cache, split), foundry_tokens(split)
        np.testing.assert_array_equal(got["sample_ids"], np.arange(SPLITS[split]))
        np.testing.assert_array_equal(got["input_ids"], want[:, :-1])  # L tokens -> L - 1 inputs and targets
        np.testing.assert_array_equal(got["labels"], want[:, 1:])


def test_digest_is_the_datasets_own_and_survives_a_move(foundry, bucket_copy, tmp_path):
    """The resume guard compares content digests: the same dataset in a bucket matches; another one does not."""
    from loaders.dataset import fetch_metadata

    local = fetch_metadata(str(foundry["bytes"]), None, "gpt2")
    assert fetch_metadata(bucket_copy["bytes"], str(tmp_path / "c"), "gpt2").content_digest() == \
        local.content_digest()
    assert fetch_metadata(str(foundry["ndarray"]), None, "gpt2").content_digest() != local.content_digest()


def test_missing_tokenizer_is_one_error_naming_the_key(foundry, tmp_path):
    proc = run_script("gpt_pile_composer.py", *tiny_args(foundry["ndarray"], tmp_path))
    line = one_error(proc, "data.tokenizer", str(foundry["ndarray"]), "llm-foundry")
    assert "metadata.json" in line


def test_missing_tokenizer_from_a_bucket_is_the_same_error(bucket_copy, tmp_path):
    from loaders.dataset import fetch_metadata

    with pytest.raises(MetadataError, match=r"has no metadata.json: it is an llm-foundry dataset .* data\.tokenizer"):
        fetch_metadata(bucket_copy["bytes"], str(tmp_path / "cache"))


def test_tokenizer_that_contradicts_metadata_json_is_refused(tmp_path, shakespeare_text):
    """One place for each fact: a dataset of ours names its tokenizer; data.tokenizer may repeat it only."""
    from loaders.dataset import fetch_metadata

    ours = make_dataset(tmp_path, shakespeare_text[:20_000], seq_len=16)  # bytes tokenizer
    assert fetch_metadata(str(ours), None, "bytes").vocab_size == 257
    with pytest.raises(MetadataError, match=r"data\.tokenizer=gpt2 .*disagrees with .*metadata\.json"):
        fetch_metadata(str(ours), None, "gpt2")


def test_tokenizer_too_small_for_the_ids_is_refused(foundry):
    from loaders.dataset import fetch_metadata

    with pytest.raises(MetadataError, match="beyond the vocabulary of tokenizer 'bytes'"):
        fetch_metadata(str(foundry["ndarray"]), None, "bytes")


# --------------------------------------------------------------------------------------------------------- verify


def test_verify_says_ok_and_names_the_format(foundry, capsys):
    for form in FORMS:
        code, out, err = convert_main(capsys, "--verify", foundry[form])
        assert code == 0, err
        assert out.startswith("ok: ") and "llm-foundry dataset" in out and "data.tokenizer" in out
    assert "by size only" in convert_main(capsys, "--verify", foundry["bytes"])[1]


def test_verify_reports_a_corrupted_shard(foundry, tmp_path, capsys):
    import shutil

    copy = Path(shutil.copytree(foundry["ndarray"], tmp_path / "copy"))
    shard = sorted((copy / "train").glob("shard.*.mds.zstd"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the recorded sha256 can tell
    shard.write_bytes(bytes(data))
    code, out, err = convert_main(capsys, "--verify", copy)
    assert code == 2
    assert f"{shard}: sha256 differs" in out, out
    assert err.startswith("error: ") and "copy it again" in err


# ---------------------------------------------------------------------------------------------- training and eval


@pytest.mark.slow
def test_train_from_a_bucket_then_eval_the_local_copy(foundry, bucket_copy, moto_s3, tmp_path):
    """One short run on the older (bytes) form in a bucket; eval.py then reads the current form from a local
    folder, its tokenizer taken from the run."""
    run = tmp_path / "f"
    run_train(tiny_args(bucket_copy["bytes"], tmp_path, "run_name=f", "data.tokenizer=gpt2",
                        f"data.cache={tmp_path / 'cache'}", "max_duration=4ba", "eval_interval=4ba",
                        "save_interval=4ba"), env=moto_s3.env())
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "metrics/val/LanguageCrossEntropy" in rows[-1]
    model = json.loads((run / "model.json").read_text())
    assert (model["vocab_size"], model["block_size"]) == (GPT2_VOCAB, CONCAT_TOKENS - 1)
    record = json.loads((run / "data" / "dataset" / "metadata.json").read_text())
    assert record["format"] == "llm-foundry-mds" and record["tokenizer"]["name"] == "gpt2"

    proc = run_script("eval.py", run, "--data", foundry["ndarray"], "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["tokens"] == SPLITS["val"] * (CONCAT_TOKENS - 1) and result["LanguageCrossEntropy"] > 0
