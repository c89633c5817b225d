"""A run folder, ``{runs_root}/{run_name}/``, and the one reader of its metrics.

Training writes ``config.yaml`` (the resolved config: read back by ``training.config.load_run_config``),
``model.json`` (the GPT's shape: ``training.resume.checkpoints``), ``precision.json`` (what ``precision: auto``
chose at the run's first start: ``training.precision``), ``metrics.jsonl`` (one JSON row per step:
:func:`read_metrics`), ``rollbacks.jsonl`` (one JSON row per loss-spike rollback: ``callbacks.spike``),
``data/<stream>/metadata.json``, ``checkpoints/`` and, with ``tensorboard.enabled``, ``tensorboard/`` (TensorBoard's
event files: ``callbacks.tensorboard``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.errors import RunFolderError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.json"
PRECISION_FILE = "precision.json"
ROLLBACKS_FILE = "rollbacks.jsonl"


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` in order (``run_dir`` may also be the file itself). A torn last line,
    left by a kill mid-write, is skipped: a live or killed run reads as far as it got."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise RunFolderError(f"{path} does not exist: give run folders of gpt_pile_composer.py runs "
                             "({runs_root}/{run_name})")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
