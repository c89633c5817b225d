"""Every work-around for a bug of the pinned Composer and Streaming, in one package.

Neither gets another release, so their bugs are ours to carry: :mod:`upstream.composer` (Composer 0.32.1) and
:mod:`upstream.streaming` (Streaming 0.13.0). Each work-around was written against, and is tested on, exactly
these versions (DESIGN.md lists each with the test that shows the upstream behaviour): importing this package with
other versions installed stops the process at once with one ``error:`` line naming them (exit 2), before any code
that may have changed upstream is patched.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import Optional

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


class _DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet; the first public attribute asked of it imports the
    real module, which then replaces it (dunder lookups, such as ``inspect``'s scans of ``sys.modules``, do not)."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        parent, _, child = self.__name__.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, real)
        for full, module in list(sys.modules.items()):  # its submodules, as attributes (the import system's rule)
            sub = full[len(self.__name__) + 1:]
            if full.startswith(f"{self.__name__}.") and "." not in sub and not hasattr(real, sub):
                setattr(real, sub, module)
        return getattr(real, name)


def _defer(name: str, spec: importlib.machinery.ModuleSpec) -> None:
    """Register ``name`` (found at ``spec``, not imported yet) as a :class:`_DeferredModule`."""
    stub = _DeferredModule(name)
    stub.__spec__, stub.__file__, stub.__path__ = spec, spec.origin, list(spec.submodule_search_locations or [])
    sys.modules[name] = stub


DEFERRED_STREAMING = ("streaming.vision", "streaming.text", "streaming.multimodal")


def defer_streaming_datasets() -> None:
    """Streaming 0.13.0 slowness (``streaming/__init__.py``): ``import streaming`` imports its vision, text and
    multimodal datasets and, through them, torchvision and torch._dynamo (vision) and transformers' AutoTokenizer
    machinery (text: C4 and the Pile): ~1.4 s of every converter's and trainer's start, for classes nothing here
    uses. Before Streaming is first imported, those three subpackages are registered as
    :class:`_DeferredModule` stand-ins: each is imported, as before, when first used. A process that imported Streaming
    already is left as it is."""
    if "streaming" in sys.modules or any(name in sys.modules for name in DEFERRED_STREAMING):
        return
    top = importlib.util.find_spec("streaming")  # a top-level spec: nothing is imported
    if top is None or not top.submodule_search_locations:
        return
    for name in DEFERRED_STREAMING:
        spec = importlib.machinery.PathFinder.find_spec(name, list(top.submodule_search_locations))
        if spec is not None:
            _defer(name, spec)


MCLI = "mcli"
UNUSED_BY_TORCHMETRICS = ("transformers", "matplotlib")  # the optional packages its import-time flags name


def _initializing(frame: Optional[types.FrameType], package: str) -> bool:
    """``frame`` runs the top level of a module of ``package`` that is being imported."""
    if frame is None or frame.f_code.co_name != "<module>":
        return False
    name, spec = frame.f_globals.get("__name__", ""), frame.f_globals.get("__spec__")
    return (name == package or name.startswith(f"{package}.")) and bool(getattr(spec, "_initializing", False))


class _NoTransformersForComposerAlgorithms(importlib.abc.MetaPathFinder):
    """``transformers`` is not found while a ``composer.algorithms`` module runs its top level (its BERT/GPT-2
    surgery algorithms then count it as not installed, as their ``try: ... except ImportError`` provides); from
    anywhere else it imports as usual."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == "transformers":
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
                frame = frame.f_back
            if _initializing(frame, "composer.algorithms"):
                raise ImportError(f"{name}: not imported for composer.algorithms (upstream.lighten_composer_import)")
        return None


def lighten_composer_import() -> None:
    """Composer 0.32.1 slowness (``composer/core/state.py``, ``composer/loggers/mosaicml_logger.py``,
    ``composer/algorithms/__init__.py``): ``import composer`` imports torchmetrics, whose module-level flags import
    transformers (for BERTScore) and matplotlib.pyplot (for plots), and the MosaicML platform client ``mcli``; our
    first import from ``composer.algorithms`` imports every algorithm, and with the gated-linear-units one
    transformers' BERT. That is ~2 s of every process that trains, evaluates or generates (~6 s for a 3-step run),
    for code nothing here runs. Before Composer is first imported: torchmetrics' ``transformers``/``matplotlib``
    flags read False while its own modules are being imported (BERTScore and torchmetrics' ``.plot()`` are then
    unavailable; at run time the flags answer as before), ``composer.algorithms`` modules do not find transformers
    at their import (the HF-model surgery algorithms are then off), and ``mcli`` stands in ``sys.modules`` as a
    module imported at its first use. A process that imported Composer or torchmetrics already is left as it is."""
    if "torchmetrics" in sys.modules or "composer" in sys.modules:
        return
    try:
        from lightning_utilities.core.imports import RequirementCache
    except ImportError:
        return
    if not getattr(RequirementCache, "_lean_import", False):
        answer = RequirementCache.__bool__

        def lean_bool(self: RequirementCache) -> bool:
            package = re.split(r"[<>=!~ \[;]", str(self.requirement), maxsplit=1)[0]
            if package in UNUSED_BY_TORCHMETRICS and _initializing(sys._getframe(1), "torchmetrics"):
                return False
            return answer(self)

        RequirementCache.__bool__ = lean_bool
        RequirementCache._lean_import = True
        sys.meta_path.insert(0, _NoTransformersForComposerAlgorithms())
    if MCLI not in sys.modules and (spec := importlib.util.find_spec(MCLI)) is not None:
        _defer(MCLI, spec)


defer_streaming_datasets()
lighten_composer_import()
