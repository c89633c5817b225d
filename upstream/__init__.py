"""Every work-around for a bug of the pinned Composer and Streaming, in one package.

Neither gets another release, so their bugs are ours to carry: :mod:`upstream.composer` (Composer 0.32.1) and
:mod:`upstream.streaming` (Streaming 0.13.0). Each work-around was written against, and is tested on, exactly
these versions (DESIGN.md lists each with the test that shows the upstream behaviour): importing this package with
other versions installed stops the process at once with one ``error:`` line naming them (exit 2), before any code
that may have changed upstream is patched.
"""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from core.errors import UpstreamVersionError

PINNED = {"mosaicml": "0.32.1", "mosaicml-streaming": "0.13.0"}


def check_versions(pinned: dict[str, str] = PINNED) -> None:
    """Raise UpstreamVersionError unless every package in ``pinned`` is installed at its pinned version."""
    found = {}
    for name in pinned:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    wrong = [f"{name} {found[name]} (need {want})" for name, want in pinned.items() if found[name] != want]
    if wrong:
        raise UpstreamVersionError(f"installed {', '.join(wrong)}: the work-arounds in upstream/ are written for "
                                   "these exact versions; install the project's lock (make venv)")


try:
    check_versions()
except UpstreamVersionError as e:  # at import time, before any script's own error handling exists
    print(f"error: {e}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
