"""README promises about the training config, checked in-process (no training run):

- "Guard rails. Every checkpoint stores what exactness depends on: global batch, sequence length, tokenizer, each
  dataset's content (not its path: a dataset copied to a bucket still matches), stream weights, shuffle seed,
  `num_canonical_nodes` and the model's shape. Resuming with any of them changed is refused with the list of keys.
  Changing the schedule (`max_duration`, `optimizer.*` but `optimizer.name`, `scheduler.*`) only warns."
- "DDP ... each rank gets `global_train_batch_size / N` of every global batch" (and a batch that does not divide is
  refused).
- "`data.streams.<name>`: `path` plus at most one of `proportion`, `repeat`, `choose`".
- "Samples during training. `sample_prompt="ROMEO:"` continues that prompt": typed on a command line, the shell
  removes the double quotes, so the script receives `sample_prompt=ROMEO:`.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from core.errors import ConfigError, ResumeMismatchError
from core.metadata import read_metadata
from core.streams import StreamSource
from gpt import GPTConfig
from tests.helpers import REPO, make_dataset
from training.config import load_config
from training.resume.guard import SCHEDULE_KEYS, check_fingerprint, run_fingerprint

YAML = str(REPO / "yamls" / "tiny.yaml")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, shakespeare_text) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guard")
    a = make_dataset(root / "a", shakespeare_text[:40_000], seq_len=32)
    copy = root / "copy_of_a"
    shutil.copytree(a, copy)  # the same dataset elsewhere (as a copy in a bucket would be)
    b = make_dataset(root / "b", shakespeare_text[40_000:80_000], seq_len=32)
    return {"a": a, "copy": copy, "b": b}


def _fingerprint(datasets: dict[str, Path], *overrides: str, path: str = "a", model: dict | None = None) -> dict:
    cfg = load_config(YAML, [f"data.path={datasets[path]}", *overrides])
    meta = read_metadata(datasets[path])
    gpt = GPTConfig(block_size=meta.seq_len, vocab_size=meta.vocab_size,
                    **{"n_layer": 2, "n_head": 2, "n_embd": 32, **(model or {})})
    return run_fingerprint(cfg, meta, {StreamSource(str(datasets[path])): meta}, gpt)


def _refused(saved: dict, now: dict) -> str:
    with pytest.raises(ResumeMismatchError, match="cannot resume exactly: the config changed since the checkpoint") \
            as e:
        check_fingerprint(saved, now, strict=True, soft=SCHEDULE_KEYS)
    return str(e.value)


@pytest.mark.parametrize("override, key", [
    ("global_train_batch_size=48", "global_train_batch_size"),
    ("data.shuffle_seed=5", "data.shuffle_seed"),
    ("seed=5", "data.shuffle_seed"),  # the shuffle seed defaults to the run's seed
    ("data.num_canonical_nodes=4", "data.num_canonical_nodes"),
    ("data.shuffle_block_size=1000", "data.shuffle_block_size"),
    ("data.shuffle_algo=py1s", "data.shuffle_algo"),
    ("optimizer.name=adamw", "optimizer.name"),  # the optimizer state is filed under the optimizer's class
])
def test_changed_exactness_keys_are_refused_with_their_names(datasets, override, key):
    saved = _fingerprint(datasets)
    message = _refused(saved, _fingerprint(datasets, override))
    assert f"{key}: checkpoint" in message and "load_path=<checkpoint>" in message


@pytest.mark.parametrize("change, key", [({"n_layer": 3}, "model.n_layer"), ({"n_embd": 64}, "model.n_embd"),
                                         ({"bias": False}, "model.bias")])
def test_changed_model_shape_is_refused(datasets, change, key):
    assert f"{key}: checkpoint" in _refused(_fingerprint(datasets), _fingerprint(datasets, model=change))


def test_dataset_content_not_path_is_compared_and_sequence_length_and_tokenizer_too(datasets, tmp_path,
                                                                                   shakespeare_text, gpt2_dir):
    saved = _fingerprint(datasets)
    check_fingerprint(saved, _fingerprint(datasets, path="copy"), strict=True, soft=SCHEDULE_KEYS)  # same content
    assert "data: checkpoint {'content'" in _refused(saved, _fingerprint(datasets, path="b"))
    datasets = {**datasets, "long": make_dataset(tmp_path / "l", shakespeare_text[:40_000], seq_len=64),
                "gpt2": make_dataset(tmp_path / "g", shakespeare_text[:40_000], seq_len=32, tokenizer=str(gpt2_dir))}
    assert "seq_len: checkpoint 32 -> now 64" in _refused(saved, _fingerprint(datasets, path="long"))
    assert "tokenizer: checkpoint 'bytes' -> now" in _refused(saved, _fingerprint(datasets, path="gpt2"))


def test_stream_weights_are_compared(datasets):
    def fingerprint(proportion_b: float) -> dict:
        cfg = load_config(YAML, ["data.path=null", f"data.streams.a.path={datasets['a']}",
                                 "data.streams.a.proportion=0.5",
                                 f"data.streams.b.path={datasets['b']}", f"data.streams.b.proportion={proportion_b}"])
        metas = {StreamSource(str(datasets[n]), proportion=p): read_metadata(datasets[n])
                 for n, p in (("a", 0.5), ("b", proportion_b))}
        meta = next(iter(metas.values()))
        return run_fingerprint(cfg, meta, metas, GPTConfig(block_size=32, vocab_size=257, n_layer=2, n_head=2,
                                                           n_embd=32))

    assert "data.stream1: checkpoint {'content'" in _refused(fingerprint(0.5), fingerprint(0.25))


@pytest.mark.parametrize("override", ["max_duration=2000ba", "optimizer.lr=1e-4", "optimizer.weight_decay=0.0",
                                      "scheduler.t_warmup=10ba", "scheduler.alpha_f=0.5"])
def test_changed_schedule_only_warns(datasets, override):
    saved = _fingerprint(datasets)
    key = override.split("=")[0].split(".")[0]
    with pytest.warns(UserWarning, match=rf"the config differs from the checkpoint's \({key}: checkpoint .*\); "
                                         "from here on the run does not replay it"):
        check_fingerprint(saved, _fingerprint(datasets, override), strict=True, soft=SCHEDULE_KEYS)


def test_schedule_change_with_an_exactness_change_is_still_refused(datasets):
    message = _refused(_fingerprint(datasets), _fingerprint(datasets, "max_duration=2000ba",
                                                            "global_train_batch_size=48"))
    assert "global_train_batch_size: checkpoint" in message and "max_duration: checkpoint" in message


def test_unchanged_config_resumes_silently(datasets):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_fingerprint(_fingerprint(datasets), _fingerprint(datasets), strict=True, soft=SCHEDULE_KEYS)


# ---------------------------------------------------------------------------------------------------------- DDP


@pytest.mark.parametrize("world, per_rank", [(1, 24), (2, 12), (4, 6), (8, 3)])
def test_each_rank_gets_its_share_of_the_global_batch(monkeypatch, world, per_rank):
    from composer.utils import dist

    from training.trainer import device_batch_size

    monkeypatch.setattr(dist, "get_world_size", lambda: world)
    assert device_batch_size(load_config(YAML, ["data.path=x", "global_train_batch_size=24"])) == per_rank


def test_global_batch_that_does_not_divide_over_the_ranks_is_refused(monkeypatch):
    from composer.utils import dist

    from training.trainer import device_batch_size

    monkeypatch.setattr(dist, "get_world_size", lambda: 5)
    with pytest.raises(ConfigError, match="global_train_batch_size=24 does not divide over 5 ranks; use a multiple "
                                          "of 5"):
        device_batch_size(load_config(YAML, ["data.path=x", "global_train_batch_size=24"]))


# ------------------------------------------------------------------------------------------------ data.streams


@pytest.mark.parametrize("weights", [("proportion=0.5", "repeat=2"), ("proportion=0.5", "choose=10"),
                                     ("repeat=2", "choose=10")])
def test_a_stream_takes_at_most_one_weight(weights):
    overrides = ["data.streams.web.path=/d/web", *(f"data.streams.web.{w}" for w in weights)]
    with pytest.raises(ConfigError, match="data.streams.web: set at most one of proportion, repeat, choose"):
        load_config(YAML, ["data.path=null", *overrides])
    load_config(YAML, ["data.path=null", "data.streams.web.path=/d/web", f"data.streams.web.{weights[0]}"])


# ---------------------------------------------------------------------------------------------- sample_prompt


def test_quoted_sample_prompt_with_a_colon_is_a_string():
    assert load_config(YAML, ["data.path=x", "sample_prompt='ROMEO:'"]).sample_prompt == "ROMEO:"


def test_readme_sample_prompt_example_as_the_shell_passes_it():
    import shlex

    argv = shlex.split('sample_prompt="ROMEO:"')  # exactly as README writes it, after the shell
    assert argv == ["sample_prompt=ROMEO:"]
    assert load_config(YAML, ["data.path=x", *argv]).sample_prompt == "ROMEO:"
