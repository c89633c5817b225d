"""``model.init_from=hf:PATH_OR_NAME``: a GPT shaped and initialised by a Hugging Face GPT-2 (transformers'
``GPT2LMHeadModel`` format), and the reading side of the format that generate.py / eval.py also use.

The parameter names already match (nanoGPT kept OpenAI's); three things differ:

* transformers' GPT-2 uses ``Conv1D``, which stores ``c_attn`` / ``c_proj`` / ``c_fc`` weights as (in, out):
  they are transposed into ``nn.Linear``'s (out, in);
* gpt.py pads the tied wte / lm_head matrix to a multiple of 64 rows: zero rows are added on import and
  dropped on export (forward never predicts them);
* gpt.py can turn biases off; GPT-2's format always has them, so a ``bias=False`` model exports zero biases,
  which computes exactly the same function (the export side: evaluation/hf.py).

Anything else a GPT-2 config can say that gpt.py does not compute is refused (:func:`check_representable`).
transformers is imported lazily: a training run that never touches HF weights does not pay for it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.errors import ConfigError, HFError
from gpt import GPT, GPTConfig

if TYPE_CHECKING:
    from transformers import GPT2Config


CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# HF's activation_function -> gpt.py's gelu_approximate: GELU's tanh approximation (GPT-2's), or the exact erf form
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
HF_GELU = {"tanh": "gelu_new", "none": "gelu"}  # what an export writes for each
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
                     n_head=config.n_head, n_embd=config.n_embd, dropout=dropout, bias=True,
                     gelu_approximate=ACTIVATIONS[config.activation_function])


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
    shape = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "bias", "gelu_approximate")}
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
