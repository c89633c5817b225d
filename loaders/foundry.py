"""Reading datasets made by llm-foundry's converters, as they are (no re-conversion).

``convert_dataset_hf.py`` / ``convert_dataset_json.py --concat_tokens N`` write one ``tokens`` column of N ids per
sample, in one MDS folder per split and with no record of the tokenizer. Its current form stores the ids as
``ndarray:int32``; its older form as ``bytes`` that llm-foundry reads back with ``np.frombuffer(b, np.int64)``.
llm-foundry trains on all N tokens with the labels shifted inside the sample, which is what our collate does with our
``seq_len + 1`` samples: such a sample is read exactly like ours, with ``seq_len = N - 1``.

What a sample is (its length) is learnt from the first sample of each split; the tokenizer comes from
``data.tokenizer`` (core/metadata.py ``foundry_metadata`` builds the record).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import MetadataError
from core.metadata import FoundrySplit
from core.tokenizer import Tokenizer


def decode_tokens(value: Any) -> np.ndarray:
    """A sample's ``tokens`` as an array of ids: ndarray columns (ours, llm-foundry's current form) come back as
    arrays already; llm-foundry's older ``bytes`` column holds raw int64 ids."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, dtype=np.int64)
    return value


def first_shard_file(shard: dict) -> dict:
    """The file of a shard that is stored (and downloaded): the compressed one when there is one."""
    return shard.get("zip_data") or shard.get("raw_data") or {}


def shard_bytes(split_dir: Path, shard: dict) -> bytes:
    """The decompressed bytes of one shard, read from ``split_dir`` (the dataset, or a remote one's cache);
    decompressed in memory, so that nothing is written into a dataset folder we only read."""
    raw, zipped = shard.get("raw_data") or {}, shard.get("zip_data") or {}
    if raw and (split_dir / raw["basename"]).is_file():
        return (split_dir / raw["basename"]).read_bytes()
    if zipped and (split_dir / zipped["basename"]).is_file():
        from streaming.base.compression import decompress

        return decompress(shard["compression"], (split_dir / zipped["basename"]).read_bytes())
    missing = split_dir / str(first_shard_file(shard).get("basename"))
    raise MetadataError(f"{missing}: missing (listed in {split_dir / 'index.json'}); copy the dataset again")


def first_sample(split_dir: Path, split: FoundrySplit) -> np.ndarray:
    """The first sample's token ids of a split, decoded by Streaming's own MDS reader."""
    from streaming.base.format import reader_from_json

    shard = split.index["shards"][0]
    data = shard_bytes(split_dir, shard)
    begin, end = (int(x) for x in np.frombuffer(data[4:12], np.uint32))  # MDS: count, then sample offsets
    reader = reader_from_json(str(split_dir.parent), split_dir.name, shard)
    return decode_tokens(reader.decode_sample(data[begin:end])["tokens"])


def sample_length(root: str, local: str, splits: dict[str, FoundrySplit], tokenizer: Tokenizer) -> int:
    """The one sample length of every split (each split's first sample), checked against the tokenizer: ids out of
    its vocabulary mean ``data.tokenizer`` names another tokenizer than the one the dataset was made with."""
    lengths = {}
    for name, split in splits.items():
        if not split.samples:
            continue
        tokens = first_sample(Path(local) / name, split)
        if tokens.size and int(tokens.max()) >= tokenizer.vocab_size:
            raise MetadataError(f"{root}/{name} holds token id {int(tokens.max())}, beyond the vocabulary of "
                                f"tokenizer {tokenizer.name!r} ({tokenizer.vocab_size}): name the tokenizer the "
                                "dataset was made with")
        lengths[name] = int(tokens.size)
    if len(set(lengths.values())) > 1:
        raise MetadataError(f"{root}: the splits' samples differ in length ({lengths}); llm-foundry writes every "
                            "split with one --concat_tokens: convert them with the same one")
    length = next(iter(lengths.values()), 0)
    if length < 2:
        raise MetadataError(f"{root}: samples of {length} token(s); training needs at least 2 (an input and its "
                            "next token): convert with --concat_tokens 2 or more")
    return length
