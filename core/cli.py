"""What the command-line scripts share: one argument parser and one way to report a user's mistake.

Every script's ``main`` is wrapped in :func:`reports_errors`: a :class:`~core.errors.UserFacingError` raised
anywhere below it (imports included) becomes one ``error: <message>`` line on stderr and exit code 2; usage
errors of :class:`ScriptParser` look the same.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import os
import sys
import threading
from typing import Callable, NoReturn

from core.errors import UserFacingError


class ScriptParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error:`` line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:
        print(f"error: {message}; see --help", file=sys.stderr)
        sys.exit(2)


def fail(message: object) -> int:
    """Print the one ``error:`` line and return the exit code for bad input (2)."""
    text = one_line(message) if isinstance(message, BaseException) else message
    print(f"error: {text}", file=sys.stderr, flush=True)
    return 2


def one_line(error: BaseException) -> str:
    """The error's message. One raised in a torch DataLoader worker reaches the main process re-made as
    ``Type("Caught Type in DataLoader worker process N.\nOriginal Traceback ...")``: its own message is the
    traceback's last line, after ``module.Type: ``."""
    text = str(error)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def reports_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a script's ``main``: a UserFacingError is one ``error:`` line and exit 2, never a traceback."""

    @functools.wraps(main)
    def guarded(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserFacingError as e:
            return fail(e)

    return guarded


def exit_fast(code: int) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, less the interpreter's deallocation of every module: ~0.7 s after
    a training run (torch, Composer, Streaming and what they import), paid by every run, every requeue and every
    test that starts one. What a normal exit does before that is kept, in CPython's order: non-daemon threads are
    joined and threading's exit hooks run (concurrent.futures' workers), then the atexit handlers (Composer's
    engine, loggers, wandb, multiprocessing, logging), then stdout and stderr are flushed. Call it only from the
    main thread of a script whose own files are closed (the training script's are: ``trainer.close()``)."""
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx runs first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to say on it
            pass
    os._exit(code)
