"""Compare runs meant to differ only in their data: which config keys differ, what data each run saw (from the
``data/<stream>/metadata.json`` copies in its folder, so the datasets need not be at hand), and loss curves."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.metadata import METADATA_FILE, read_metadata
from core.runs import read_metrics
from training.config import load_run_config, plain_config

# Restated from callbacks/metrics.py, whose imports load torch and Composer (seconds) that a comparison does not
# need; tests/test_streams.py checks they agree.
VAL_LABEL = "val"
TRAIN_KEY = "loss/train/total"
RUN_KEYS = frozenset({"run_name", "runs_root", "save_folder", "data.cache"})  # where a run lives, not what it does
ABSENT = "<absent>"
METRICS = ("LanguageCrossEntropy", "BitsPerByte", "LanguagePerplexity", "TokenAccuracy")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"streams": {"a": {"proportion": 0.5}}}}`` -> ``{"data.streams.a.proportion": 0.5}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's resolved config (its ``config.yaml``), flattened."""
    return flatten(plain_config(load_run_config(run_dir)))


def config_differences(configs: Mapping[str, Mapping[str, Any]], ignore: frozenset = RUN_KEYS) -> dict[str, dict]:
    """``{key: {run: value}}`` for every flattened key whose value is not the same in all runs (``ignore``: keys
    that always differ between two runs, such as their names)."""
    keys = sorted({k for cfg in configs.values() for k in cfg} - ignore)
    diffs = {}
    for key in keys:
        values = {run: cfg.get(key, ABSENT) for run, cfg in configs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            diffs[key] = values
    return diffs


def run_streams(run_dir: str | os.PathLike) -> dict[str, str]:
    """``{stream: "content digest, N train tokens"}`` from the metadata copies in ``{run_dir}/data/``."""
    root = Path(run_dir) / "data"
    out = {}
    for folder in sorted(p for p in root.glob("*") if (p / METADATA_FILE).is_file()):
        meta = read_metadata(folder)
        train = meta.splits.get("train")
        out[folder.name] = f"{meta.content_digest()}, {train.tokens if train else 0:,} train tokens"
    return out


def val_curves(rows: list[dict], metric: str) -> dict[str, list[tuple[int, float]]]:
    """``{"val": [(step, value)], "val/<stream>": ...}``: the mixture's and each stream's val metric."""
    pattern = re.compile(rf"^metrics/({re.escape(VAL_LABEL)}(?:/.+)?)/{re.escape(metric)}$")
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if (m := pattern.match(key)) and isinstance(value, (int, float)) and math.isfinite(value):
                curves.setdefault(m.group(1), []).append((row["step"], value))
    return curves




def choice_curves(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """``{"<task> acc_norm": [(step, value)]}``: each multiple-choice task's ``acc_norm`` (``eval_tasks``)."""
    pattern = re.compile(r"^metrics/([^/]+)/acc_norm$")
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if (m := pattern.match(key)) and m.group(1) != VAL_LABEL and isinstance(value, (int, float)):
                curves.setdefault(f"{m.group(1)} acc_norm", []).append((row["step"], value))
    return curves


def ema(values: list[float], beta: float = 0.9) -> list[float]:
    """Exponential moving average: per-step train loss is noisy."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else beta * out[-1] + (1 - beta) * v)
    return out


def panels(run_dirs: Sequence[str], metric: str = "LanguageCrossEntropy") -> dict[str, dict[str, list]]:
    """``{panel: {run: [(step, value)]}}``: "train" (the smoothed train loss), then "val" (each run's mixture),
    "val/<stream>" (each stream alone) and "<task> acc_norm" (each eval_tasks file), in that order; what
    :func:`plot_runs` draws."""
    runs = {label: read_metrics(d) for label, d in run_labels(run_dirs).items()}
    out: dict[str, dict[str, list]] = {"train": {}}
    for run, rows in runs.items():
        points = [(r["step"], r[TRAIN_KEY]) for r in rows if isinstance(r.get(TRAIN_KEY), (int, float))]
        out["train"][run] = list(zip([s for s, _ in points], ema([v for _, v in points])))
    curves = {run: val_curves(rows, metric) for run, rows in runs.items()}
    for label in sorted({label for c in curves.values() for label in c}, key=lambda x: (x != VAL_LABEL, x)):
        out[label] = {run: c[label] for run, c in curves.items() if label in c}
    choices = {run: choice_curves(rows) for run, rows in runs.items()}
    for label in sorted({label for c in choices.values() for label in c}):
        out[label] = {run: c[label] for run, c in choices.items() if label in c}
    return out


def plot_runs(run_dirs: Sequence[str], out_png: str, metric: str = "LanguageCrossEntropy") -> str:
    """One panel of train loss, then one per val set (the mixture's, then each stream's), every run in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = panels(run_dirs, metric)
    colors = {run: f"C{i}" for i, run in enumerate(run_labels(run_dirs))}
    cols = min(3, len(data))
    nrows = math.ceil(len(data) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (panel, runs) in zip(axes.flat, data.items()):
        for run, points in runs.items():
            if points:
                ax.plot(*zip(*points), "-" if panel == "train" else "o-", color=colors[run], label=run, ms=3)
        title = {"train": "train loss (smoothed)", VAL_LABEL: f"val (each run's mixture) {metric}"}
        ax.set_title(title.get(panel, panel if panel.endswith(" acc_norm") else f"{panel} {metric}"), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(data):]:
        ax.axis("off")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def run_labels(run_dirs: Sequence[str]) -> dict[str, str]:
    """``{label: run_dir}``: the folder names, or the paths when two runs share a name."""
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    return dict(zip(names if len(set(names)) == len(names) else list(run_dirs), run_dirs))


def report(run_dirs: Sequence[str]) -> str:
    """What a person reads first: the config keys that differ, then each run's data."""
    labels = run_labels(run_dirs)
    diffs = config_differences({label: run_config(d) for label, d in labels.items()})
    lines = [f"config keys that differ ({', '.join(sorted(RUN_KEYS))} left out):" if diffs else
             "the configs are the same (apart from " + ", ".join(sorted(RUN_KEYS)) + ")"]
    for key, values in diffs.items():
        lines.append(f"  {key}: " + "  ".join(f"{run}={value}" for run, value in values.items()))
    lines.append("data (from each run's data/<stream>/metadata.json):")
    for label, d in labels.items():
        streams = run_streams(d)
        lines.append(f"  {label}: " + ("; ".join(f"{s} ({info})" for s, info in streams.items()) or "no record"))
    return "\n".join(lines)
