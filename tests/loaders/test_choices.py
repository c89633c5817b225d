"""Multiple-choice files (loaders/choices.py): read from a folder or a bucket (moto's server), and split over ranks
with every rank scoring as many items, the padding never counted."""
from __future__ import annotations

import json

import pytest

ITEMS = [{"ctx": f"line {i}", "endings": [" a", " b", " c"], "label": i % 3} for i in range(5)]


@pytest.fixture
def items_file(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    return path


def test_items_read_from_a_bucket_are_the_files(items_file, s3_process_env):
    from core.errors import RemoteError
    from core.remote import upload_dir
    from loaders.choices import read_items

    bucket = s3_process_env.new_bucket()
    upload_dir(items_file.parent, f"s3://{bucket}/tasks")
    assert read_items(f"s3://{bucket}/tasks/mc.jsonl") == read_items(str(items_file))
    with pytest.raises(RemoteError, match=f"s3://{bucket}/tasks/nope.jsonl"):
        read_items(f"s3://{bucket}/tasks/nope.jsonl")


def test_a_missing_or_empty_file_is_one_error(tmp_path):
    from core.errors import HellaSwagError
    from loaders.choices import read_items

    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(HellaSwagError, match="empty.jsonl holds no items"):
        read_items(str(tmp_path / "empty.jsonl"))
    with pytest.raises(HellaSwagError, match="cannot read .*nope.jsonl"):
        read_items(str(tmp_path / "nope.jsonl"))


def test_ranks_get_every_item_once_and_as_many_each(items_file):
    from core.tokenizer import load_tokenizer
    from loaders.choices import ChoiceItems, collate_items, read_items

    items, tok = read_items(str(items_file)), load_tokenizer("bytes")
    ranks = [list(ChoiceItems(items, tok, 32, rank, 2)) for rank in range(2)]
    assert [len(r) for r in ranks] == [3, 3]
    valid = [(rank, i.label, i.tokens.tolist()) for rank, r in enumerate(ranks) for i in r if i.valid]
    assert len(valid) == 5 and [v for v in (i.valid for r in ranks for i in r)].count(False) == 1
    batch = collate_items(ranks[1])
    assert batch["valid"].tolist() == [True, True, False] and batch["labels"].tolist() == [1, 0, 0]
    alone = list(ChoiceItems(items, tok, 32))
    assert [i.label for i in alone] == [i["label"] for i in ITEMS] and all(i.valid for i in alone)
