"""Refuse to resume a run whose config no longer matches its checkpoint in ways that break exactness.

The facts that decide which sample lands in which step and what the weights mean (global batch, seq len,
the datasets, the model's shape, the shuffle) are stored in every checkpoint through this callback's state.
The trainer compares them before a local checkpoint is loaded (``training.resume.check_checkpoints``); the callback's
``load_state_dict`` compares again for checkpoints it could not read beforehand (remote ones).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

from composer.core import Callback

from core.errors import ResumeMismatchError
from core.metadata import DatasetMetadata
from core.streams import StreamSource
from gpt import GPTConfig
from gpt_modern import MODERN_FIELDS
from training.config import TrainConfig, plain_config

# what a checkpoint written before a fingerprint key existed holds for it: the one value there was then
BEFORE_THE_KEY = {"optimizer.name": "decoupled_adamw", "model.gelu_approximate": "tanh", "model.arch": "gpt2"}


def check_fingerprint(saved: Optional[dict[str, Any]], current: dict[str, Any], strict: bool,
                      soft: frozenset[str] = frozenset()) -> None:
    """Raise (strict) or warn listing every key whose value differs; keys in ``soft`` only ever warn."""
    if not saved:
        return
    saved = {**BEFORE_THE_KEY, **saved}
    changed = {k: (saved.get(k), v) for k, v in current.items() if k in saved and saved[k] != v}
    if not changed:
        return
    lines = "; ".join(f"{k}: checkpoint {a!r} -> now {b!r}" for k, (a, b) in sorted(changed.items()))
    if strict and any(k not in soft for k in changed):
        raise ResumeMismatchError(
            f"cannot resume exactly: the config changed since the checkpoint ({lines}). Set these back, or "
            "start a new run_name with load_path=<checkpoint> to continue from its weights on purpose"
        )
    warnings.warn(f"the config differs from the checkpoint's ({lines}); from here on the run does not replay it")


class ResumeGuard(Callback):
    """``strict``: a resumed run (same run_name) must match; otherwise (``load_path`` into a new run) warn.

    Keys in ``soft`` (the schedule: max_duration, optimizer, scheduler) only warn: training longer is a legitimate
    change, but from the resume point on the run no longer replays the checkpoint's.
    """

    def __init__(self, fingerprint: dict[str, Any], strict: bool = True, soft: frozenset[str] = frozenset()):
        self.fingerprint = fingerprint
        self.strict = strict
        self.soft = soft
        self.checked = False  # set when the trainer compared before loading

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.checked:
            check_fingerprint(state.get("fingerprint"), self.fingerprint, self.strict, self.soft)


SCHEDULE_KEYS = frozenset({"max_duration", "optimizer", "scheduler", "grad_clip_norm"})  # changes warn only
# Muon's lr, momentum, steps: a schedule change too; FlexAttention and the FP8 head: kernels, not state
SOFT_KEYS = SCHEDULE_KEYS | {"optimizer.muon", "model.flex_attention", "model.fp8_head"}


def run_fingerprint(cfg: TrainConfig, meta: DatasetMetadata, metas: dict[StreamSource, DatasetMetadata],
                    gpt: GPTConfig) -> dict:
    """What a resumed run must share with its checkpoint to replay it exactly: ``meta`` is the run's (common)
    dataset metadata, ``metas`` that of each trained stream."""
    plain = plain_config(cfg)
    # the optimizer's implementation is strict: Composer files its state under its class name, so another one would
    # start from empty moments; kept out of the soft "optimizer" entry, which checkpoints older than the key match
    optimizer_name = plain["optimizer"].pop("name")
    muon = plain["optimizer"].pop("muon")  # only a muon run's: an AdamW run's fingerprint stays what it was
    fp = {
        "global_train_batch_size": cfg.global_train_batch_size,
        "seq_len": meta.seq_len,
        "tokenizer": meta.tokenizer.get("sha256") or meta.tokenizer.get("name"),
        "data.shuffle": cfg.data.shuffle,
        "data.shuffle_seed": cfg.data.shuffle_seed if cfg.data.shuffle_seed is not None else cfg.seed,
        "data.num_canonical_nodes": cfg.data.num_canonical_nodes,
        "data.shuffle_algo": cfg.data.shuffle_algo,
        "data.shuffle_block_size": cfg.data.shuffle_block_size,
        **{f"model.{k}": getattr(gpt, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size", "bias",
                                                         "gelu_approximate")},
        **{key: plain[key] for key in SCHEDULE_KEYS},
        "optimizer.name": optimizer_name,
        "model.arch": getattr(gpt, "arch", "gpt2"),
        **{f"model.{k}": getattr(gpt, k) for k in MODERN_FIELDS if hasattr(gpt, k)},  # a modern run's changes
        **({"optimizer.muon": muon} if optimizer_name == "muon" else {}),
    }
    for i, (src, meta) in enumerate(metas.items()):  # by position: a moved (same) dataset still matches
        fp["data" if len(metas) == 1 else f"data.stream{i}"] = {
            "content": meta.content_digest(), "proportion": src.proportion, "repeat": src.repeat, "choose": src.choose}
    return fp


