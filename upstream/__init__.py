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


STREAMING_DATALOADER = "streaming.base.dataloader"
# what Streaming's dataloader module imports from transformers, only to recognise batches of these classes
DATALOADER_NAMES = {"transformers.feature_extraction_utils": "BatchFeature",
                    "transformers.tokenization_utils_base": "BatchEncoding"}


class _ClassOfAModuleNotImported(type):
    """Metaclass of a stand-in for ``module.Name``: ``isinstance(x, stand_in)`` is ``isinstance(x, module.Name)``
    once the real module is imported, and False before (no object can be an instance of a class never created)."""

    def __instancecheck__(cls, obj: object) -> bool:
        real = getattr(sys.modules.get(cls.__module__), cls.__name__, None)
        return isinstance(real, type) and not isinstance(real, _ClassOfAModuleNotImported) and isinstance(obj, real)


class _StreamingDataLoaderWithoutTransformers(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``streaming.base.dataloader`` and runs its code with the two transformers modules it imports standing
    in ``sys.modules`` as stand-ins that hold its two names (:class:`_ClassOfAModuleNotImported`); the stand-ins are
    removed as soon as its top level has run, so that any later import of transformers is the real one."""

    def __init__(self) -> None:
        self._real: Optional[importlib.abc.Loader] = None

    def find_spec(self, name: str, path: object = None,
                  target: object = None) -> Optional[importlib.machinery.ModuleSpec]:
        if name != STREAMING_DATALOADER or "transformers" in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None:
            return None
        self._real, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        assert self._real is not None
        stand_ins = {}
        for name, cls in DATALOADER_NAMES.items():
            stand_ins[name] = types.ModuleType(name)
            setattr(stand_ins[name], cls, _ClassOfAModuleNotImported(cls, (), {"__module__": name}))
        sys.modules.update(stand_ins)
        try:
            self._real.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


def streaming_dataloader_without_transformers() -> None:
    """Streaming 0.13.0 slowness (``streaming/base/dataloader.py``): ``import streaming`` imports transformers (~0.5 s
    of every process that reads or writes shards) for two class names, ``BatchEncoding`` and ``BatchFeature``,
    that ``StreamingDataLoader`` only tests batches against with ``isinstance``. Before Streaming is first imported,
    its dataloader module is run against stand-ins whose ``isinstance`` asks the real class once transformers is
    imported and is False before (when no such batch can exist): the same answers, without the import. A process
    that imported Streaming or transformers already is left as it is."""
    if STREAMING_DATALOADER in sys.modules or "transformers" in sys.modules:
        return
    if not any(isinstance(f, _StreamingDataLoaderWithoutTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _StreamingDataLoaderWithoutTransformers())


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
streaming_dataloader_without_transformers()
lighten_composer_import()
