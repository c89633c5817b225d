"""One weighted dataset root of a mixture: the ``data.streams.<name>`` config entry and what the loaders build a
Streaming ``Stream`` from (one type for both, so a knob added here reaches the loader)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(unsafe_hash=True)  # hashable (a key of the per-stream metadata), still editable by OmegaConf merges
class StreamSource:
    """A dataset root (local folder or ``s3://``) with Streaming's weighting knobs (set at most one)."""

    path: str = "???"  # OmegaConf's "missing": a stream must name its path
    proportion: Optional[float] = None
    repeat: Optional[float] = None
    choose: Optional[int] = None
