"""The unit of tokenizing work: a batch of document texts in, per-(group, split) token arrays out.

The same :class:`BatchEncoder` runs in the main process (``--workers 1``) and in each worker process, so the
output cannot depend on the number of workers. A worker rebuilds the tokenizer from a small picklable
:class:`EncoderSpec` (the Rust tokenizer's JSON, not the transformers object: workers need not import transformers)
and hands back one flat array per (group, split), each document's ids followed by EOS, so the main process only
copies arrays into the packers and never touches a token in Python.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from conversion.packing import flatten_documents
from conversion.parallel import OrderedPool
from conversion.sources import Document
from core.memory import release_free_memory
from core.tokenizer import CHUNK_CHARS, Tokenizer, gpt2_slices, is_gpt2_bpe, tiktoken_gpt2, token_dtype

TRAIN, VAL = "train", "val"
SPLIT_RULE = "blake2b(utf8(text), digest_size=8) / 2**64 < val_fraction -> val"
Key = tuple[str | None, str]  # (group value or None, split name)
Job = tuple[list[str], "list[str | None] | None"]  # what a worker receives: texts and their groups


def assign_split(data: bytes, val_fraction: float) -> str:
    """``val`` or ``train`` from a hash of the document's UTF-8 bytes: stable under reordering and re-runs,
    and identical documents always land in the same split."""
    if val_fraction <= 0:
        return TRAIN
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return VAL if h / 2.0**64 < val_fraction else TRAIN


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a worker needs to encode exactly as the main process would."""

    backend: str  # "bytes", "hf" or "tiktoken" (core.tokenizer.resolve_backend)
    tokenizer_json: str | None  # the fast tokenizer's serialized form (hf and tiktoken)
    eos_id: int
    dtype: str
    val_fraction: float
    gpt2: bool = False  # GPT-2's BPE (either backend): a long document may be encoded in slices (gpt2_slices)

    @classmethod
    def of(cls, tok: Tokenizer, val_fraction: float, backend: str = "hf") -> "EncoderSpec":
        blob = tok.hf.backend_tokenizer.to_str() if tok.kind == "hf" else None
        return cls(backend if tok.kind == "hf" else "bytes", blob, tok.eos_id, token_dtype(tok.vocab_size),
                   val_fraction, is_gpt2_bpe(tok))


@dataclass
class Chunk:
    """One (group, split)'s share of a batch: the documents' ids, each followed by EOS."""

    tokens: np.ndarray
    documents: int
    bytes: int


@dataclass
class BatchResult:
    chunks: dict[Key, Chunk] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (index in the batch, why it was left out)

    @property
    def tokens(self) -> int:
        return sum(len(c.tokens) for c in self.chunks.values())

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.chunks.values())


class BatchEncoder:
    """Tokenizes a batch one document at a time, so one process uses one core (``encode_batch`` of many texts would
    spread over every core, whatever TOKENIZERS_PARALLELISM a parent set), with ``encode_batch_fast``: the same ids
    as ``encode`` without computing character offsets, ~10 % less CPU."""

    def __init__(self, spec: EncoderSpec):
        self.spec = spec
        self._hf = self._tiktoken = None
        if spec.backend == "hf":
            from tokenizers import Tokenizer as RustTokenizer

            self._hf = RustTokenizer.from_str(spec.tokenizer_json)
            self._hf.encode_special_tokens = True  # not serialized: a literal <|endoftext|> must stay text
        elif spec.backend == "tiktoken":
            assert spec.tokenizer_json is not None
            self._tiktoken = tiktoken_gpt2(spec.tokenizer_json, spec.eos_id)

    def encode(self, text: str, raw: bytes) -> np.ndarray | list[int]:
        if self._hf is None and self._tiktoken is None:
            return np.frombuffer(raw, dtype=np.uint8)
        if not self.spec.gpt2 or len(text) <= CHUNK_CHARS:
            return self._encode(text)
        # a long document in slices (where GPT-2's pre-tokenizer cuts anyway: the same ids), kept compact
        return np.concatenate([np.asarray(self._encode(t), dtype=self.spec.dtype) for t in gpt2_slices(text)])

    def _encode(self, text: str) -> list[int]:
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary(text)  # ordinary: a literal <|endoftext|> stays text
        assert self._hf is not None
        return self._hf.encode_batch_fast([text], add_special_tokens=False)[0].ids

    def __call__(self, texts: Sequence[str], groups: Sequence[str | None] | None = None) -> BatchResult:
        routed: dict[Key, list] = {}
        sizes: dict[Key, list[int]] = {}
        result = BatchResult()
        for i, text in enumerate(texts):
            try:
                raw = text.encode("utf-8")
            except UnicodeEncodeError as e:  # JSON can carry lone surrogates ("\ud800"), which are not text
                result.bad.append((i, f"the text holds an unpaired surrogate ({text[e.start]!r}) that is not "
                                      "valid Unicode"))
                continue
            key = (groups[i] if groups is not None else None, assign_split(raw, self.spec.val_fraction))
            routed.setdefault(key, []).append(self.encode(text, raw))
            sizes.setdefault(key, []).append(len(raw))
        for key, docs in routed.items():
            flat = flatten_documents(docs, self.spec.eos_id, self.spec.dtype)
            result.chunks[key] = Chunk(flat, len(docs), sum(sizes[key]))
        return result


# --------------------------------------------------------------------------------------- in a worker process

_WORKER_ENCODER: BatchEncoder | None = None


def init_worker(spec: EncoderSpec) -> None:
    """Build the tokenizer once per worker process."""
    global _WORKER_ENCODER
    _WORKER_ENCODER = BatchEncoder(spec)


def encode_in_worker(job: Job) -> BatchResult:
    assert _WORKER_ENCODER is not None, "init_worker was not run in this process"
    result = _WORKER_ENCODER(*job)
    release_free_memory()  # the documents' token lists and Rust encodings, freed by now
    return result


def job_of(batch: list[Document], grouped: bool = False) -> Job:
    """The picklable part of a batch: texts (and groups), not paths."""
    return [d.text for d in batch], ([d.group for d in batch] if grouped else None)


def encode_batches(batches: Iterable[list[Document]], spec: EncoderSpec, workers: int,
                   grouped: bool = False) -> Iterator[tuple[list[Document], BatchResult]]:
    """``(batch, result)`` in input order: encoded here when ``workers`` is 1 (no start-up, no pickling), else in
    a bounded pool of ``workers`` processes. Close the iterator (``contextlib.closing``) to stop the pool early."""
    if workers <= 1:
        encoder = BatchEncoder(spec)
        for batch in batches:
            yield batch, encoder(*job_of(batch, grouped))
        return
    with OrderedPool(workers, init_worker, (spec,)) as pool:
        yield from pool.map(encode_in_worker, batches, payload=lambda b: job_of(b, grouped))
