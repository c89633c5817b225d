"""Concat packing: documents (each followed by EOS) become one token stream cut into fixed-length samples.

Sample ``k`` is ``stream[k*seq_len : k*seq_len + seq_len + 1]``: ``seq_len + 1`` tokens, and consecutive samples
share one token (the last of one is the first of the next). The model reads a sample's first ``seq_len`` tokens
and predicts its last ``seq_len``, so every token but the very first is a prediction target exactly once and no
token is wasted at sample borders. Documents cross sample borders freely; the incomplete tail at the end is
dropped and counted.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Emit = Callable[[np.ndarray], None]


def flatten_documents(docs: Sequence[Sequence[int] | np.ndarray], eos_id: int, dtype: str | np.dtype) -> np.ndarray:
    """One array of every document's ids, each followed by EOS: the packer's input. Filled slice by slice (numpy
    converts lists in C), so no per-token Python work; worker processes call it to hand back compact arrays."""
    total = sum(len(d) for d in docs) + len(docs)
    flat = np.empty(total, dtype=dtype)
    pos = 0
    for d in docs:
        end = pos + len(d)
        flat[pos:end] = d
        flat[end] = eos_id
        pos = end + 1
    return flat


class Packer:
    """Packs token ids into samples and hands each to ``emit`` (a view: valid only during the call).

    Memory is bounded by a fixed buffer of ``capacity`` tokens, whatever the document sizes.
    """

    def __init__(self, seq_len: int, eos_id: int, dtype: str, emit: Emit, capacity: int = 1 << 20):
        if seq_len <= 0:
            raise ValueError(f"seq_len must be > 0, got {seq_len}")
        self.seq_len = seq_len
        self.sample_len = seq_len + 1
        self.eos_id = eos_id
        self.dtype = np.dtype(dtype)
        self._emit = emit
        self._buf = np.empty(max(capacity, 2 * self.sample_len), dtype=self.dtype)
        self._fill = 0
        self.total_tokens = 0  # every token added, EOS included
        self.samples = 0
        self.dropped_tokens = 0
        self._finished = False

    @property
    def tokens(self) -> int:
        """Distinct tokens inside the emitted samples (the overlap counted once); final after :meth:`finish`."""
        return self.samples * self.seq_len + 1 if self.samples else 0

    def add_tokens(self, ids: np.ndarray) -> None:
        """Append raw ids (no EOS added), emitting every sample that becomes complete."""
        if self._finished:
            raise RuntimeError("Packer.add_tokens after finish()")
        ids = np.asarray(ids, dtype=self.dtype)
        self.total_tokens += len(ids)
        pos = 0
        while pos < len(ids):
            take = min(len(ids) - pos, len(self._buf) - self._fill)
            self._buf[self._fill:self._fill + take] = ids[pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == len(self._buf):
                self._emit_complete()

    def finish(self) -> int:
        """Emit what is complete, drop the incomplete tail; returns the number of dropped tokens."""
        if not self._finished:
            self._emit_complete()
            # After a sample the buffer starts with that sample's last token (already counted): not dropped.
            self.dropped_tokens = self._fill - 1 if self.samples else self._fill
            self._fill = 0
            self._finished = True
        return self.dropped_tokens

    def _emit_complete(self) -> None:
        """Emit every full sample in the buffer, then move the rest (>= the 1 shared token) to its front."""
        s = self.seq_len
        n = (self._fill - 1) // s if self._fill else 0
        for k in range(n):
            self._emit(self._buf[k * s:k * s + s + 1])
        if n:
            rest = self._fill - n * s
            self._buf[:rest] = self._buf[n * s:self._fill]  # numpy copes with the overlapping ranges
            self._fill = rest
            self.samples += n
