"""Clean Streaming's stale shared memory without touching a live run's.

Streaming names its segments ``/dev/shm/NNNNNN_<name>`` (names from ``streaming.base.constant.SHM_TO_CLEAN``) and
its file locks ``$TMPDIR/NNNNNN_*_filelock``. A SIGKILL'd run leaves them behind. Streaming's own
``clean_stale_shared_memory`` unlinks every such segment, including those a live run on the same machine still
uses (whose workers then fail to attach). Here a prefix is stale only when no live process maps any of its
segments (read from ``/proc/*/maps``) and the job that registered it provably ended: its owner record
(``upstream.streaming.record_owner``) names a dead process of our PID namespace. Segments of a job we cannot see
(another container sharing /dev/shm) or without a record are left alone. Where ``/proc`` is missing we fall back
to Streaming's function.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from streaming.base.constant import BARRIER_FILELOCK, CACHE_FILELOCK, SHM_TO_CLEAN

from upstream.streaming import OWNER, SHM_DIR, pid_namespace, registry_lock

_SEGMENT = re.compile(r"^(\d{6})_(%s)$" % "|".join(map(re.escape, SHM_TO_CLEAN)))
_OWNER = re.compile("^" + re.escape(OWNER).replace(r"\{prefix:06\}", r"(\d{6})") + "$")
_FILELOCK = re.compile(r"^(\d{6})_(%s|%s)$" % (BARRIER_FILELOCK, CACHE_FILELOCK))


def mapped_shm_names() -> set[str]:
    """Names of /dev/shm segments some live process has mapped."""
    names: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except (OSError, PermissionError):
            continue  # the process exited, or is not ours to read
        for line in text.splitlines():
            idx = line.find("/dev/shm/")
            if idx >= 0:
                names.add(line[idx + len("/dev/shm/"):].split(" ")[0])
    return names


def stale_prefixes() -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(stale segments and owner records, stale file locks) by prefix: prefixes none of whose segments a live
    process maps and whose registering job provably ended (:func:`owner_is_gone`)."""
    segments: dict[str, list[Path]] = {}
    for path in SHM_DIR.glob("*") if SHM_DIR.is_dir() else []:
        if m := _SEGMENT.match(path.name) or _OWNER.match(path.name):
            segments.setdefault(m.group(1), []).append(path)
    locks: dict[str, list[Path]] = {}
    for path in Path(tempfile.gettempdir()).glob("*_filelock"):
        if m := _FILELOCK.match(path.name):
            locks.setdefault(m.group(1), []).append(path)
    live = {m.group(1) for name in mapped_shm_names() if (m := _SEGMENT.match(name))}
    gone = {p for p in set(segments) | set(locks) if p not in live and owner_is_gone(p)}
    return ({p: v for p, v in segments.items() if p in gone}, {p: v for p, v in locks.items() if p in gone})


def _owner_file(prefix: str) -> Path:
    return SHM_DIR / OWNER.format(prefix=int(prefix))


def owner_is_gone(prefix: str) -> bool:
    """Whether the job that registered ``prefix`` provably ended: its record (upstream.streaming.record_owner) is
    from this PID namespace and its process is not alive. Without a record, or from another namespace (a container
    sharing /dev/shm, whose processes we cannot see), we cannot tell: the prefix is left alone."""
    import json

    import psutil

    try:
        owner = json.loads(_owner_file(prefix).read_text())
    except (OSError, ValueError):
        return False
    if owner.get("pid_namespace") != pid_namespace() or not pid_namespace():
        return False
    try:
        return abs(psutil.Process(owner["pid"]).create_time() - owner["start_time"]) > 1e-3  # PID reused
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError):
        return False


def clean_stale_shared_memory(verbose: bool = False) -> list[str]:
    """Remove stale Streaming segments and locks; return what was removed. Safe beside a live run."""
    if not Path("/proc/self/maps").exists():  # not Linux: no way to tell live from stale
        from streaming.base.util import clean_stale_shared_memory as clean_all

        clean_all()
        return ["(all, via streaming.base.util.clean_stale_shared_memory)"]
    with registry_lock():
        segments, locks = stale_prefixes()
        removed = _unlink_all([*segments.values(), *locks.values()])
    if verbose:
        for r in removed:
            print(f"removed {r}")
    return removed


def _unlink_all(groups: list[list[Path]]) -> list[str]:
    """Unlink every path; return those this call removed (another cleaner may have been first)."""
    removed = []
    for paths in groups:
        for path in paths:
            try:
                os.unlink(path)
                removed.append(str(path))
            except FileNotFoundError:
                pass
    return removed


