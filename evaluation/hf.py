"""Hugging Face interop: GPT-2 weights in transformers' ``GPT2LMHeadModel`` format <-> gpt.py's :class:`GPT`.

The parameter names already match (nanoGPT kept OpenAI's); three things differ:

* transformers' GPT-2 uses ``Conv1D``, which stores ``c_attn`` / ``c_proj`` / ``c_fc`` weights as (in, out):
  they are transposed into ``nn.Linear``'s (out, in);
* gpt.py pads the tied wte / lm_head matrix to a multiple of 64 rows: zero rows are added on import and
  dropped on export (forward never predicts them);
* gpt.py can turn biases off; GPT-2's format always has them, so a ``bias=False`` model exports zero biases,
  which computes exactly the same function.

Anything else a GPT-2 config can say that gpt.py does not compute is refused (:func:`check_representable`).
transformers is imported lazily: a training run that never touches HF weights does not pay for it.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gpt import GPT, GPTConfig
from core.tokenizer import BYTES_EOS_ID, HFTokenizer
from evaluation.checkpoints import load_gpt, load_tokenizer_for
from core.errors import CheckpointError
from core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import GPT2Config

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # GELU, tanh approximation: gpt.py's nn.GELU("tanh")
LAYER_NORM_EPS = 1e-5  # torch's default, what gpt.py's nn.LayerNorm uses
WTE = "transformer.wte.weight"


def is_hf_folder(path: str | os.PathLike) -> bool:
    """True for a local folder saved by ``save_pretrained``: ``config.json`` plus a weights file (cheap: no
    transformers import, so callers can use it to pick a loader)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and any((p / f).is_file() for f in WEIGHT_FILES)


def load_hf_config(path_or_name: str) -> "GPT2Config":
    """The GPT2Config of a local folder (or an already cached hub name: we never download), checked to be one
    gpt.py can compute."""
    from transformers import AutoConfig, GPT2Config

    _check_exists(path_or_name)
    try:
        config = AutoConfig.from_pretrained(path_or_name, local_files_only=True)
    except (OSError, ValueError) as e:
        raise HFError(_not_found(path_or_name, e)) from None
    if not isinstance(config, GPT2Config):
        raise HFError(f"{path_or_name} is a {config.model_type!r} model; only GPT-2 (model_type 'gpt2') "
                      "checkpoints map onto gpt.py")
    check_representable(config, path_or_name)
    return config


def check_representable(config: "GPT2Config", where: str) -> None:
    """Refuse a GPT-2 variant gpt.py would silently compute differently. ``reorder_and_upcast_attn`` is
    accepted: it only changes the precision of the attention matmul (fp32 either way on CPU), not its result."""
    problems = []
    if config.activation_function not in ACTIVATIONS:
        problems.append(f"activation_function={config.activation_function!r} (gpt.py: {' or '.join(ACTIVATIONS)})")
    if config.layer_norm_epsilon != LAYER_NORM_EPS:
        problems.append(f"layer_norm_epsilon={config.layer_norm_epsilon} (gpt.py: {LAYER_NORM_EPS})")
    if config.n_inner is not None and config.n_inner != 4 * config.n_embd:
        problems.append(f"n_inner={config.n_inner} (gpt.py: 4 * n_embd = {4 * config.n_embd})")
    if not config.tie_word_embeddings:
        problems.append("tie_word_embeddings=False (gpt.py ties lm_head to wte)")
    if not config.scale_attn_weights:
        problems.append("scale_attn_weights=False (gpt.py scales attention by 1/sqrt(head size))")
    if config.scale_attn_by_inverse_layer_idx:
        problems.append("scale_attn_by_inverse_layer_idx=True (gpt.py does not scale by layer)")
    if getattr(config, "add_cross_attention", False):
        problems.append("add_cross_attention=True (gpt.py is decoder-only)")
    if getattr(config, "pruned_heads", None):
        problems.append("pruned_heads (gpt.py has the same number of heads in every layer)")
    if config.n_embd % config.n_head:
        problems.append(f"n_embd={config.n_embd} not divisible by n_head={config.n_head}")
    if problems:
        raise HFError(f"{where} cannot be represented by gpt.py: {'; '.join(problems)}")


def gpt_config_from_hf(config: "GPT2Config", dropout: float = 0.0) -> GPTConfig:
    """GPT2Config -> GPTConfig. Dropout is a training choice, not part of the weights, so it is not read from
    the HF config (GPT-2's 0.1 pdrops): the caller passes it (eval: irrelevant; training: model.dropout)."""
    return GPTConfig(block_size=config.n_positions, vocab_size=config.vocab_size, n_layer=config.n_layer,
                     n_head=config.n_head, n_embd=config.n_embd, dropout=dropout, bias=True)


def gpt_state_from_hf(hf_state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """A GPT2LMHeadModel state dict as gpt.py's: Conv1D weights transposed, vocab rows zero-padded, lm_head
    tied to wte, the causal-mask buffers (``attn.bias`` / ``attn.masked_bias``) dropped."""
    out = {}
    for key, value in hf_state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            continue
        if not key.startswith(("transformer.", "lm_head.")):
            key = "transformer." + key  # saved from a bare GPT2Model
        out[key] = (value.t() if key.endswith(CONV1D) else value).float().contiguous()
    wte = out[WTE]
    pad = wte.new_zeros(config.padded_vocab_size - wte.shape[0], wte.shape[1])
    out[WTE] = torch.cat([wte, pad])
    out["lm_head.weight"] = out[WTE]
    return out


def load_hf_gpt(path_or_name: str) -> GPT:
    """gpt.py's GPT (eval mode) with the weights of a local ``save_pretrained`` folder (config.json +
    model.safetensors or pytorch_model.bin) or an already cached hub name."""
    config = load_hf_config(path_or_name)
    model = GPT(gpt_config_from_hf(config))
    model.load_state_dict(gpt_state_from_hf(read_hf_state(path_or_name, config), model.config))
    return model.eval()


def read_hf_state(path_or_name: str, config: "GPT2Config") -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, read by transformers itself (safetensors or .bin, sharded or not, any prefix)."""
    from transformers import GPT2LMHeadModel

    try:
        hf = GPT2LMHeadModel.from_pretrained(path_or_name, config=config, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise HFError(f"cannot read the weights of {path_or_name}: {str(e).splitlines()[0]}") from None
    return hf.state_dict()


def init_config(init_from: str, overrides: dict[str, Any], seq_len: int, vocab_size: int) -> GPTConfig:
    """The GPTConfig of a run with ``model.init_from=hf:...``: the HF model's shape (block_size = n_positions,
    so an export keeps every position), checked against the dataset and the ``model.*`` overrides."""
    name = init_from.removeprefix("hf:")
    hf = load_hf_config(name)
    if vocab_size != hf.vocab_size:
        raise ConfigError(f"model.init_from={init_from}: the dataset's vocab_size is {vocab_size} but the model's is "
                          f"{hf.vocab_size}; convert the dataset with that model's tokenizer (convert_to_mds.py "
                          f"--tokenizer {name})")
    if seq_len > hf.n_positions:
        raise ConfigError(f"model.init_from={init_from}: the dataset's seq_len {seq_len} exceeds the model's "
                          f"n_positions {hf.n_positions}; convert the dataset with --seq-len {hf.n_positions} or less")
    config = gpt_config_from_hf(hf, dropout=overrides.get("dropout") or 0.0)
    _refuse_shape_overrides(init_from, config, overrides)
    return config


def resumed_init_config(init_from: str, recorded: GPTConfig, overrides: dict[str, Any]) -> GPTConfig:
    """The GPTConfig of a resumed ``init_from`` run: the shape the run recorded at its start (the checkpoint holds
    the weights), so resuming does not need the HF folder any more; the same overrides rules as at the start."""
    config = dataclasses.replace(recorded, dropout=overrides.get("dropout") or 0.0)
    _refuse_shape_overrides(init_from, config, overrides)
    return config


def _refuse_shape_overrides(init_from: str, config: GPTConfig, overrides: dict[str, Any]) -> None:
    shape = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "bias")}
    clash = [f"model.{k}={v} (the model has {shape[k]})" for k, v in overrides.items() if k in shape and v != shape[k]]
    if clash:
        raise ConfigError(f"model.init_from={init_from} fixes the model's shape, but {', '.join(clash)}; drop these "
                          "overrides")


def load_init_weights(model: GPT, init_from: str) -> None:
    """Copy the HF model's weights into a freshly built GPT (before any FSDP wrapping); a resumed run then
    overwrites them with its checkpoint, because Composer loads checkpoints after the model is built."""
    name = init_from.removeprefix("hf:")
    model.load_state_dict(gpt_state_from_hf(read_hf_state(name, load_hf_config(name)), model.config))


def _check_exists(path_or_name: str) -> None:
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise HFError(f"{path_or_name} has no {CONFIG_FILE}: not a Hugging Face model folder (save one with "
                          "save_pretrained, or export a run with export_hf.py)")
    elif path.exists() or path_or_name.startswith((".", "/", "~")):  # else maybe a hub name: try the cache
        raise HFError(f"Hugging Face model folder {path_or_name} does not exist; give a folder holding "
                      "config.json + model.safetensors")


def _not_found(name: str, e: Exception) -> str:
    return (f"{name} is neither a local Hugging Face model folder nor a model in the local Hugging Face cache "
            f"({type(e).__name__}); download it first (huggingface-cli download {name}) or give a folder holding "
            "config.json + model.safetensors")


def hf_config_from_gpt(config: GPTConfig, eos_id: int) -> "GPT2Config":
    """GPTConfig -> GPT2Config for ``GPT2LMHeadModel``; bos = eos as GPT-2 (our datasets separate documents with
    EOS only). The pdrops carry the run's dropout, which only matters if the export is fine-tuned."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, activation_function="gelu_new",
                      resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                      layer_norm_epsilon=LAYER_NORM_EPS, bos_token_id=eos_id, eos_token_id=eos_id,
                      tie_word_embeddings=True, architectures=["GPT2LMHeadModel"])


def hf_state_from_gpt(model: GPT, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """gpt.py's weights under GPT2LMHeadModel's names (``expected``: its state dict): Conv1D weights transposed,
    padded vocab rows dropped, and (``bias=False``) zero biases, which compute exactly what no bias does."""
    vocab = model.config.vocab_size
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach()
        if key in (WTE, "lm_head.weight"):
            value = value[:vocab]
        out[key] = (value.t() if key.endswith(CONV1D) else value).contiguous().clone()
    for key, value in expected.items():
        if key not in out and key.endswith(".bias") and not model.config.bias:
            out[key] = torch.zeros_like(value)
    return out


def to_hf_model(model: GPT, eos_id: int):
    """A transformers ``GPT2LMHeadModel`` computing the same logits as ``model``."""
    from transformers import GPT2LMHeadModel
    from transformers.modeling_utils import no_init_weights

    with no_init_weights():  # every weight is overwritten below
        hf = GPT2LMHeadModel(hf_config_from_gpt(model.config, eos_id))
    hf.load_state_dict(hf_state_from_gpt(model, hf.state_dict()), strict=True)
    hf.tie_weights()
    return hf.eval()


def bytes_hf_tokenizer():
    """The built-in 'bytes' tokenizer as a transformers one: byte-level BPE without merges, so id = byte value
    (0..255) exactly as ByteTokenizer, and 256 = ``<|endoftext|>`` (EOS and BOS)."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    eos = "<|endoftext|>"
    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    vocab[eos] = BYTES_EOS_ID
    tok = RustTokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos)


def export_hf(source: str, out_dir: str, overwrite: bool = False) -> list[str]:
    """Write ``source`` (run folder, checkpoint file or sharded folder, HF folder) as a folder that
    ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` load. Built in ``OUT.partial`` and renamed, so
    ``OUT`` is never half written. Returns what was written, for the user."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HFError(f"{out} is a file; give a folder path to export into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HFError(f"{out} is not empty; pass --overwrite to replace it, or choose another folder")
    model = load_gpt(source)
    tokenizer = load_tokenizer_for(source)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    to_hf_model(model, tokenizer.eos_id).save_pretrained(partial)  # config.json + model.safetensors
    notes = [f"model: GPT-2 {model.config.n_layer} layers x {model.config.n_embd}, vocab {model.config.vocab_size}, "
             f"n_positions {model.config.block_size}, bos/eos id {tokenizer.eos_id}"
             + ("" if model.config.bias else " (bias=False: exported as zero biases, same function)")]
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.hf.save_pretrained(partial)
        notes.append(f"tokenizer: {tokenizer.name} (transformers)")
    else:
        bytes_hf_tokenizer().save_pretrained(partial)
        notes.append("tokenizer: the built-in 'bytes' tokenizer, exported as an equivalent byte-level BPE without "
                     "merges (id = UTF-8 byte, 256 = <|endoftext|>)")
    _replace_dir(partial, out)
    return notes


def _replace_dir(new: Path, dest: Path) -> None:
    """Move ``new`` to ``dest``; an existing ``dest`` is renamed aside first and deleted only afterwards."""
    aside = dest.with_name(dest.name + ".old")
    if dest.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(dest, aside)
    os.replace(new, dest)
    shutil.rmtree(aside, ignore_errors=True)
