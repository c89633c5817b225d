"""Hugging Face interop with the real transformers GPT2LMHeadModel: import (load_hf_gpt, model.init_from=hf:...),
export (export_hf.py, from a sharded FSDP checkpoint of a real 2-process run), and the round trip between them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import make_dataset, run_script, run_train, tiny_args

SHAPE = dict(n_layer=2, n_head=2, n_embd=32)  # tiny_args' shape, so init_from needs no shape overrides


def save_hf(folder: Path, seed: int, vocab_size: int = 50257, n_positions: int = 64, **config) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf_config = GPT2Config(**SHAPE, n_positions=n_positions, vocab_size=vocab_size, **config)
    GPT2LMHeadModel(hf_config).save_pretrained(folder)
    return folder


def same_tensors(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("vocab_size", [100, 128])  # 100: padded to 128 rows inside gpt.py
def test_load_hf_gpt_matches_transformers_logits(tmp_path, vocab_size):
    from transformers import GPT2LMHeadModel

    from evaluation.hf import to_hf_model
    from training.resume.init_from import is_hf_folder, load_hf_gpt

    folder = save_hf(tmp_path / "hf", seed=0, vocab_size=vocab_size)
    assert is_hf_folder(folder) and not is_hf_folder(tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    model = load_hf_gpt(str(folder))
    assert not model.training and model.config.block_size == 64 and model.config.vocab_size == vocab_size
    assert model.config.padded_vocab_size == 128 and not model.transformer.wte.weight[vocab_size:].any()
    idx = torch.randint(0, vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=1e-5, rtol=0)
    assert same_tensors(to_hf_model(model, eos_id=0).state_dict(), hf.state_dict())  # round trip: identical


@pytest.mark.parametrize("gelu", ["tanh", "none"])
def test_bias_false_exports_as_zero_biases_with_same_logits(gelu, tmp_path):
    from evaluation.hf import to_hf_model
    from gpt import GPT, GPTConfig
    from training.resume.init_from import load_hf_gpt

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=257, bias=False, gelu_approximate=gelu, **SHAPE)).eval()
    hf = to_hf_model(model, eos_id=256)
    assert hf.config.activation_function == {"tanh": "gelu_new", "none": "gelu"}[gelu]
    hf.save_pretrained(tmp_path / "hf")
    assert load_hf_gpt(str(tmp_path / "hf")).config.gelu_approximate == gelu  # and back
    assert not hf.transformer.h[0].attn.c_attn.bias.any() and not hf.transformer.ln_f.bias.any()
    idx = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), atol=1e-5, rtol=0)


def test_bytes_tokenizer_exports_as_transformers_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from core.tokenizer import ByteTokenizer
    from evaluation.hf import bytes_hf_tokenizer

    bytes_hf_tokenizer().save_pretrained(tmp_path)
    tok, text = AutoTokenizer.from_pretrained(tmp_path), "héllo wörld 😀\n\tx  y"
    assert tok.encode(text) == ByteTokenizer().encode(text) and tok.decode(tok.encode(text)) == text
    assert (len(tok), tok.eos_token_id, tok.bos_token_id) == (257, 256, 256)


def test_unloadable_hf_folders_fail_clearly(tmp_path):
    from core.errors import CheckpointError, HFError
    from evaluation.checkpoints import load_gpt, load_tokenizer_for
    from training.resume.init_from import load_hf_gpt

    with pytest.raises(HFError, match="does not exist"):
        load_hf_gpt(str(tmp_path / "missing"))
    with pytest.raises(HFError, match="no config.json"):
        load_hf_gpt(str(tmp_path))
    odd = save_hf(tmp_path / "odd", seed=0, vocab_size=100, layer_norm_epsilon=1e-6, activation_function="relu")
    with pytest.raises(HFError, match="activation_function='relu'.*layer_norm_epsilon=1e-06"):
        load_gpt(str(odd))  # load_gpt delegates HF folders to load_hf_gpt
    with pytest.raises(CheckpointError, match="no usable tokenizer"):
        load_tokenizer_for(str(save_hf(tmp_path / "plain", seed=0, vocab_size=100)))


def test_init_from_checks_against_dataset_and_overrides(tmp_path):
    from core.errors import ConfigError
    from training.resume.init_from import init_config

    spec = f"hf:{save_hf(tmp_path / 'hf', seed=0)}"
    config = init_config(spec, {"dropout": 0.1, "n_embd": 32}, seq_len=32, vocab_size=50257)
    assert (config.block_size, config.vocab_size, config.n_embd, config.dropout, config.bias) == (64, 50257, 32, 0.1,
                                                                                                   True)
    with pytest.raises(ConfigError, match="vocab_size is 257 but the model's is 50257.*tokenizer"):
        init_config(spec, {}, seq_len=32, vocab_size=257)
    with pytest.raises(ConfigError, match="seq_len 128 exceeds the model's n_positions 64"):
        init_config(spec, {}, seq_len=128, vocab_size=50257)
    with pytest.raises(ConfigError, match=r"model.n_embd=64 \(the model has 32\), model.bias=False"):
        init_config(spec, {"n_embd": 64, "bias": False}, seq_len=32, vocab_size=50257)
    with pytest.raises(ConfigError, match=r"model.gelu_approximate=none \(the model has tanh\); drop these"):
        init_config(spec, {"gelu_approximate": "none"}, seq_len=32, vocab_size=50257)  # gelu_new: the tanh GELU


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory, gpt2_dir) -> tuple[Path, Path]:
    """Two GPT-2s of the same shape and GPT-2 vocab, different weights; the first also holds the BPE tokenizer."""
    from transformers import GPT2TokenizerFast

    root = tmp_path_factory.mktemp("hf")
    a, b = save_hf(root / "a", seed=1), save_hf(root / "b", seed=2)
    bpe = GPT2TokenizerFast(vocab_file=str(gpt2_dir / "vocab.json"), merges_file=str(gpt2_dir / "merges.txt"))
    bpe.save_pretrained(a)
    return a, b


@pytest.fixture(scope="module")
def fsdp_init_run(tmp_path_factory, shakespeare_text, gpt2_dir, hf_pair) -> Path:
    """A 2-process FSDP run (sharded checkpoints) started from (a copy of) HF model a with lr=1e-30 (an lr of 0 is
    refused; this one moves no float32 weight) for 1 batch, then re-run with the same command to 2 batches after
    that folder was deleted: resuming needs only the run's own checkpoint and model.json."""
    root = tmp_path_factory.mktemp("init")
    ds = make_dataset(root, shakespeare_text[:20_000], seq_len=32, tokenizer=str(gpt2_dir))
    hf = root / "hf-a"
    shutil.copytree(hf_pair[0], hf)
    args = tiny_args(ds, root / "runs", "run_name=r", "parallelism=fsdp", "model.bias=true",
                     "model.gelu_approximate=tanh", "optimizer.lr=1e-30",
                     "save_interval=1ba", "eval_interval=1000ba", f"model.init_from=hf:{hf}")
    run_train([*args, "max_duration=1ba"], nproc=2)
    shutil.rmtree(hf)  # the HF cache was cleaned, the folder moved...
    run_train([*args, "max_duration=2ba"], nproc=2)
    return root / "runs" / "r"


@pytest.mark.slow
def test_init_from_trains_from_hf_weights_and_resumes_without_them(fsdp_init_run, hf_pair, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from evaluation.checkpoints import load_gpt
    from training.resume.init_from import load_hf_gpt

    ckpts = fsdp_init_run / "checkpoints"
    assert (ckpts / "ep0-ba1" / ".metadata").is_file() and (ckpts / "ep0-ba2" / ".metadata").is_file()
    a, b = (load_hf_gpt(str(p)).state_dict() for p in hf_pair)
    assert load_gpt(str(fsdp_init_run)).config.block_size == 64  # the HF model's n_positions, not the seq_len
    assert same_tensors(load_gpt(str(ckpts / "ep0-ba1")).state_dict(), a)  # started from a (lr=1e-30 keeps it)
    assert same_tensors(load_gpt(str(fsdp_init_run)).state_dict(), a)  # ba2 resumed ba1
    assert not same_tensors(a, b)
    dcp_to_torch_save(ckpts / "ep0-ba2", tmp_path / "full.pt")  # torch's own reader agrees with load_gpt's
    full = torch.load(tmp_path / "full.pt", weights_only=False)["state"]["model"]
    assert same_tensors({k.removeprefix("model."): v for k, v in full.items()}, a)


@pytest.mark.slow
def test_export_sharded_run_loads_in_transformers(fsdp_init_run, hf_pair, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evaluation.checkpoints import load_gpt

    out = tmp_path / "export"
    proc = run_script("export_hf.py", fsdp_init_run, out, timeout=120)
    assert proc.returncode == 0 and "tokenizer: " in proc.stdout, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no .partial left behind
    hf, tok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    assert hf.config.architectures == ["GPT2LMHeadModel"] and hf.config.eos_token_id == tok.eos_token_id == 50256
    idx = torch.tensor([tok.encode("First Citizen:\nBefore we proceed any further, hear me speak.")])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, load_gpt(str(fsdp_init_run))(idx), atol=1e-5, rtol=0)
    # HF a -> init_from -> sharded FSDP checkpoint (lr=1e-30) -> export: the very same tensors
    assert same_tensors(load_file(out / "model.safetensors"), load_file(hf_pair[0] / "model.safetensors"))


@pytest.mark.slow
def test_export_refuses_a_non_empty_folder_unless_overwrite(fsdp_init_run, tmp_path):
    from core.errors import HFError
    from evaluation.hf import export_hf

    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(HFError, match="not empty; pass --overwrite"):
        export_hf(str(fsdp_init_run), str(out))
    notes = export_hf(str(fsdp_init_run / "checkpoints" / "ep0-ba1"), str(out), overwrite=True)
    assert any("tokenizer" in n for n in notes) and (out / "model.safetensors").is_file()
    assert not (out / "keep.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
