"""Evaluate a trained GPT away from its training run: LM metrics on any split of any dataset (or of one stream of
the run's mixture), and HellaSwag-format multiple choice.

The LM metrics are callbacks/metrics.py's :func:`eval_metrics` fed by the project's own loader (loaders/dataset.py
``build_dataspec``, unshuffled, in this one process), so a figure here means exactly what a run's
``metrics/val/<Metric>`` means: evaluating a run's last checkpoint on its whole val split reproduces the val metrics
it logged at that step.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from composer.core import DataSpec

from callbacks.choices import CHOICE_METRICS, choose, ending_losses
from callbacks.metrics import eval_metrics
from core.errors import EvalError
from core.files import write_atomic
from core.metadata import METADATA_FILE, DatasetMetadata, read_metadata
from core.remote import is_remote
from core.runs import CONFIG_FILE
from core.streams import StreamSource
from core.tokenizer import Tokenizer
from evaluation.checkpoints import resolve_checkpoint
from gpt import GPT
from loaders.choices import Item, encode_item, read_items
from loaders.dataset import LoaderSettings, build_dataspec, dataset_tokenizer, fetch_metadata, has_split
from training.config import TrainConfig, load_run_config
from training.resume.init_from import is_hf_folder
from training.streams import build_mixture_eval, named_sources, trained_sources

TOKENIZER_OPTION = "--tokenizer"  # eval.py's name for data.tokenizer
EVAL_CACHE = "eval"  # under a run's data.cache: shards of remote datasets read by eval.py (not a live run's folder)
DEFAULT_BATCH = 8


# ----------------------------------------------------------------------------------------------- what to evaluate


@dataclass
class RunRecord:
    """What a run folder says about its data: the resolved config and the metadata of the data it trained on."""

    run_dir: Path
    cfg: TrainConfig
    meta: Optional[DatasetMetadata]  # from RUN/data/<stream>/metadata.json; None for runs made before that record


@dataclass
class EvalTarget:
    """The dataset root(s) to read and how to describe them; several roots = the run's own val mixture."""

    label: str
    sources: list[StreamSource]
    cache: Optional[str]


def find_run(source: str) -> Optional[RunRecord]:
    """The run a source belongs to (a run folder, or a checkpoint inside ``RUN/checkpoints/``); None for a
    Hugging Face folder or a checkpoint that lives outside any run."""
    if is_hf_folder(source):
        return None
    run_dir = resolve_checkpoint(source)[0]
    if not (run_dir / CONFIG_FILE).is_file():
        return None
    records = sorted((run_dir / "data").glob(f"*/{METADATA_FILE}"))
    meta = read_metadata(records[0].parent) if records else None  # every stream of a run shares the tokenizer
    return RunRecord(run_dir, load_run_config(run_dir), meta)


def choose_data(run: Optional[RunRecord], data: Optional[str], stream: Optional[str],
                cache: Optional[str]) -> EvalTarget:
    """``--data`` (any root), ``--stream`` (one of the run's), or neither: the run's own data as its val read it."""
    if data is not None and stream is not None:
        raise EvalError("give --data PATH or --stream NAME, not both")
    if data is not None:
        label, sources = data, [StreamSource(data)]
    elif run is None:
        raise EvalError("this model is not a run folder of gpt_pile_composer.py: give the dataset with --data PATH")
    else:
        label, sources = _run_data(run, stream)
    if cache is None and run is not None and run.cfg.data.cache:
        cache = os.path.join(run.cfg.data.cache, EVAL_CACHE)  # a live run's own cache folder would collide
    remote = [s.path for s in sources if is_remote(s.path)]
    if remote and cache is None:
        raise EvalError(f"{remote[0]} is remote: give --cache DIR, a local folder for its shards")
    return EvalTarget(label, sources, cache)


def _run_data(run: RunRecord, stream: Optional[str]) -> tuple[str, list[StreamSource]]:
    """One stream of the run by name, or the trained streams with their weights (a lone data.path: itself)."""
    named = named_sources(run.cfg)
    if stream is None:
        sources = trained_sources(named)
        what = "dataset" if len(sources) == 1 else f"val mixture ({', '.join(named)})"
        return f"the {what} of run {run.run_dir.name}", sources
    if stream not in named:
        raise EvalError(f"run {run.run_dir} has no stream {stream!r}; its streams: {', '.join(named)}")
    return f"stream {stream} of run {run.run_dir.name}", [StreamSource(named[stream].path)]


def check_model_data(model: GPT, run: Optional[RunRecord], metas: dict[str, DatasetMetadata], split: str) -> None:
    """The dataset must be tokenized as the model was trained, fit in its context, and have the split."""
    cfg = model.config
    for path, meta in metas.items():
        if run is not None and run.meta is not None and _tokenization(run.meta) != _tokenization(meta):
            trained = run.meta.tokenizer.get("name")
            raise EvalError(f"{path} was tokenized with {meta.tokenizer.get('name')} (vocab {meta.vocab_size}), run "
                            f"{run.run_dir} with {trained} (vocab {run.meta.vocab_size}): convert the data with "
                            f"the run's tokenizer (convert_to_mds.py --tokenizer {trained})")
        if meta.vocab_size != cfg.vocab_size:
            raise EvalError(f"{path} has vocab size {meta.vocab_size} but the model has {cfg.vocab_size}: convert "
                            "the data with the model's tokenizer")
        if meta.seq_len > cfg.block_size:
            raise EvalError(f"{path} has seq_len {meta.seq_len}, longer than the model's block_size "
                            f"{cfg.block_size}: convert it with --seq-len {cfg.block_size} (or less)")
        if not has_split(meta, split):
            have = ", ".join(k for k in meta.splits if has_split(meta, k)) or "none"
            raise EvalError(f"{path} has no {split!r} split (its splits: {have}); pick one with --split")


def _tokenization(meta: DatasetMetadata) -> tuple:
    """What must match for token ids to mean the same text (as loaders.dataset.check_compatible compares)."""
    return meta.tokenizer.get("kind"), meta.tokenizer.get("sha256"), meta.vocab_size, meta.eos_id


def loader_settings(run: Optional[RunRecord]) -> LoaderSettings:
    """Unshuffled, in-process; the run's own partitioning knobs, so its val split is read sample for sample."""
    if run is None:
        return LoaderSettings(shuffle=False)
    d = run.cfg.data
    return LoaderSettings(shuffle=False, num_canonical_nodes=d.num_canonical_nodes, shuffle_algo=d.shuffle_algo,
                          shuffle_block_size=d.shuffle_block_size, predownload=d.predownload,
                          cache_limit=d.cache_limit)


def build_loader(target: EvalTarget, metas: list[DatasetMetadata], split: str, batch_size: int,
                 run: Optional[RunRecord]) -> DataSpec:
    """One root: read in order. The run's whole mixture: read as the run's val read it (training/streams.py)."""
    settings = loader_settings(run)
    if len(target.sources) == 1:
        return build_dataspec(target.sources, split, batch_size, settings, target.cache, drop_last=False)
    cfg = dataclasses.replace(run.cfg, data=dataclasses.replace(run.cfg.data, eval_split=split, cache=target.cache))
    spec = build_mixture_eval(cfg, target.sources, metas, batch_size, settings)
    assert spec is not None  # check_model_data saw the split in every stream
    return spec


# ------------------------------------------------------------------------------------------------------ LM metrics


@torch.no_grad()
def lm_metrics(model: GPT, spec: DataSpec, token_bytes: torch.Tensor,
               max_batches: Optional[int] = None) -> dict[str, Any]:
    """Training's val metrics (``metrics/val/<name>``) over the loader, plus the number of target tokens."""
    device = next(model.parameters()).device  # eval.py --device
    metrics = {name: metric.to(device) for name, metric in eval_metrics(token_bytes).items()}
    tokens = 0
    for i, batch in enumerate(spec.dataloader):
        if max_batches is not None and i >= max_batches:
            break
        labels = batch["labels"].to(device)
        logits = model(batch["input_ids"].to(device))
        for metric in metrics.values():
            metric.update(logits, labels)
        tokens += batch["labels"].numel()
    if tokens == 0:
        raise EvalError("the split gave no batch to evaluate")
    return {**{name: float(m.compute()) for name, m in metrics.items()}, "tokens": tokens}


def evaluate_lm(source: str, model: GPT, data: Optional[str], stream: Optional[str], split: str,
                batch_size: Optional[int], max_batches: Optional[int], cache: Optional[str],
                tokenizer: Optional[str] = None) -> dict[str, Any]:
    """Everything ``eval.py SOURCE [--data|--stream]`` does after loading the model; returns the report.
    ``tokenizer`` (``--tokenizer``, else the run's ``data.tokenizer``) names an llm-foundry dataset's tokenizer."""
    run = find_run(source)
    target = choose_data(run, data, stream, cache)
    if tokenizer is None and run is not None:
        tokenizer = run.cfg.data.tokenizer
    metas = {s.path: fetch_metadata(s.path, target.cache, tokenizer, TOKENIZER_OPTION) for s in target.sources}
    check_model_data(model, run, metas, split)
    if batch_size is None:  # the batch the run evaluated with: known to fit (a run with auto microbatches: ours)
        batch_size = (run.cfg.device_eval_batch_size or run.cfg.fixed_microbatch if run else None) or DEFAULT_BATCH
    spec = build_loader(target, list(metas.values()), split, batch_size, run)
    tok = dataset_tokenizer(target.sources[0].path, target.cache, tokenizer, TOKENIZER_OPTION)
    token_bytes = torch.as_tensor(tok.token_bytes())
    result = lm_metrics(model, spec, token_bytes, max_batches)
    return {"source": source, "data": target.label, "split": split, **result}


def item_scores(model: GPT, tokenizer: Tokenizer, items: list[Item]) -> Iterator[dict[str, Any]]:
    """Per item: each ending's summed loss (nats; lm-evaluation-harness's log-likelihood is its negative), its
    tokens and characters, and the ending each rule of :data:`callbacks.choices.CHOICE_METRICS` picks."""
    for item in items:
        tokens, mask = encode_item(item, tokenizer, model.config.block_size)
        chars = [len(e) for e in item.endings]
        total, mean = ending_losses(model, tokens, mask, share_context=True)
        yield {"label": item.label, "losses": total.tolist(), "tokens": mask.sum(1).tolist(), "chars": chars,
               **choose(total, mean, chars)}


def score_items(model: GPT, tokenizer: Tokenizer, items: list[Item],
                per_item: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """Each of :data:`callbacks.choices.CHOICE_METRICS` over the items (see :func:`callbacks.choices.picks`);
    ``per_item``, a list: each item's :func:`item_scores` appended to it."""
    hits = dict.fromkeys(CHOICE_METRICS, 0)
    for scores in item_scores(model, tokenizer, items):
        for rule in CHOICE_METRICS:
            hits[rule] += scores[rule] == scores["label"]
        if per_item is not None:
            per_item.append(scores)
    return {**{rule: n / len(items) for rule, n in hits.items()}, "items": len(items)}


def evaluate_choices(source: str, model: GPT, path: str, max_items: Optional[int],
                     per_item: Optional[str] = None) -> dict[str, Any]:
    """Everything ``eval.py SOURCE --hellaswag FILE [--per-item OUT.jsonl]`` does after loading the model; returns
    the report. ``per_item``: a jsonl file written with one line of :func:`item_scores` per item, in order."""
    from evaluation.checkpoints import load_tokenizer_for

    items = read_items(path)[:max_items]
    tokenizer = load_tokenizer_for(source)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise EvalError(f"the tokenizer of {source} has {tokenizer.vocab_size} ids but its model "
                        f"{model.config.vocab_size}: the model and tokenizer do not belong together")
    rows: list[dict[str, Any]] = []
    result = score_items(model, tokenizer, items, rows)
    if per_item is not None:
        write_atomic(per_item, "".join(json.dumps({"item": i, **row}) + "\n" for i, row in enumerate(rows)))
    return {"source": source, "hellaswag": path, **result}
