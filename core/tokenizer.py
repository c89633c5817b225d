"""The one place that knows a tokenizer's vocab size, EOS id and each token's byte length.

Conversion encodes with it, training reads vocab size / EOS / byte lengths back from it (via the copy saved next
to the shards), and generation decodes with it. Two kinds:

* ``bytes``: built in, ids 0..255 are the UTF-8 bytes, 256 is EOS. Needs no files.
* ``hf``: a Hugging Face fast tokenizer: a hub name (must already be cached: we never download), or a local
  directory holding ``tokenizer.json`` or GPT-2 BPE files ``vocab.json`` + ``merges.txt``. The ``chars`` tokenizer
  (nanoGPT's shakespeare_char: one token per character of the corpus, :func:`char_tokenizer`) is one of these.

Encoding backends (conversion's ``--tokenizer-backend``): the HF tokenizer is the reference; GPT-2's BPE itself
(recognised by the hash of its canonical ``tokenizer.json``) can also be encoded by ``tiktoken``, 3-4x faster, built
from the same vocab and merges (:func:`tiktoken_gpt2`), with exactly the same ids.

Document text is always encoded as ordinary text: a literal ``<|endoftext|>`` inside a document stays text.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from core.errors import TokenizerError

BYTES_EOS_ID = 256
GPT2 = "gpt2"
CHARS = "chars"  # built by conversion from the corpus's characters (conversion.convert), not loadable by name
CHARS_EOS = "<|endoftext|>"
GPT2_FILES = Path(__file__).resolve().parent.parent / "assets" / "gpt2"  # shipped: MIT, see assets/README.md
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


class Tokenizer:
    """Interface shared by both kinds."""

    kind: str
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: how many bytes of text each token stands for (EOS and other specials: 0)."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What the metadata records: enough to tell two tokenizers apart."""
        raise NotImplementedError

    def save(self, directory: str | os.PathLike) -> None:
        """Write what :func:`load_tokenizer` needs to rebuild this tokenizer from ``directory``."""
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens, plus EOS = 256. Exact bits/byte: every token is one byte."""

    kind = "bytes"
    name = "bytes"
    vocab_size = 257
    eos_id = BYTES_EOS_ID

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        table = np.ones(self.vocab_size, dtype=np.int64)
        table[self.eos_id] = 0
        return table

    def identity(self) -> dict:
        return {"kind": "bytes", "name": "bytes", "sha256": None}

    def save(self, directory: str | os.PathLike) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "bytes_tokenizer.json").write_text(json.dumps(self.identity()) + "\n")


class HFTokenizer(Tokenizer):
    """A transformers fast tokenizer with special tokens encoded as plain text."""

    kind = "hf"

    def __init__(self, hf_tokenizer, name: str):
        self.hf = hf_tokenizer
        self.name = name
        # A literal "<|endoftext|>" in a document must not become the EOS id.
        self.hf.backend_tokenizer.encode_special_tokens = True
        self.vocab_size = len(self.hf)
        self.eos_id = _find_eos_id(self.hf, name)

    def encode(self, text: str) -> list[int]:
        try:  # encode, not encode_batch: a batch marks the Rust thread pool used (a warning at a later fork)
            return self.hf.backend_tokenizer.encode(text, add_special_tokens=False).ids
        except Exception as e:  # tokenizers raises a bare Exception, e.g. a chars tokenizer given a new character
            raise self._unencodable([text], e) from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        try:
            encs = self.hf.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
        except Exception as e:  # as in encode
            raise self._unencodable(texts, e) from None
        return [e.ids for e in encs]

    def _unencodable(self, texts: Sequence[str], error: Exception) -> TokenizerError:
        vocab = self.hf.get_vocab()
        unknown = sorted({ch for text in texts for ch in text} - vocab.keys())
        which = f"characters not in its vocabulary: {''.join(unknown[:20])!r}; " if unknown else ""
        return TokenizerError(f"tokenizer {self.name!r} cannot encode this text ({error}): {which}"
                              "use text written only in the tokenizer's vocabulary, or another tokenizer")

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        return _hf_token_bytes(self.hf, self.vocab_size)

    def identity(self) -> dict:
        return {"kind": "hf", "name": self.name, "sha256": _tokenizer_sha256(self.hf)}

    def save(self, directory: str | os.PathLike) -> None:
        self.hf.save_pretrained(str(directory))


def _find_eos_id(hf, name: str) -> int:
    if hf.eos_token_id is not None:
        return int(hf.eos_token_id)
    vocab = hf.get_vocab()
    for tok in _EOS_CANDIDATES:
        if tok in vocab:
            return int(vocab[tok])
    raise TokenizerError(
        f"tokenizer {name!r} has no end-of-text token (looked for eos_token and {', '.join(_EOS_CANDIDATES)}); "
        "use a tokenizer that defines one, or --tokenizer bytes"
    )


def _tokenizer_sha256(hf) -> str:
    """Hash of the canonical tokenizer.json: same vocab, merges and normalisation give the same hash."""
    blob = hf.backend_tokenizer.to_str()
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable bytes stand for themselves, the other 68 for
    chr(256 + n) in byte order (as GPT-2's ``bytes_to_unicode``; here so that workers need not import
    transformers)."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    rest = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(rest)}}


def _hf_token_bytes(hf, vocab_size: int) -> np.ndarray:
    """Byte length per token, read off the token strings (byte-level BPE exactly; byte-fallback and ▁ too)."""
    byte_decoder_ = byte_decoder()
    decoder_type = json.dumps(json.loads(hf.backend_tokenizer.to_str()).get("decoder") or {})
    byte_level = "ByteLevel" in decoder_type
    metaspace = "Metaspace" in decoder_type or "\\u2581" in decoder_type  # SentencePiece's \u2581 decodes to " "
    special = set(hf.all_special_ids) | set(hf.added_tokens_decoder.keys())
    table = np.zeros(vocab_size, dtype=np.int64)
    for i, tok in enumerate(hf.convert_ids_to_tokens(list(range(vocab_size)))):
        if tok is None or i in special:
            continue
        if byte_level and all(ch in byte_decoder_ for ch in tok):
            table[i] = len(tok)  # each char of a byte-level token is exactly one byte
        elif _BYTE_FALLBACK.match(tok):
            table[i] = 1
        else:
            table[i] = len((tok.replace("\u2581", " ") if metaspace else tok).encode("utf-8"))
    return table


def load_tokenizer(spec: str) -> Tokenizer:
    """Resolve ``--tokenizer``: 'bytes', 'gpt2' (the BPE files shipped in ``assets/gpt2``: offline, no Hugging Face
    cache needed), a local directory, or an (already cached) HF hub name."""
    if spec == "bytes":
        return ByteTokenizer()
    if spec == GPT2:
        return _gpt2_bpe(GPT2_FILES, GPT2)
    if spec == CHARS:
        raise TokenizerError("the 'chars' tokenizer is built from a corpus by convert_to_mds.py --tokenizer chars; "
                             "to use one, give the tokenizer/ folder of a dataset converted with it")
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_dir(path)
    if path.exists() or spec.startswith((".", "/", "~")):
        raise TokenizerError(
            f"tokenizer path {spec!r} is not a directory; give a folder holding tokenizer.json or "
            "vocab.json + merges.txt, a Hugging Face tokenizer name, or 'bytes'"
        )
    return _load_hub_name(spec)


def _load_dir(path: Path) -> Tokenizer:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "bytes_tokenizer.json").exists():
        return ByteTokenizer()
    try:
        if (path / "tokenizer_config.json").exists():
            return HFTokenizer(AutoTokenizer.from_pretrained(str(path), use_fast=True), str(path))
        if (path / "tokenizer.json").exists():
            return HFTokenizer(PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json")), str(path))
        if (path / "vocab.json").exists() and (path / "merges.txt").exists():
            return _gpt2_bpe(path, str(path))
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot load the tokenizer in {path}: {e}") from None
    raise TokenizerError(
        f"{path} holds no tokenizer: expected tokenizer.json, or GPT-2 BPE files vocab.json + merges.txt"
    )


def char_tokenizer(alphabet: Iterable[str]) -> Tokenizer:
    """nanoGPT's shakespeare_char as a tokenizer: each character of ``alphabet`` (a corpus's characters) is one
    token, with nanoGPT's ids (the sorted characters' positions), and EOS ``<|endoftext|>`` is the last id. Built
    as a Hugging Face fast tokenizer (single characters, WordLevel), so saving, loading, HF export and conversion's
    workers treat it as any ``hf`` one. On a small corpus its vocab is ~65 rows where ``bytes`` has 257: the
    output layer and softmax of a small model shrink with it (bits/byte stay exact: each token's byte length is
    its character's UTF-8 length)."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as RustTokenizer
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(alphabet))
    if not chars:
        raise TokenizerError("--tokenizer chars found no text in the inputs to build its vocabulary from; "
                             "give inputs that hold text")
    vocab = {ch: i for i, ch in enumerate(chars)}
    vocab[CHARS_EOS] = len(chars)
    rust = RustTokenizer(models.WordLevel(vocab, unk_token=None))
    rust.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    rust.decoder = decoders.Fuse()  # tokens join with nothing between them
    rust.add_special_tokens([AddedToken(CHARS_EOS, special=True)])
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, eos_token=CHARS_EOS, clean_up_tokenization_spaces=False)
    return HFTokenizer(hf, CHARS)


def _gpt2_bpe(folder: Path, name: str) -> Tokenizer:
    """GPT-2's byte-level BPE from a folder holding its ``vocab.json`` + ``merges.txt``."""
    from transformers import GPT2TokenizerFast

    hf = GPT2TokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    return HFTokenizer(hf, name)


def _load_hub_name(name: str) -> Tokenizer:
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(name, use_fast=True, local_files_only=True)
    except (OSError, ValueError) as e:
        raise TokenizerError(
            f"unknown tokenizer {name!r}: it is not 'bytes', not a local folder, and not a Hugging Face tokenizer "
            f"in the local cache ({type(e).__name__}). Give a folder with tokenizer.json or vocab.json + merges.txt, "
            "or download it first (huggingface-cli download NAME)"
        ) from None
    if not hf.is_fast:
        raise TokenizerError(f"tokenizer {name!r} has no fast (Rust) version; convert it to tokenizer.json first")
    return HFTokenizer(hf, name)


TOKENIZER_BACKENDS = ("auto", "hf", "tiktoken")
CHUNK_CHARS = 1 << 20  # a longer document is encoded in slices of about this many characters
# a space between two non-space characters: GPT-2's pre-tokenizer always starts a piece there (no piece reaches past
# a non-space character into a space; " ?X+" takes one space at its start). Python's \S is narrower than the
# tokenizer regex's (str.isspace holds for every Unicode White_Space character), so a cut here is a cut there.
_SAFE_CUT = re.compile(r"(?<=\S) (?=\S)")


def resolve_backend(tok: Tokenizer, backend: str) -> str:
    """The encoder conversion runs: ``bytes`` for the bytes tokenizer; for GPT-2's BPE ``tiktoken`` unless ``hf``
    is asked for; ``hf`` for every other tokenizer (``tiktoken`` asked for one of those is refused)."""
    if backend not in TOKENIZER_BACKENDS:
        raise TokenizerError(f"--tokenizer-backend {backend!r} is not one of {', '.join(TOKENIZER_BACKENDS)}")
    gpt2 = is_gpt2_bpe(tok)
    if backend == "tiktoken" and not gpt2:
        raise TokenizerError(f"--tokenizer-backend tiktoken encodes GPT-2's BPE only, and tokenizer {tok.name!r} is "
                             "another one; use --tokenizer-backend auto (or hf)")
    if tok.kind == "bytes":
        return "bytes"
    return "tiktoken" if gpt2 and backend != "hf" else "hf"


def gpt2_slices(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` cut into slices of about ``size`` characters, only where GPT-2's pre-tokenizer starts a piece
    anyway, so that encoding the slices one by one gives the ids of the whole text. Bounds what one encode call
    holds (a 100 MB one-line document is ~25M ids: a Python list of 0.9 GB); a text with no such place stays whole."""
    slices, start = [], 0
    while len(text) - start > size:
        cut = _SAFE_CUT.search(text, start + size)
        if cut is None:
            break
        slices.append(text[start:cut.start()])
        start = cut.start()
    slices.append(text[start:])
    return slices


def is_gpt2_bpe(tok: Tokenizer) -> bool:
    """Whether ``tok`` is GPT-2's BPE exactly: its canonical tokenizer.json hashes as the shipped files' do."""
    return tok.kind == "hf" and tok.vocab_size == 50257 and tok.identity()["sha256"] == _gpt2_sha256()


@functools.cache
def _gpt2_sha256() -> str:
    return load_tokenizer(GPT2).identity()["sha256"]


def tiktoken_gpt2(tokenizer_json: str, eos_id: int):
    """A ``tiktoken.Encoding`` of a GPT-2-style byte-level BPE, built from the tokenizer's own vocab and merges
    (nothing downloaded). tiktoken merges by the rank of the merged token, HF by the rank of the merge: the two
    agree when every merge's result has id 256 + its line in merges.txt, as in GPT-2's files. That is checked here,
    so an Encoding that could give other ids than HF's is never built."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    model = json.loads(tokenizer_json)["model"]
    decode = byte_decoder()

    def as_bytes(token: str) -> bytes:
        return bytes(decode[ch] for ch in token)

    ranks = {as_bytes(t): i for t, i in model["vocab"].items() if i != eos_id}
    for line, merge in enumerate(model["merges"]):
        first, second = merge.split(" ") if isinstance(merge, str) else merge
        if ranks.get(as_bytes(first) + as_bytes(second)) != 256 + line:
            raise TokenizerError(f"merge {line} ({first!r} + {second!r}) is not token {256 + line}: not GPT-2's "
                                 "BPE layout; use --tokenizer-backend hf")
    eos = next(t for t, i in model["vocab"].items() if i == eos_id)
    return tiktoken.Encoding("gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={eos: eos_id})


def token_dtype(vocab_size: int) -> str:
    """Smallest unsigned dtype holding every id."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"
