"""Giving freed memory back to the OS, so that peak RSS tracks what a process holds, not what it once held."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere (musl, macOS): freed heap memory then simply stays with the process."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS. Thousands of small freed buffers (samples, token lists) otherwise stay
    in the process's RSS, while the next large buffer (a 64 MiB shard) is mapped afresh on top of them."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
