"""The tokenizer contract conversion and training rely on: ids, EOS, byte lengths, and the save → load round trip."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import DataError, TokenizerError
from core.tokenizer import ByteTokenizer, char_tokenizer, load_tokenizer, token_dtype

TEXTS = [
    "Hello, world!",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    "naïve café — déjà vu, Straße, 東京, Ελληνικά, 🙂🚀",
    "  leading spaces\tand\ttabs\r\nand CRLF  ",
    "a literal <|endoftext|> inside a document",
]


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    return load_tokenizer(str(gpt2_dir))


def test_gpt2_basics(gpt2):
    assert (gpt2.kind, gpt2.vocab_size, gpt2.eos_id) == ("hf", 50257, 50256)
    assert token_dtype(gpt2.vocab_size) == "uint16"
    assert gpt2.encode("Hello world") == [15496, 995]  # the real GPT-2 ids


def test_literal_endoftext_stays_text(gpt2):
    text = "before <|endoftext|> after"
    ids = gpt2.encode(text)
    assert gpt2.eos_id not in ids
    assert gpt2.decode(ids) == text
    assert all(gpt2.eos_id not in ids for ids in gpt2.encode_batch([text, "<|endoftext|>"]))


@pytest.mark.parametrize("text", TEXTS)
def test_gpt2_token_bytes_sum_to_utf8_length(gpt2, text):
    table = gpt2.token_bytes()
    ids = gpt2.encode(text)
    assert int(table[ids].sum()) == len(text.encode("utf-8"))
    assert gpt2.decode(ids) == text


def test_gpt2_token_bytes_table(gpt2):
    table = gpt2.token_bytes()
    assert table.shape == (gpt2.vocab_size,)
    assert table[gpt2.eos_id] == 0
    assert (np.delete(table, gpt2.eos_id) >= 1).all()


def test_bytes_tokenizer():
    tok = load_tokenizer("bytes")
    assert isinstance(tok, ByteTokenizer)
    assert (tok.vocab_size, tok.eos_id, token_dtype(tok.vocab_size)) == (257, 256, "uint16")
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tok.decode(ids + [tok.eos_id]) == text
        assert int(tok.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    assert tok.token_bytes()[tok.eos_id] == 0


def test_chars_tokenizer_is_nanogpts_shakespeare_char():
    """ids as nanoGPT's prepare.py gives them (the sorted alphabet's positions), EOS last, exact byte lengths."""
    tok = char_tokenizer("".join(TEXTS))
    chars = sorted(set("".join(TEXTS)))
    assert (tok.kind, tok.name, tok.vocab_size, tok.eos_id) == ("hf", "chars", len(chars) + 1, len(chars))
    stoi = {ch: i for i, ch in enumerate(chars)}
    table = tok.token_bytes()
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == [stoi[ch] for ch in text]  # a literal <|endoftext|> stays its 13 characters
        assert tok.decode(ids + [tok.eos_id]) == text + "<|endoftext|>"
        assert int(table[ids].sum()) == len(text.encode("utf-8"))  # é: 2 bytes, 🙂: 4
    assert table[tok.eos_id] == 0
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    assert char_tokenizer("\u2581a").token_bytes().tolist() == [1, 3, 0]  # SentencePiece's mark is just a character


def test_chars_tokenizer_refuses_a_new_character():
    tok = char_tokenizer("abc ")
    with pytest.raises(TokenizerError, match="characters not in its vocabulary: 'dz'"):
        tok.encode("a bad cz")
    with pytest.raises(TokenizerError, match="found no text in the inputs"):
        char_tokenizer("")
    with pytest.raises(TokenizerError, match="convert_to_mds.py --tokenizer chars"):
        load_tokenizer("chars")


@pytest.mark.parametrize("spec", ["bytes", "gpt2", "chars"])
def test_save_load_round_trip(spec, gpt2_dir, tmp_path):
    """What conversion saves into DIR/tokenizer rebuilds the same tokenizer for training."""
    tok = {"gpt2": lambda: load_tokenizer(str(gpt2_dir)), "bytes": lambda: load_tokenizer("bytes"),
           "chars": lambda: char_tokenizer("".join(TEXTS))}[spec]()
    tok.save(tmp_path / "tokenizer")
    back = load_tokenizer(str(tmp_path / "tokenizer"))
    assert (back.kind, back.vocab_size, back.eos_id) == (tok.kind, tok.vocab_size, tok.eos_id)
    assert back.identity()["sha256"] == tok.identity()["sha256"]
    assert np.array_equal(back.token_bytes(), tok.token_bytes())
    assert back.encode_batch(TEXTS) == tok.encode_batch(TEXTS)
    assert back.eos_id not in back.encode("x <|endoftext|> y")


@pytest.mark.parametrize("spec, message", [
    ("no-such-tokenizer-xyz", "unknown tokenizer 'no-such-tokenizer-xyz': it is not 'bytes', not a local folder"),
    ("./missing_dir", r"tokenizer path '\./missing_dir' is not a directory"),
    ("/nonexistent/tok", "tokenizer path '/nonexistent/tok' is not a directory"),
])
def test_unknown_tokenizer(spec, message):
    with pytest.raises(TokenizerError, match=message) as e:
        load_tokenizer(spec)
    assert issubclass(e.type, DataError)
    assert "bytes" in str(e.value)  # the message names a way out


def test_folder_without_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path))
