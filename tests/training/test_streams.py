"""Data mixtures on the training side: each stream evaluated alone beside the mixture, streams of weight 0
evaluated but not trained on, the run folder's record of its data, the Pile mixture yaml, and comparing two runs
that differ only in their data. Real training runs (subprocesses of the script), real StreamingDatasets."""
from __future__ import annotations

import functools
import gc
import itertools
import math
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from core.errors import ConfigError
from evaluation.compare import config_differences, flatten, run_config, val_curves
from tests.helpers import make_dataset, metrics_rows, one_error, run_script, run_train, tiny_args
from training.config import TrainConfig, load_config

METRICS = ("LanguageCrossEntropy", "BitsPerByte", "LanguagePerplexity", "TokenAccuracy")
PILE_WEIGHTS = {  # Gao et al. 2020, Table 1, effective epoch weight (%) by pile_set_name
    "Pile-CC": 18.11, "PubMed Central": 14.40, "Books3": 12.07, "OpenWebText2": 10.01, "ArXiv": 8.96,
    "Github": 7.59, "FreeLaw": 6.12, "StackExchange": 5.13, "USPTO Backgrounds": 3.65, "PubMed Abstracts": 3.07,
    "Gutenberg (PG-19)": 2.17, "OpenSubtitles": 1.55, "Wikipedia (en)": 1.53, "DM Mathematics": 1.24,
    "Ubuntu IRC": 0.88, "BookCorpus2": 0.75, "EuroParl": 0.73, "HackerNews": 0.62, "YoutubeSubtitles": 0.60,
    "PhilPapers": 0.38, "NIH ExPorter": 0.30, "Enron Emails": 0.14,
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, shakespeare_text) -> dict[str, Path]:
    """a: Shakespeare; b: one sentence over and over (each paragraph numbered, so the val split gets some);
    c: a dataset converted without a val split."""
    root = tmp_path_factory.mktemp("streams")
    repetitive = "\n\n".join(f"{i}: " + "the cat sat on the mat. " * 8 for i in range(800))
    return {"a": make_dataset(root / "a", shakespeare_text[:60_000]),
            "b": make_dataset(root / "b", repetitive),
            "c": make_dataset(root / "c", shakespeare_text[200_000:230_000], val_fraction=0.0)}


def _mixture_args(datasets: dict[str, Path], runs: Path, name: str, a: float, b: float) -> list[str]:
    return tiny_args(datasets["a"], runs, f"run_name={name}", "max_duration=6ba", "eval_interval=3ba",
                     "save_interval=6ba", "data.path=null",
                     f"data.streams.a.path={datasets['a']}", f"data.streams.a.proportion={a}",
                     f"data.streams.b.path={datasets['b']}", f"data.streams.b.proportion={b}")


@pytest.fixture(scope="module")
def runs(datasets, tmp_path_factory) -> dict[str, Path]:  # (tests using it are marked slow)
    """An experiment pair, run side by side: a and b half and half, and a only (b of weight 0)."""
    root = tmp_path_factory.mktemp("runs")
    pair = {"mix": (0.5, 0.5), "a-only": (1.0, 0.0)}
    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(run_train, _mixture_args(datasets, root, n, *w)) for n, w in pair.items()]:
            f.result()
    return {name: root / name for name in pair}


def _cfg(datasets: dict[str, Path], tmp_path: Path, *streams: str) -> TrainConfig:
    args = tiny_args(datasets["a"], tmp_path, "run_name=inproc", "data.path=null", *streams)
    return load_config(args[0], args[1:])


def _stream_of(dataset, sample_ids) -> list[int]:
    return [int(dataset.stream_per_shard[dataset.spanner[int(i)][0]]) for i in sample_ids]


# --------------------------------------------------------------------------------------------- per-stream eval


@pytest.mark.slow
def test_each_stream_is_evaluated_alone_beside_the_mixture(runs):
    rows = metrics_rows(runs["mix"])
    evals = [r for r in rows if "metrics/val/LanguageCrossEntropy" in r]
    assert [r["step"] for r in evals] == [3, 6]  # the mixture's val, as before
    for row in evals:
        for label in ("val", "val/a", "val/b"):
            for metric in METRICS:
                assert math.isfinite(row[f"metrics/{label}/{metric}"]), (label, metric)
        ce = {label: row[f"metrics/{label}/LanguageCrossEntropy"] for label in ("val", "val/a", "val/b")}
        assert abs(ce["val/a"] - ce["val/b"]) > 1e-3  # two different texts: two different losses
        assert ce["val"] not in (ce["val/a"], ce["val/b"])  # the mixture's subset holds both streams
        assert row["metrics/val/a/LanguagePerplexity"] == pytest.approx(math.exp(ce["val/a"]), rel=1e-4)


@pytest.mark.slow
def test_weight_zero_stream_is_evaluated_not_trained(runs, datasets, tmp_path):
    from training.trainer import build_data

    assert "metrics/val/b/LanguageCrossEntropy" in metrics_rows(runs["a-only"])[-1]
    data = build_data(_cfg(datasets, tmp_path, f"data.streams.a.path={datasets['a']}",
                           f"data.streams.b.path={datasets['b']}", "data.streams.b.proportion=0"))
    train = data.train.dataloader.dataset
    assert [s.local for s in train.streams] == [str(datasets["a"])]  # b is not in the training mixture
    assert set(data.stream_evals) == {"a", "b"} and [s.proportion for s in data.metas] == [None]
    del data, train
    gc.collect()


def test_stream_without_val_split_is_skipped_with_one_warning(datasets, tmp_path, capsys):
    from training.trainer import build_data

    streams = [f"data.streams.a.path={datasets['a']}", f"data.streams.c.path={datasets['c']}"]
    data = build_data(_cfg(datasets, tmp_path, *streams))
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "for c:" in warnings[0] and "'val' split" in warnings[0]
    assert list(data.stream_evals) == ["a"]
    off = build_data(_cfg(datasets, tmp_path, *streams, "eval_per_stream=false"))
    assert off.stream_evals == {}
    del data, off
    gc.collect()


def test_mixture_val_subset_holds_every_stream_and_is_the_same_each_eval(datasets, tmp_path):
    """Unshuffled (as Streaming serves a split), a mixture's val is stream a's samples then b's, so
    ``eval_subset_num_batches`` would read a only; ours is shuffled once and read in that order at every eval."""
    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec
    from training.trainer import build_data

    sources = [StreamSource(str(datasets["a"]), 0.5), StreamSource(str(datasets["b"]), 0.5)]
    upstream = build_dataspec(sources, "val", 4, LoaderSettings(shuffle=False), None, False)
    first = next(iter(upstream.dataloader))["sample_ids"]
    assert set(_stream_of(upstream.dataloader.dataset, first)) == {0}  # stream a only
    data = build_data(_cfg(datasets, tmp_path, f"data.streams.a.path={datasets['a']}", "data.streams.a.proportion=0.5",
                           f"data.streams.b.path={datasets['b']}", "data.streams.b.proportion=0.5"))

    def subset() -> list[int]:
        batches = iter(data.eval.dataloader)
        return [int(i) for _ in range(4) for i in next(batches)["sample_ids"]]

    ids = subset()
    assert set(_stream_of(data.eval.dataloader.dataset, ids)) == {0, 1}
    assert subset() == ids  # the next eval reads the same samples
    del upstream, data
    gc.collect()


def test_bad_stream_names_and_all_zero_weights_are_config_errors(datasets, tmp_path):
    from training.streams import named_sources, trained_sources

    yaml = tmp_path / "bad.yaml"
    yaml.write_text(f"data:\n  streams:\n    'my stream':\n      path: {datasets['a']}\n")
    with pytest.raises(ConfigError, match="'my stream': use only letters, digits"):
        named_sources(load_config(str(yaml)))
    cfg = _cfg(datasets, tmp_path, f"data.streams.a.path={datasets['a']}", "data.streams.a.choose=0")
    with pytest.raises(ConfigError, match="every stream in data.streams has weight 0"):
        trained_sources(named_sources(cfg))


def test_remote_streams_get_their_own_per_stream_val_cache(datasets, s3_process_env, tmp_path, monkeypatch):
    """Streaming refuses two live datasets that read one remote into the same local folder; the mixture's val
    already reads each stream's val split into ``data.cache``, so each stream's own val is cached beside it."""
    from streaming.base.shared import prefix as shm_prefix

    from core.remote import upload_dir
    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec
    from training.trainer import build_data

    bucket = s3_process_env.new_bucket()
    urls = {name: f"s3://{bucket}/{name}" for name in ("a", "b")}
    for name, url in urls.items():
        upload_dir(datasets[name], url, last=["metadata.json"])
    cache = tmp_path / "cache"
    data = build_data(_cfg(datasets, tmp_path, f"data.cache={cache}", f"data.streams.a.path={urls['a']}",
                           f"data.streams.b.path={urls['b']}"))
    assert set(data.stream_evals) == {"a", "b"}
    # upstream, with the mixture's cache folder. Streaming's look (``_check_and_find``) walks the prefixes from 0,
    # stops at the first free one and skips those whose file locks exist in the temp folder: beside other pytest
    # workers (a freed prefix below ours, their locks in the shared /tmp) it may never reach the mixture's. So the
    # look starts at the mixture's prefix, before any loader ran, with the temp folder's locks out of sight.
    monkeypatch.setattr(shm_prefix, "_each_prefix_int",
                        functools.partial(itertools.count, data.eval.dataloader.dataset._shm_prefix_int))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-locks"))
    with pytest.raises(ValueError, match="Reused local directory"):
        build_dataspec([StreamSource(urls["a"])], "val", 4, LoaderSettings(shuffle=False), str(cache), False)
    monkeypatch.undo()
    for spec in [data.eval, *data.stream_evals.values()]:
        assert len(next(iter(spec.dataloader))["sample_ids"]) == 4
    record = tmp_path / "inproc" / "data" / "b" / "metadata.json"
    assert record.read_bytes() == (datasets["b"] / "metadata.json").read_bytes()
    del data
    gc.collect()


# ----------------------------------------------------------------------------------------- the run's data record


@pytest.mark.slow
def test_run_folder_keeps_config_and_each_streams_metadata(runs, datasets):
    for run_dir in runs.values():
        assert (run_dir / "config.yaml").is_file()
        for name in ("a", "b"):
            copy = run_dir / "data" / name / "metadata.json"
            assert copy.read_bytes() == (datasets[name] / "metadata.json").read_bytes()


@pytest.mark.slow
def test_pair_differs_only_in_data_and_compare_runs_plots_it(runs, tmp_path):
    from callbacks.metrics import VAL_LABEL
    from evaluation import compare

    assert compare.VAL_LABEL == VAL_LABEL  # restated there, see compare.py

    configs = {name: run_config(d) for name, d in runs.items()}
    assert configs["mix"]["run_name"] != configs["a-only"]["run_name"]
    diffs = config_differences(configs)
    assert set(diffs) == {"data.streams.a.proportion", "data.streams.b.proportion"}
    assert diffs["data.streams.b.proportion"] == {"mix": 0.5, "a-only": 0.0}
    for d in runs.values():  # both runs measured on the same val sets
        assert set(val_curves(metrics_rows(d), "LanguageCrossEntropy")) == {"val", "val/a", "val/b"}
    out = tmp_path / "cmp.png"
    proc = run_script("scripts/compare_runs.py", *runs.values(), "--out", out, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "data.streams.b.proportion: mix=0.5  a-only=0.0" in proc.stdout
    assert re.search(r"a-only: a \([0-9a-f]{16}, [\d,]+ train tokens\); b \(", proc.stdout)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------------- yamls


def test_pile_mixture_yaml(repo_root):
    from conversion.groups import group_folder  # the folder convert_to_mds.py --group-by writes for a value

    cfg = load_config(str(repo_root / "yamls" / "gpt2.yaml"))
    streams = cfg.data.streams
    expected = {group_folder(name): w for name, w in PILE_WEIGHTS.items()}
    assert set(streams) == set(expected) and len(streams) == 22
    assert abs(sum(s.proportion for s in streams.values()) - 1) < 1e-6
    total = sum(PILE_WEIGHTS.values())
    for name, s in streams.items():
        assert s.proportion == pytest.approx(expected[name] / total, abs=1e-6)
        assert s.path.endswith(f"/{name}")
    assert "Gutenberg__PG-19_" in streams and "Wikipedia__en_" in streams


def test_experiment_yamls_differ_only_in_data(repo_root):
    def flat(path: Path) -> dict:
        return flatten(OmegaConf.to_container(OmegaConf.structured(load_config(str(path)))))

    exp = repo_root / "yamls" / "experiments"
    pair = {"cc": flat(exp / "pile-cc-only.yaml"), "mix": flat(exp / "pile-mixture.yaml")}
    diffs = config_differences(pair)
    assert diffs and all(key.startswith("data.") for key in diffs)
    reference = flat(repo_root / "yamls" / "gpt2.yaml")
    assert {k: v for k, v in pair["mix"].items() if k.startswith("data.streams.")} == \
        {k: v for k, v in reference.items() if k.startswith("data.streams.")}
    trained = [k for k, v in pair["cc"].items() if k.endswith(".proportion") and v > 0]
    assert trained == ["data.streams.Pile-CC.proportion"]


@pytest.mark.slow
def test_plot_draws_train_val_and_each_stream_of_every_run(runs, tmp_path):
    """plot.py: the panels hold exactly what each run's metrics.jsonl logged (val points unsmoothed)."""
    from evaluation.compare import TRAIN_KEY, panels

    curves = panels([str(d) for d in runs.values()])
    assert list(curves) == ["train", "val", "val/a", "val/b"]
    for name, d in runs.items():
        rows = metrics_rows(d)
        logged = [(r["step"], r["metrics/val/b/LanguageCrossEntropy"]) for r in rows
                  if "metrics/val/b/LanguageCrossEntropy" in r]
        assert curves["val/b"][name] == logged and logged
        train_steps = [r["step"] for r in rows if TRAIN_KEY in r]
        assert [s for s, _ in curves["train"][name]] == train_steps
    out = tmp_path / "curves.png"
    proc = run_script("plot.py", *runs.values(), "--out", out, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run_script("plot.py", tmp_path, timeout=60)  # not a run folder: core.runs.read_metrics' one message
    line = one_error(proc, f"{tmp_path / 'metrics.jsonl'} does not exist")
    assert proc.stderr.strip() == line == f"error: {tmp_path / 'metrics.jsonl'} does not exist: give run folders " \
        "of gpt_pile_composer.py runs ({runs_root}/{run_name})"


@pytest.mark.parametrize("microbatch, auto", [(None, False), ("auto", True)])
def test_evaluators_split_their_batches_as_the_train_batch_is_split(microbatch, auto):
    """device_train_microbatch_size=auto makes every val set's evaluator auto too (Composer halves its batch until
    it fits on the GPU); a fixed size sends each eval batch through at once, as before."""
    import warnings

    import torch
    from composer.core import DataSpec

    from training.streams import build_evaluators

    spec = lambda: DataSpec(torch.utils.data.DataLoader(list(range(12)), batch_size=6))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Composer calls eval's auto microbatching experimental
        evaluators = build_evaluators(spec(), {"a": spec()}, ["LanguageCrossEntropy"], microbatch=microbatch)
    assert [e.label for e in evaluators] == ["val", "val/a"]
    assert all(e.auto_microbatching == auto and e.device_eval_microbatch_size == 6 for e in evaluators)
