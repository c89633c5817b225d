"""The config layer in-process (the CLI paths are in test_train.py): shuffle knobs reach Streaming, bad values
are one ConfigError naming the valid ones."""
from __future__ import annotations

import re

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


# Every value is checked before any data or weights load: each numeric key out of its range, each time string that
# Composer would refuse (or read as wall-clock time), each choice key, and a run_name that is not one folder name.

from training.config import CHOICES, RANGES, TIMES  # noqa: E402

BAD_NUMBERS = {  # one out-of-range value per key of RANGES
    "seed": "-1", "global_train_batch_size": "0", "device_train_microbatch_size": "-4",
    "device_eval_batch_size": "0", "eval_subset_num_batches": "0", "save_num_checkpoints_to_keep": "0",
    "grad_clip_norm": "-1.0", "speed_window": "0", "dist_timeout": "0", "peak_flops": "0", "optimizer.lr": "-6e-4",
    "optimizer.eps": "0", "optimizer.weight_decay": "-0.1", "optimizer.betas": "[0.9,1.5]",
    "scheduler.alpha_f": "1.5", "model.n_layer": "0", "model.n_head": "0", "model.n_embd": "-8",
    "model.dropout": "1.0", "data.shuffle_seed": "4294967296", "data.num_canonical_nodes": "0",
    "data.shuffle_block_size": "0", "data.predownload": "0", "data.num_workers": "-1", "data.eval_num_workers": "-2",
    "sample_max_new_tokens": "0", "sample_temperature": "-0.5", "spike.window": "0", "spike.threshold": "0",
    "spike.patience": "0", "spike.skip_batches": "-1", "spike.max_rollbacks": "-1", "optimizer.muon.lr": "0",
    "optimizer.muon.momentum": "1.0", "optimizer.muon.ns_steps": "0", "optimizer.muon.weight_decay": "-0.1",
    "optimizer.muon.momentum_start": "1.0", "scheduler.decay_fraction": "0",
}


def test_every_ranged_key_has_a_bad_value_here():
    assert sorted(BAD_NUMBERS) == sorted(key for key, _, _ in RANGES)


@pytest.mark.parametrize("key", sorted(BAD_NUMBERS))
def test_out_of_range_numbers_are_refused_with_the_valid_range(key, tmp_path):
    value = BAD_NUMBERS[key]
    valid = next(words for k, _, words in RANGES if k == key)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.* is out of range; valid: {re.escape(valid)}$"):
        load_config(str(TINY_YAML), [f"runs_root={tmp_path}", f"{key}={value}"])
    assert not any(tmp_path.iterdir())  # nothing written


def test_zero_lr_is_refused():
    with pytest.raises(ConfigError, match=r"^optimizer.lr=0.0 is out of range; valid: > 0"):
        load_config(str(TINY_YAML), ["optimizer.lr=0"])


@pytest.mark.parametrize("key", [key for key, _, _ in TIMES])
@pytest.mark.parametrize("text", ["10xx", "ba", "100", "30sec", "-5ba", "1.5ep"])
def test_malformed_or_wall_clock_time_strings_are_refused(key, text):
    units = next(u for k, u, _ in TIMES if k == key)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}='{re.escape(text)}' is not a .*duration.* in "
                                          rf"{', '.join(units)}; use e.g. 500{units[0]}$"):
        load_config(str(TINY_YAML), [f"{key}={text}"])


@pytest.mark.parametrize("key, text", [("max_duration", "0.5dur"), ("log_interval", "1000tok"),
                                       ("max_duration", "0ba"), ("save_interval", "0ep")])
def test_time_strings_in_a_unit_the_key_does_not_take_are_refused(key, text):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}='{re.escape(text)}' is not a positive duration"):
        load_config(str(TINY_YAML), [f"{key}={text}"])


def test_good_time_strings_pass():
    cfg = load_config(str(TINY_YAML), ["max_duration=2ep", "eval_interval=0.25dur", "save_interval=1000000tok",
                                       "log_interval=1ep", "scheduler.t_warmup=0ba", "sample_interval=10ba"])
    assert (cfg.max_duration, cfg.scheduler.t_warmup) == ("2ep", "0ba")


@pytest.mark.parametrize("key, valid", CHOICES)
def test_choice_keys_name_the_valid_values(key, valid):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}='nope'; valid: {re.escape(', '.join(valid))}$"):
        load_config(str(TINY_YAML), [f"{key}=nope"])


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "/abs", "a\\b", "x" * 201, "sp ace"])
def test_run_name_must_be_one_folder_name(name, tmp_path):
    with pytest.raises(ConfigError, match=r"must be one folder name .* the run lives in \{runs_root\}/\{run_name\}"):
        load_config(str(TINY_YAML), [f"runs_root={tmp_path}", f"run_name={name}"])
    assert not any(tmp_path.parent.glob("x"))


@pytest.mark.parametrize("name", ["gpt2-125m_lr6e-4", "007", "run.v2", "a+b=c@d,e"])
def test_ordinary_run_names_pass(name):
    assert load_config(str(TINY_YAML), [f"run_name={name}"]).run_name == name


@pytest.mark.parametrize("limit", ["lots", "-5gb", "0"])
def test_bad_cache_limit_is_refused(limit):
    with pytest.raises(ConfigError, match=rf"^data.cache_limit='?{re.escape(limit)}'? is not a size; use e.g. 200gb"):
        load_config(str(TINY_YAML), [f"data.cache_limit={limit}"])


@pytest.mark.parametrize("override, message", [
    ("spike.window=0", r"^spike.window=0 is out of range; valid: >= 1"),
    ("spike.threshold=0", r"^spike.threshold=0.0 is out of range; valid: > 0"),
    ("spike.threshold=-1.5", r"^spike.threshold=-1.5 is out of range; valid: > 0"),
    ("spike.patience=0", r"^spike.patience=0 is out of range; valid: >= 1"),
    ("spike.skip_batches=-1", r"^spike.skip_batches=-1 is out of range; valid: >= 0"),
    ("spike.max_rollbacks=-1", r"^spike.max_rollbacks=-1 is out of range; valid: >= 0"),
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


def test_auto_microbatch_is_a_valid_config_and_any_other_word_is_not():
    """`auto` (Composer's automatic microbatching; refused on CPU when the run starts, see test_train.py)."""
    cfg = load_config(str(TINY_YAML), ["device_train_microbatch_size=auto"])
    assert (cfg.device_train_microbatch_size, cfg.fixed_microbatch) == ("auto", None)
    assert load_config(str(TINY_YAML), ["device_train_microbatch_size=6"]).fixed_microbatch == 6
    with pytest.raises(ConfigError, match=r"^device_train_microbatch_size=big is out of range; valid: >= 1, or auto"):
        load_config(str(TINY_YAML), ["device_train_microbatch_size=big"])


def test_auto_microbatch_with_fsdp_is_refused():
    with pytest.raises(ConfigError, match=r"^device_train_microbatch_size=auto does not work with parallelism=fsdp "
                                          r".*set a number, e.g. device_train_microbatch_size=8$"):
        load_config(str(TINY_YAML), ["device_train_microbatch_size=auto", "parallelism=fsdp"])


def test_amp_fp16_is_a_valid_config():
    """For a GPU; on CPU the run refuses it at start (test_train.py)."""
    assert load_config(str(TINY_YAML), ["precision=amp_fp16"]).precision == "amp_fp16"


def test_tensorboard_is_off_by_default_and_a_typo_under_it_lists_the_valid_keys(tmp_path):
    assert load_config(str(TINY_YAML), []).tensorboard.enabled is False
    assert load_config(str(TINY_YAML), ["tensorboard.enabled=true"]).tensorboard.enabled is True
    with pytest.raises(ConfigError, match=r"unknown config key 'tensorboard.enable'.*valid keys.*: enabled"):
        load_config(str(TINY_YAML), ["tensorboard.enable=true"])
    yaml = tmp_path / "tb.yaml"
    yaml.write_text(TINY_YAML.read_text() + "tensorboard:\n  enabled: true\n  logdir: x\n")
    with pytest.raises(ConfigError, match=r"'tensorboard.logdir'.*: enabled"):
        load_config(str(yaml), [])
