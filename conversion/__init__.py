"""The writing side: raw text -> token MDS shards (what ``convert_to_mds.py`` runs).

sources (read documents) -> batches + parallel (encode in ordered worker processes) -> packing (seq_len + 1
samples) -> convert (shard writers, groups, atomic output, upload) ; verify checks a finished dataset.
"""
