"""Mixtures on the training side: which streams train, one evaluator per stream, and the run's record of its data.

A mixture's val loss alone hides which domain moved, so each stream's val split also gets its own Composer
``Evaluator`` (label ``val/<name>``, see :func:`callbacks.metrics.stream_label`). A stream of weight 0 is
evaluated but not trained on: runs that train on different mixtures are then measured on the same val sets.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from composer.core import DataSpec, Evaluator
from composer.utils import dist

from callbacks.metrics import VAL_LABEL, stream_label
from core.errors import ConfigError
from core.files import write_atomic
from core.metadata import METADATA_FILE, DatasetMetadata
from core.remote import is_remote
from core.streams import StreamSource
from loaders.dataset import LoaderSettings, TokenSamples, build_dataspec, fetch_metadata, has_split, local_dir
from training.config import TrainConfig

EVAL_SHUFFLE_SEED = 0  # a mixture's val order: fixed, so runs with other seeds are measured on the same samples
EVAL_WORKERS = 2  # a val loader's worker processes per rank unless data.eval_num_workers says otherwise
SINGLE = "dataset"  # the name of a lone data.path in the run's data record
EVAL_CACHE = "per_stream_eval"  # under data.cache: per-stream val shards of remote streams
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def named_sources(cfg: TrainConfig) -> dict[str, StreamSource]:
    """Every dataset root of the run by name (a lone ``data.path`` is called ``dataset``)."""
    if cfg.data.path is not None:
        return {SINGLE: StreamSource(cfg.data.path)}
    named = {}
    for name, s in (cfg.data.streams or {}).items():
        if not _SAFE_NAME.match(name):  # it names a folder of the run and a metric key
            raise ConfigError(f"data.streams name {name!r}: use only letters, digits, '.', '_' and '-'")
        named[name] = s
    return named


def is_trained(source: StreamSource) -> bool:
    """Weight 0 (``proportion``, ``repeat`` or ``choose``) means evaluate only. (Streaming itself would still
    hand such a stream a sample or two when it rounds proportions into sample counts.)"""
    return all(w is None or w > 0 for w in (source.proportion, source.repeat, source.choose))


def trained_sources(named: dict[str, StreamSource]) -> list[StreamSource]:
    sources = [s for s in named.values() if is_trained(s)]
    if not sources:
        raise ConfigError("every stream in data.streams has weight 0 (evaluation only); give at least one a "
                          "positive proportion, repeat or choose")
    return sources


class FixedOrderSamples(TokenSamples):
    """Every pass over the dataset reads epoch 0's order. Composer starts a new pass at each evaluation, and
    Streaming counts each pass as a new epoch with a new shuffle: here every eval sees the same samples."""

    def _resume_incr_epoch(self) -> tuple[int, int]:
        super()._resume_incr_epoch()  # keeps Streaming's own bookkeeping (worker barrier, next epoch)
        return 0, 0


def build_mixture_eval(cfg: TrainConfig, sources: list[StreamSource], metas: list[DatasetMetadata], batch: int,
                       settings: LoaderSettings) -> Optional[DataSpec]:
    """The val split of the trained streams, weighted as in training; None unless every one has a val split.

    Its loader has ``data.eval_num_workers`` persistent workers per rank (default at most EVAL_WORKERS): an eval
    reads a few batches now and then, and 8 ranks x the train loader's workers again would not fit a node's cores.
    Unshuffled, Streaming serves a mixture stream after stream, so ``eval_subset_num_batches`` read only the first
    stream(s); a mixture's val is therefore shuffled, once (:class:`FixedOrderSamples`), with a seed of its own.
    """
    split = cfg.data.eval_split
    if not all(has_split(m, split) for m in metas):
        return None
    mixed = len(sources) > 1
    workers = cfg.data.eval_num_workers
    workers = min(settings.num_workers, EVAL_WORKERS) if workers is None else workers
    eval_settings = LoaderSettings(**{**settings.__dict__, "shuffle": mixed, "shuffle_seed": EVAL_SHUFFLE_SEED,
                                      "num_workers": workers})
    return build_dataspec(sources, split, batch, eval_settings, cfg.data.cache, False,
                          FixedOrderSamples if mixed else TokenSamples)


def build_stream_evals(cfg: TrainConfig, named: dict[str, StreamSource], metas: dict[str, DatasetMetadata],
                       batch: int, settings: LoaderSettings) -> dict[str, DataSpec]:
    """One unshuffled val loader per stream of a mixture; streams without a val split are skipped (one warning).

    Each is its own StreamingDataset, read in the main process: 22 streams x ``data.num_workers`` persistent
    worker processes per rank would be hundreds of processes for loaders that run a few batches per eval.
    """
    if len(named) < 2 or not cfg.eval_per_stream:
        unused = [n for n, s in named.items() if not is_trained(s)]
        if unused:
            _warn(f"stream(s) {', '.join(unused)}: weight 0 and eval_per_stream=false, so not used at all")
        return {}
    split = cfg.data.eval_split
    missing = [name for name, meta in metas.items() if not has_split(meta, split)]
    if missing:
        _warn(f"no per-stream eval for {', '.join(missing)}: their dataset has no {split!r} split "
              "(convert with --val-fraction > 0)")
    eval_settings = LoaderSettings(**{**settings.__dict__, "shuffle": False, "num_workers": 0})
    return {name: build_dataspec([StreamSource(src.path)], split, batch, eval_settings,
                                 _eval_cache(src.path, cfg.data.cache, cfg.data.tokenizer), False)
            for name, src in named.items() if name not in missing}


def _eval_cache(path: str, cache: Optional[str], tokenizer: Optional[str]) -> Optional[str]:
    """A remote stream's per-stream val gets its own cache folder: Streaming refuses two live datasets that read
    one remote into the same local folder ("Reused local directory"), and the mixture's val already does."""
    if not is_remote(path) or cache is None:
        return cache
    eval_cache = os.path.join(cache, EVAL_CACHE)
    fetch_metadata(path, eval_cache, tokenizer)  # as for the mixture's cache: drops shards of a re-converted dataset
    return eval_cache


def build_evaluators(overall: Optional[DataSpec], per_stream: dict[str, DataSpec], metric_names: list[str],
                     microbatch: Optional[str] = None) -> list[Evaluator]:
    """The mixture's val (as before) then each stream's; Composer applies ``eval_subset_num_batches`` to each.
    ``microbatch="auto"`` (a run with ``device_train_microbatch_size=auto``): Composer halves each eval batch
    until it fits, as it does the train batch; None: each eval batch goes through the model at once."""
    labelled = ([(VAL_LABEL, overall)] if overall is not None else []) + [
        (stream_label(name), spec) for name, spec in per_stream.items()]
    return [Evaluator(label=label, dataloader=spec, metric_names=metric_names, device_eval_microbatch_size=microbatch)
            for label, spec in labelled]


def record_stream_metadata(run_dir: str, named: dict[str, StreamSource], cache: Optional[str],
                           metas: Optional[dict[str, DatasetMetadata]] = None) -> None:
    """Copy each stream's ``metadata.json`` to ``{run_dir}/data/<name>/`` (rank 0), so that runs can be compared
    later (``scripts/compare_runs.py``) without their datasets at hand. An llm-foundry dataset has none: its
    synthesized record (``metas``) is written instead, so that eval.py and compare.py know what the run read."""
    if dist.get_global_rank() != 0:
        return
    root = os.path.join(run_dir, "data")
    for name, src in named.items():
        dest = os.path.join(root, name, METADATA_FILE)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        made = Path(local_dir(src.path, cache), METADATA_FILE)
        write_atomic(dest, made.read_text(encoding="utf-8") if made.is_file() else metas[name].to_json())
    for old in set(os.listdir(root)) - set(named):  # dropped on a resume: only weight-0 streams can be
        stale = os.path.join(root, old, METADATA_FILE)
        if os.path.isfile(stale):
            os.remove(stale)
            if not os.listdir(os.path.dirname(stale)):
                os.rmdir(os.path.dirname(stale))


def _warn(message: str) -> None:
    if dist.get_global_rank() == 0:
        print(f"warning: {message}", flush=True)
