"""Every work-around for a bug of the pinned Composer and Streaming, in one package.

Neither gets another release, so their bugs are ours to carry: :mod:`upstream.composer` (Composer 0.32.1) and
:mod:`upstream.streaming` (Streaming 0.13.0). Each work-around was written against, and is tested on, exactly
these versions (DESIGN.md lists each with the test that shows the upstream behaviour): importing this package with
other versions installed stops the process at once with one ``error:`` line naming them (exit 2), before any code
that may have changed upstream is patched.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
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


VISION = "streaming.vision"


class _DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet; the first public attribute asked of it imports the
    real module, which then replaces it (dunder lookups, such as ``inspect``'s scans of ``sys.modules``, do not)."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        parent, _, child = self.__name__.rpartition(".")
        setattr(sys.modules[parent], child, real)
        for full, module in list(sys.modules.items()):  # its submodules, as attributes (the import system's rule)
            sub = full[len(self.__name__) + 1:]
            if full.startswith(f"{self.__name__}.") and "." not in sub and not hasattr(real, sub):
                setattr(real, sub, module)
        return getattr(real, name)


def defer_streaming_vision() -> None:
    """Streaming 0.13.0 slowness (``streaming/__init__.py``): ``import streaming`` imports its vision datasets and,
    through them, torchvision and torch._dynamo: ~1.1 s of every converter's start, for classes nothing here uses.
    Before Streaming is first imported, ``streaming.vision`` is registered as a :class:`_DeferredModule`: it is
    imported, as before, when first used. A process that imported Streaming already is left as it is."""
    if "streaming" in sys.modules or VISION in sys.modules:
        return
    top = importlib.util.find_spec("streaming")  # a top-level spec: nothing is imported
    if top is None or not top.submodule_search_locations:
        return
    spec = importlib.machinery.PathFinder.find_spec(VISION, list(top.submodule_search_locations))
    if spec is None:
        return
    stub = _DeferredModule(VISION)
    stub.__spec__, stub.__file__, stub.__path__ = spec, spec.origin, list(spec.submodule_search_locations or [])
    sys.modules[VISION] = stub


defer_streaming_vision()
