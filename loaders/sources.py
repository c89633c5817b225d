"""Where documents come from: input paths/globs → files → a stream of :class:`Document`.

Every file kind has one reader, registered by file-name suffix (:func:`register_reader`), so a later version adds
``.jsonl.gz`` or parquet by registering a function, not by editing the walk. Readers stream: a ``.jsonl(.zst)``
file is never held whole in memory (a ``.txt`` file is one document, so it is). Every problem with an input is
raised as :class:`~loaders.errors.InputError` naming the file (and line) and the fix.
"""
from __future__ import annotations

import glob
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from loaders.errors import InputError

_GLOB_CHARS = frozenset("*?[")
_ZST_READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Document:
    """One document's text and where it came from (``line`` is 1-based, None for a whole-file document)."""

    text: str
    path: Path
    line: int | None = None

    @property
    def where(self) -> str:
        """``path:line`` for error messages."""
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


Reader = Callable[[Path, str], Iterator[Document]]
_READERS: dict[str, Reader] = {}


def register_reader(suffix: str, reader: Reader) -> None:
    """Make files whose name ends with ``suffix`` (e.g. ``.jsonl.gz``) readable by ``reader(path, text_key)``."""
    _READERS[suffix.lower()] = reader


def supported_suffixes() -> list[str]:
    return sorted(_READERS)


def reader_for(path: Path) -> Reader | None:
    """The reader of the longest registered suffix that ends ``path``'s name (``.jsonl.zst`` beats ``.zst``)."""
    name = path.name.lower()
    matches = [s for s in _READERS if name.endswith(s) and len(name) > len(s)]
    return _READERS[max(matches, key=len)] if matches else None


def _suffix_list() -> str:
    return ", ".join(supported_suffixes())


# ----------------------------------------------------------------------------------------------------------- inputs


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files to read, deduplicated and sorted so the same inputs always give the same dataset.

    Each pattern is a file, a directory (searched recursively for supported files; hidden entries skipped) or a
    glob (``**`` allowed). A pattern that yields no supported file is an error, never silently skipped.
    """
    if not patterns:
        raise InputError("no inputs given; pass one or more files, directories or globs")
    found: dict[Path, None] = {}
    for pattern in patterns:
        for path in _expand_one(pattern):
            found.setdefault(path, None)
    return sorted(found, key=str)


def _expand_one(pattern: str) -> list[Path]:
    path = Path(pattern).expanduser()
    if path.is_file():
        if reader_for(path) is None:
            raise InputError(f"input {pattern} is not a supported file kind (supported: {_suffix_list()}); "
                             "rename or convert it")
        return [path]
    if path.is_dir():
        files = _supported_under(path)
        if not files:
            raise InputError(f"directory {pattern} holds no supported input files (supported: {_suffix_list()})")
        return files
    if _GLOB_CHARS & set(pattern):
        files = _from_glob(pattern)
        if not files:
            raise InputError(f"glob {pattern!r} matches no supported input files (supported: {_suffix_list()})")
        return files
    raise InputError(f"input {pattern} does not exist; check the path (or quote a glob)")


def _supported_under(directory: Path) -> list[Path]:
    files = []
    for p in directory.rglob("*"):
        hidden = any(part.startswith(".") for part in p.relative_to(directory).parts)
        if not hidden and p.is_file() and reader_for(p) is not None:
            files.append(p)
    return sorted(files, key=str)


def _from_glob(pattern: str) -> list[Path]:
    files: list[Path] = []
    for match in sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True)):
        p = Path(match)
        if p.is_dir():
            files.extend(_supported_under(p))
        elif p.is_file() and reader_for(p) is not None:
            files.append(p)
    return files


# -------------------------------------------------------------------------------------------------------- documents


def iter_documents(paths: Iterable[Path], text_key: str = "text") -> Iterator[Document]:
    """All non-empty documents of ``paths``, in order. Empty texts are skipped: they would only add an EOS."""
    for path in paths:
        reader = reader_for(Path(path))
        if reader is None:
            raise InputError(f"{path} is not a supported file kind (supported: {_suffix_list()})")
        for doc in reader(Path(path), text_key):
            if doc.text:
                yield doc


def read_txt(path: Path, text_key: str) -> Iterator[Document]:
    """A ``.txt`` file is one document (a leading UTF-8 BOM is dropped)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    yield Document(text, path)


def read_jsonl(path: Path, text_key: str) -> Iterator[Document]:
    """One JSON object per line, text under ``text_key``; blank lines are skipped."""
    with open(path, "rb") as f:
        yield from _jsonl_documents(f, path, text_key)


def read_jsonl_zst(path: Path, text_key: str) -> Iterator[Document]:
    """Like :func:`read_jsonl`, decompressing as a stream (the Pile's ``*.jsonl.zst``)."""
    with open(path, "rb") as raw:
        stream = io.BufferedReader(_ChunkReader(_zst_chunks(raw, path)), buffer_size=_ZST_READ_SIZE)
        yield from _jsonl_documents(stream, path, text_key)


def _jsonl_documents(lines: Iterable[bytes], path: Path, text_key: str) -> Iterator[Document]:
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        obj = _parse_line(raw, path, lineno)
        if text_key not in obj:
            keys = ", ".join(map(repr, list(obj)[:20])) or "none"
            raise InputError(f"{path}:{lineno}: the JSON object has no {text_key!r} key (its keys: {keys}); "
                             "pass --text-key with the key that holds the text")
        text = obj[text_key]
        if not isinstance(text, str):
            raise InputError(f"{path}:{lineno}: {text_key!r} holds a JSON {_json_type(text)}, not a string; "
                             "point --text-key at a string field or fix the file")
        yield Document(text, path, lineno)


def _parse_line(raw: bytes, path: Path, lineno: int) -> dict:
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                         "re-encode the file as UTF-8") from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                         "each line of a .jsonl file must be one JSON object") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}:{lineno}: expected a JSON object, got a JSON {_json_type(obj)}; "
                         "each line of a .jsonl file must be one JSON object")
    return obj


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _zst_chunks(raw: io.BufferedIOBase, path: Path) -> Iterator[bytes]:
    """Decompressed bytes of every frame; a file that ends mid-frame or is not zstd is an :class:`InputError`."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj, in_frame = dctx.decompressobj(), False
    try:
        while chunk := raw.read(_ZST_READ_SIZE):
            while chunk:
                in_frame = True
                if out := dobj.decompress(chunk):
                    yield out
                chunk = b""
                if dobj.eof:  # frame done: the rest of the chunk starts the next frame
                    chunk, dobj, in_frame = dobj.unused_data, dctx.decompressobj(), False
    except zstandard.ZstdError as e:
        raise InputError(f"{path} is not a valid zstd file ({e}); re-download or re-compress it") from None
    if in_frame:
        raise InputError(f"{path} is truncated: the zstd stream ends mid-frame; re-download or re-compress it")


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, so ``io.BufferedReader`` can split it into lines."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._view:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


register_reader(".txt", read_txt)
register_reader(".jsonl", read_jsonl)
register_reader(".jsonl.zst", read_jsonl_zst)
