"""GPT-2's BPE through tiktoken (``--tokenizer-backend``): the same ids as the HF tokenizer, the reference, on text
chosen to find a difference, and the same dataset bytes whichever backend (and however many workers) ran."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from core.errors import TokenizerError
from core.tokenizer import is_gpt2_bpe, load_tokenizer, resolve_backend, tiktoken_gpt2
from tests.helpers import one_error, run_convert

TRICKY = [
    "Hello world! It's a test: don't, won't, they're, I'm, we've, she'll, he'd.",
    "Apostrophes: it’s, ’s, 'S, 'LL, ''s, '''",
    "日本語のテキストと中文文本，以及한국어 텍스트。",
    "emoji 🤖🤖 👩‍👩‍👧‍👦 🇫🇷 and ✨sparkles✨, ZWJ\u200dZWNJ\u200c, BOM\ufeff",
    "combining: e\u0301 a\u0308 n\u0303; RTL: שלום עולם مرحبا بالعالم",
    "numbers 1234567890 3.14159 1,000,000 ١٢٣ ½ ²",
    "literal <|endoftext|> inside a document, and <|endoftext|><|endoftext|>",
    " leading space, trailing space ",
    "   \t\t  \n\n\n\r\n   mixed whitespace runs   \u00a0\u2003\u3000 ",
    " " * 5000 + "x" + "\n" * 3000 + "y" + "\t" * 2000,
    "a" * 20000,
    "def f(x):\n    return {'k': [x ** 2 for x in range(10)]}  # code\n",
    "",
    "\x00\x01\x7f control \u0085 \u2028 \u2029 chars",
]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    """Random code points from many scripts and planes (valid Unicode only: no lone surrogates)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x9, 0xD)]
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 400)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)) if rng.random() > 0.2 else " " * rng.randint(1, 4))
        texts.append("".join(chars))
    return texts


@pytest.fixture(scope="module")
def gpt2():
    tok = load_tokenizer("gpt2")
    return tok, tiktoken_gpt2(tok.hf.backend_tokenizer.to_str(), tok.eos_id)


def test_tiktoken_gives_the_hf_ids(gpt2, shakespeare_text):
    tok, enc = gpt2
    texts = TRICKY + _random_texts(300) + [shakespeare_text[:300_000]]  # the last: one long document
    for text in texts:
        assert enc.encode_ordinary(text) == tok.encode(text), text[:80]
    assert enc.encode_ordinary("<|endoftext|>") != [tok.eos_id]  # a literal EOS in a document stays text


def test_only_gpt2s_bpe_goes_through_tiktoken(gpt2, gpt2_dir, tmp_path):
    tok, _ = gpt2
    assert resolve_backend(tok, "auto") == "tiktoken" and resolve_backend(tok, "hf") == "hf"
    folder = load_tokenizer(str(gpt2_dir))  # the same files in a folder of the user's: recognised by content
    assert is_gpt2_bpe(folder) and resolve_backend(folder, "auto") == "tiktoken"
    assert resolve_backend(load_tokenizer("bytes"), "auto") == "bytes"
    with pytest.raises(TokenizerError, match="tiktoken encodes GPT-2's BPE only, and tokenizer 'bytes' is another"):
        resolve_backend(load_tokenizer("bytes"), "tiktoken")
    # a BPE with GPT-2's layout but another merge order: not GPT-2's, so auto keeps HF; building it refuses
    vocab = json.loads((gpt2_dir / "vocab.json").read_text())
    merges = (gpt2_dir / "merges.txt").read_text().splitlines()
    merges[1], merges[2] = merges[2], merges[1]  # line 0 is the "#version" header
    other = tmp_path / "other"
    other.mkdir()
    (other / "vocab.json").write_text(json.dumps(vocab))
    (other / "merges.txt").write_text("\n".join(merges) + "\n")
    swapped = load_tokenizer(str(other))
    assert not is_gpt2_bpe(swapped) and resolve_backend(swapped, "auto") == "hf"
    with pytest.raises(TokenizerError, match="merge 0 .* is not token 256: not GPT-2's BPE layout"):
        tiktoken_gpt2(swapped.hf.backend_tokenizer.to_str(), swapped.eos_id)


def _corpus(path: Path, shakespeare_text: str) -> Path:
    paragraphs = [p for p in shakespeare_text.split("\n\n") if p.strip()][:1500]
    one_line = shakespeare_text.replace("\n", " ") * 2  # 2.2M characters: encoded in slices by both backends
    docs = paragraphs + TRICKY + _random_texts(200, seed=1) + [one_line]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_the_dataset_is_the_same_bytes_whichever_backend_ran(tmp_path, shakespeare_text):
    src = _corpus(tmp_path / "docs.jsonl", shakespeare_text)
    outs = {}
    for name, backend, workers in [("hf", "hf", "1"), ("tt", "tiktoken", "1"), ("auto2", "auto", "2")]:
        outs[name] = tmp_path / name
        run_convert(src, "--out", outs[name], "--tokenizer", "gpt2", "--seq-len", "64", "--val-fraction", "0.1",
                    "--tokenizer-backend", backend, "--workers", workers, "--no-progress")
    metas = {n: json.loads((o / "metadata.json").read_text()) for n, o in outs.items()}
    assert [m["source"]["tokenizer_backend"] for m in metas.values()] == ["hf", "tiktoken", "tiktoken"]
    files = {n: _files(o) for n, o in outs.items()}
    for name in ("tt", "auto2"):
        assert files[name].keys() == files["hf"].keys()
        differ = [f for f in files["hf"] if files[name][f] != files["hf"][f]]
        assert differ == ["metadata.json"], differ  # shards, indexes, tokenizer: byte for byte
        without = [{**m, "source": {k: v for k, v in m["source"].items() if k != "tokenizer_backend"}}
                   for m in (metas[name], metas["hf"])]
        assert without[0] == without[1]  # and the metadata, but for the record of which encoder ran
    assert metas["hf"]["splits"]["train"]["samples"] > 100
    again = run_convert(src, "--out", outs["hf"], "--tokenizer", "gpt2", "--seq-len", "64", "--val-fraction", "0.1",
                        "--tokenizer-backend", "tiktoken", "--no-progress")  # the same output: nothing to redo
    assert "already converted with these arguments; nothing to do" in again.stdout


def test_forcing_tiktoken_on_another_tokenizer_is_one_error_line(tmp_path, shakespeare_text):
    src = _corpus(tmp_path / "docs.jsonl", shakespeare_text)
    proc = run_convert(src, "--out", tmp_path / "out", "--tokenizer", "bytes", "--seq-len", "64",
                       "--tokenizer-backend", "tiktoken")
    one_error(proc, "--tokenizer-backend tiktoken encodes GPT-2's BPE only", "use --tokenizer-backend auto")
    assert not (tmp_path / "out").exists()  # refused before anything was written


LONG = [
    "word " * 3000,
    "one  two   three\tfour\nfive \n six seven" * 500,  # cuts only before " seven"
    ("x" * 700 + " ") * 40 + "y" * 5000,   # long words, and a tail with nowhere to cut
    " " + "a b " * 2000 + "   ",
    "日本語 テキスト 🤖 emoji's, don't " * 400,
]


@pytest.mark.parametrize("backend", ["hf", "tiktoken"])
def test_a_long_document_in_slices_gives_the_ids_of_the_whole(gpt2, backend):
    from core.tokenizer import gpt2_slices

    tok, enc = gpt2
    encode = tok.encode if backend == "hf" else enc.encode_ordinary
    for text in LONG:
        slices = gpt2_slices(text, size=50)
        assert "".join(slices) == text and len(slices) > 5
        assert [i for s in slices for i in encode(s)] == encode(text), text[:60]
    assert gpt2_slices("z" * 500, size=50) == ["z" * 500]  # no safe place: whole
