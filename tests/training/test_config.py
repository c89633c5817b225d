"""The config layer in-process (the CLI paths are in test_train.py): shuffle knobs reach Streaming, bad values
are one ConfigError naming the valid ones."""
from __future__ import annotations

import pytest

from core.errors import ConfigError
from tests.helpers import REPO, TINY_YAML, make_dataset
from training.config import load_config

GPT2_YAML, GPT2_SINGLE_YAML = str(REPO / "yamls" / "gpt2.yaml"), str(REPO / "yamls" / "gpt2-single.yaml")


def test_bad_shuffle_algo_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"data.shuffle_algo='py9'; valid: py1e, py1b, py1br, py1s, py2s, naive"):
        load_config(str(TINY_YAML), ["data.shuffle_algo=py9"])


def test_shuffle_knobs_reach_the_streaming_dataset(tmp_path, shakespeare_text):
    from core.streams import StreamSource
    from loaders.dataset import LoaderSettings, build_dataspec

    cfg = load_config(str(TINY_YAML), ["data.shuffle_algo=py1br", "data.shuffle_block_size=64"])
    ds = make_dataset(tmp_path, shakespeare_text[:20_000], seq_len=32, val_fraction=0)
    settings = LoaderSettings(shuffle_algo=cfg.data.shuffle_algo, shuffle_block_size=cfg.data.shuffle_block_size)
    spec = build_dataspec([StreamSource(str(ds))], "train", 4, settings)
    dataset = spec.dataloader.dataset
    assert (dataset.shuffle_algo, dataset.shuffle_block_size) == ("py1br", 64)
    del spec, dataset


def test_the_pile_yaml_takes_one_dataset_only_when_told():
    """yamls/gpt2.yaml is the Pile mixture: a bare data.path is refused with the two ways to get one dataset, and
    both ways work."""
    with pytest.raises(ConfigError, match=r"both set.*data.streams=null.*yamls/gpt2-single.yaml"):
        load_config(GPT2_YAML, ["data.path=/data/one"])
    assert load_config(GPT2_YAML, ["data.streams=null", "data.path=/data/one"]).data.path == "/data/one"
    single = load_config(GPT2_SINGLE_YAML, ["data.path=/data/one"])
    assert (single.data.path, single.data.streams) == ("/data/one", None)
    with pytest.raises(ConfigError, match=r"set data.path \(one dataset\) or data.streams"):
        load_config(GPT2_SINGLE_YAML, ["data.path=null"])


@pytest.mark.parametrize("override, message", [
    ("spike.window=0", r"^spike.window=0; valid: an integer >= 1"),
    ("spike.threshold=0", r"^spike.threshold=0.0; valid: a number > 0"),
    ("spike.threshold=-1.5", r"^spike.threshold=-1.5; valid: a number > 0"),
    ("spike.patience=0", r"^spike.patience=0; valid: an integer >= 1"),
    ("spike.skip_batches=-1", r"^spike.skip_batches=-1; valid: an integer >= 0"),
    ("spike.max_rollbacks=-1", r"^spike.max_rollbacks=-1; valid: an integer >= 0"),
])
def test_spike_values_out_of_range_name_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(str(TINY_YAML), [override])


def test_spike_recovery_is_on_by_default_and_its_edges_are_valid():
    spike = load_config(str(TINY_YAML)).spike
    assert spike.enabled and spike.patience >= 1 and spike.window > 1
    edges = load_config(str(TINY_YAML), ["spike.window=1", "spike.patience=1", "spike.skip_batches=0",
                                         "spike.max_rollbacks=0", "spike.threshold=0.5"]).spike
    assert (edges.window, edges.max_rollbacks, edges.threshold) == (1, 0, 0.5)
