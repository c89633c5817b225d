#!/usr/bin/env python
"""Continue a prompt with a trained GPT: a run folder, a checkpoint file, or a Hugging Face (transformers) folder.

    python generate.py runs/tiny --prompt "def " --max-new-tokens 200 --temperature 0.8 --top-k 40 --seed 1
    python generate.py hf/gpt2 --prompt "Hello" --temperature 0 --json

Prints the prompt and its continuation (``--json``: one JSON object with the token ids too). Generation uses
gpt.py's KV cache; ``--temperature 0`` is greedy. It stops at the tokenizer's end-of-text token unless
``--ignore-eos``. Bad input is reported as one ``error: ...`` line on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
from dataclasses import asdict, dataclass

import torch

from core.cli import ScriptParser, reports_errors
from core.errors import PromptError
from core.tokenizer import Tokenizer
from evaluation.checkpoints import load_gpt, load_tokenizer_for, pick_device
from gpt import GPT
from sampling import generate as generate_ids


@dataclass
class Completion:
    prompt: str
    prompt_ids: list[int]  # what the model was given (the EOS id for an empty prompt)
    new_ids: list[int]  # what it generated, an end-of-text id included
    text: str  # prompt + decoded continuation (without the end-of-text token)
    seed: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ScriptParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="SOURCE",
                   help="a run folder (its latest checkpoint), a checkpoint file, or a transformers GPT-2 folder")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="text to continue ('' starts a new document)")
    p.add_argument("--max-new-tokens", type=int, default=100, metavar="N", help="tokens to add (default 100)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample from the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="sample from the smallest set of tokens whose probability adds up to P (0 < P <= 1)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="same seed, same text (default: random)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past the end-of-text token")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object: prompt, ids, text, seed")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Fail before loading anything, naming the flag and its valid range."""
    if args.max_new_tokens < 0:
        raise PromptError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise PromptError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise PromptError(f"--top-k must be >= 1, got {args.top_k}; leave it out to sample from every token")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise PromptError(f"--top-p must be in (0, 1], got {args.top_p}; 1 (or leaving it out) keeps every token")
    args.device = pick_device(args.device)


def encode_prompt(model: GPT, tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids; refused when the model could not see all of it (generate would crop it silently)."""
    ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
    block_size = model.config.block_size
    if len(ids) > block_size:
        raise PromptError(f"the prompt is {len(ids)} tokens but the model reads at most {block_size}; "
                          f"shorten it to its last {block_size} tokens or less")
    if max(ids) >= model.config.vocab_size:
        raise PromptError(f"the tokenizer gives id {max(ids)} but the model's vocab has {model.config.vocab_size} "
                          "ids: the tokenizer does not belong to this model")
    return ids


def complete(model: GPT, tokenizer: Tokenizer, args: argparse.Namespace) -> Completion:
    """Encode, generate (seeded by a private generator), decode."""
    device = next(model.parameters()).device
    ids = encode_prompt(model, tokenizer, args.prompt)
    seed = secrets.randbits(63) if args.seed is None else args.seed
    out = generate_ids(
        model, torch.tensor([ids], device=device), args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, generator=torch.Generator(device).manual_seed(seed),
        eos_id=None if args.ignore_eos else tokenizer.eos_id,
    )
    new_ids = out[0, len(ids):].tolist()
    shown = new_ids[:-1] if new_ids[-1:] == [tokenizer.eos_id] and not args.ignore_eos else new_ids
    return Completion(args.prompt, ids, new_ids, args.prompt + tokenizer.decode(shown), seed)


@reports_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    model = load_gpt(args.source).to(args.device).eval()
    tokenizer = load_tokenizer_for(args.source)
    result = complete(model, tokenizer, args)
    print(json.dumps(asdict(result)) if args.json else result.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
