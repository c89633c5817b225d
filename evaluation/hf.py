"""Export to Hugging Face: gpt.py's weights as transformers' ``GPT2LMHeadModel``, with the run's tokenizer.

The parameter names already match (nanoGPT kept OpenAI's); three things differ:

* transformers' GPT-2 uses ``Conv1D``, which stores ``c_attn`` / ``c_proj`` / ``c_fc`` weights as (in, out):
  they are transposed into ``nn.Linear``'s (out, in);
* gpt.py pads the tied wte / lm_head matrix to a multiple of 64 rows: zero rows are added on import and
  dropped on export (forward never predicts them);
* gpt.py can turn biases off; GPT-2's format always has them, so a ``bias=False`` model exports zero biases,
  which computes exactly the same function.

The reading side (an HF folder into gpt.py: ``init_from``, generate.py, eval.py) is training/resume/init_from.py.
transformers is imported lazily: a training run that never touches HF weights does not pay for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from core.errors import HFError
from core.files import built_then_swapped
from core.tokenizer import BYTES_EOS_ID, HFTokenizer
from evaluation.checkpoints import load_gpt, load_tokenizer_for
from gpt import GPT, GPTConfig
from training.resume.init_from import CONV1D, HF_GELU, LAYER_NORM_EPS, WTE

if TYPE_CHECKING:
    from transformers import GPT2Config


def hf_config_from_gpt(config: GPTConfig, eos_id: int) -> "GPT2Config":
    """GPTConfig -> GPT2Config for ``GPT2LMHeadModel``; bos = eos as GPT-2 (our datasets separate documents with
    EOS only). The pdrops carry the run's dropout, which only matters if the export is fine-tuned."""
    from transformers import GPT2Config

    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head,
                      activation_function=HF_GELU[config.gelu_approximate],
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
    if getattr(model.config, "arch", "gpt2") != "gpt2":
        raise HFError(f"{source} is a model.arch={model.config.arch} run: Hugging Face's GPT-2 has no rotary "
                      "positions, QK-norm, softcap or the other changes, so it cannot hold it; eval.py and "
                      "generate.py read the run as it is")
    tokenizer = load_tokenizer_for(source)
    notes = [f"model: GPT-2 {model.config.n_layer} layers x {model.config.n_embd}, vocab {model.config.vocab_size}, "
             f"n_positions {model.config.block_size}, bos/eos id {tokenizer.eos_id}"
             + ("" if model.config.bias else " (bias=False: exported as zero biases, same function)")]
    with built_then_swapped(out) as partial:
        to_hf_model(model, tokenizer.eos_id).save_pretrained(partial)  # config.json + model.safetensors
        if isinstance(tokenizer, HFTokenizer):
            tokenizer.hf.save_pretrained(partial)
            notes.append(f"tokenizer: {tokenizer.name} (transformers)")
        else:
            bytes_hf_tokenizer().save_pretrained(partial)
            notes.append("tokenizer: the built-in 'bytes' tokenizer, exported as an equivalent byte-level BPE "
                         "without merges (id = UTF-8 byte, 256 = <|endoftext|>)")
    return notes
