"""Writing outputs so that a killed process never leaves one that looks complete.

A folder is built beside its destination in ``DEST.partial`` and swapped into place only when finished
(:func:`built_then_swapped`); a file is written to a unique temporary file beside it and renamed over the old one
(:func:`write_atomic`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"


@contextlib.contextmanager
def built_then_swapped(dest: Path) -> Iterator[Path]:
    """Yield a fresh, empty ``DEST.partial`` to build in; when the block ends normally, move it to ``dest``.

    A stale ``.partial`` of a killed run is removed first. An old ``dest`` is renamed aside (O(1), so ``dest`` is
    absent only for an instant and never half-deleted), then removed. On any exception, KeyboardInterrupt
    included, the partial folder is removed and ``dest`` is left as it was.
    """
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    remove(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
        _swap_in(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _swap_in(partial: Path, dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        aside = dest.with_name(dest.name + REPLACED_SUFFIX)
        remove(aside)
        os.rename(dest, aside)
        os.rename(partial, dest)
        remove(aside)
    else:
        os.rename(partial, dest)


def remove(path: Path) -> None:
    """Remove a file, a symlink or a folder tree; nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path``'s content with ``text`` in one rename: readers see the old file or the new one. The file keeps
    its mode (a new one gets 0o644, as ``open`` would: mkstemp's 0o600 would hide a run's files from a group)."""
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # unique: two writers never share it
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
