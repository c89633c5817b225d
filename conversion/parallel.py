"""An ordered, bounded map over worker processes: the conversion's tokenizing pool.

Why not ``multiprocessing.Pool.imap``: its feeder thread drains the whole input into the task queue, so memory
grows with the input. Here at most ``window`` jobs are in flight, and results come back in submission order, so
what the main process writes does not depend on the number of workers or on which one finishes first.

Workers never outlive the main process: they ignore SIGINT (Ctrl-C reaches the whole process group; the main process
handles it and terminates them), and a thread in each exits the worker when its parent is gone (SIGKILL of the main
process closes nothing a blocked worker would notice). They are started with ``spawn``: a fork of a process that
has imported torch or started Rust threads is neither small nor safe.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, TypeVar

from core.errors import DataError, OptionError

T = TypeVar("T")
R = TypeVar("R")
# One core per worker: the Rust tokenizer and BLAS would otherwise each start a thread per core in every worker.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
PARENT_POLL_S = 0.5
# Jobs in flight: enough queued that no worker waits while the main process stalls for a moment (importing
# streaming + torch at the first sample takes seconds; so does flushing a 64 MiB shard), few enough to bound memory.
WINDOW_PER_WORKER, WINDOW_SLACK = 2, 6


class WorkerDied(DataError):
    """A worker process was killed from outside (out of memory, a signal): not the input's fault, but one line."""


def resolve_workers(workers: int) -> int:
    """``--workers``: N processes; 0 means one per core."""
    if not isinstance(workers, int) or workers < 0:
        raise OptionError(f"--workers must be 0 (one per core) or a positive number of processes, got {workers}")
    return workers or os.cpu_count() or 1


def _worker_setup(parent: int, initializer: Callable[..., None], initargs: tuple) -> None:
    os.environ.update(WORKER_ENV)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    initializer(*initargs)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # reparented: the main process is gone, nobody will read our results


class OrderedPool:
    """``workers`` spawned processes, each set up once with ``initializer(*initargs)``; use as a context manager.

    Leaving the ``with`` block by an exception (Ctrl-C included) terminates the workers at once instead of letting
    them finish their jobs.
    """

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple = (), window: int = 0):
        self.window = window or WINDOW_PER_WORKER * workers + WINDOW_SLACK
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_setup,
                                             initargs=(os.getpid(), initializer, initargs))

    def map(self, fn: Callable[[Any], R], items: Iterable[T],
            payload: Callable[[T], Any] = lambda item: item) -> Iterator[tuple[T, R]]:
        """``(item, fn(payload(item)))`` in the order of ``items``, ``fn`` running in a worker; ``items`` is read
        only as results are consumed. ``payload`` picks what is pickled to the worker (the item stays here)."""
        try:
            yield from self._map(fn, items, payload)
        except BrokenProcessPool:  # from submit() or result(), whichever noticed first
            raise WorkerDied("a tokenizer worker process died (killed by the system, e.g. out of memory?); "
                             "nothing was written: re-run, with fewer --workers if memory is short") from None

    def _map(self, fn: Callable[[Any], R], items: Iterable[T], payload: Callable[[T], Any]) -> Iterator[tuple[T, R]]:
        pending: deque[tuple[T, Future]] = deque()
        for item in items:
            if len(pending) >= self.window:
                item_done, future = pending.popleft()
                yield item_done, future.result()
            pending.append((item, self._executor.submit(fn, payload(item))))
        while pending:
            item_done, future = pending.popleft()
            yield item_done, future.result()

    def terminate(self) -> None:
        """Stop every worker now (Python 3.11's executor has no public way: 3.14 adds terminate_workers())."""
        for proc in list((getattr(self._executor, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()

    def __enter__(self) -> "OrderedPool":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:
            self.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)

