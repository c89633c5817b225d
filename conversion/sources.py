"""Where documents come from: input paths/globs → files → a stream of :class:`Document`.

Every file kind has one reader, registered by file-name suffix (:func:`register_reader`), so a new format is a
registered function, not an edit of the walk. Supported: ``.txt`` (one document per file), JSON lines
(``.jsonl``, ``.jsonl.zst``, ``.jsonl.gz``, ``.json.gz``), ``.parquet`` (FineWeb's layout), and a folder written
by ``datasets.Dataset.save_to_disk`` (one input, however many ``.arrow`` files it holds). A Hugging Face Hub
dataset is streamed by :func:`hf_hub_documents`. Readers stream: no file is held whole in memory (a ``.txt`` file
is one document, so it is).

Two kinds of problems: a whole-file one (missing, truncated or mislabelled compressed file, not parquet, no text
column) is always one :class:`~core.errors.InputError` naming the file and the fix. A record-level one (a line
that is not JSON, a missing text key, ...) is a :class:`BadRecordError` naming ``file:line``, raised unless a
:class:`BadRecords` is given, which then counts and skips it.
"""
from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from core.errors import InputError, OptionError

if TYPE_CHECKING:
    import pyarrow as pa

_GLOB_CHARS = frozenset("*?[")
_ZST_READ_SIZE = 1 << 20
_GZ_READ_SIZE = 1 << 20
_ARROW_BATCH_ROWS = 1024  # FineWeb rows are ~3 KB: a batch is a few MB, never a whole row group of GBs
_SKIP_HINT = "or pass --skip-bad to skip such records"
# datasets.config: DATASET_STATE_JSON_FILENAME, DATASET_INFO_FILENAME, DATASETDICT_JSON_FILENAME
_SAVED_DATASET_FILES = ("state.json", "dataset_info.json")
_SAVED_DATASET_DICT_FILE = "dataset_dict.json"


@dataclass(frozen=True, slots=True)
class Document:
    """One document's text and where it came from (``line`` is 1-based: a line or a row; None for a whole-file
    document). ``group`` is the value of the ``group_key`` field (e.g. the Pile's subset), when asked for."""

    text: str
    path: Path
    line: int | None = None
    group: str | None = None

    @property
    def where(self) -> str:
        """``path:line`` for error messages."""
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


# ------------------------------------------------------------------------------------------------------ bad records


class BadRecordError(InputError):
    """One record (a line or a row) cannot be a document. Raised as is, or counted by :class:`BadRecords`."""

    def __init__(self, where: str, reason: str, problem: str, fix: str):
        super().__init__(f"{where}: {problem}; {fix}")
        self.where, self.reason, self.problem = where, reason, problem


class BadRecords:
    """Records skipped instead of stopping the run: counts by reason plus the first few examples, so that the end
    of a run can say in one line what was dropped and where to look."""

    def __init__(self, max_examples: int = 5):
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []
        self.max_examples = max_examples

    def add(self, error: BadRecordError) -> None:
        self.counts[error.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{error.where}: {error.problem}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: ``skipped N bad records (3 not valid JSON, 1 not UTF-8); first: a.jsonl:4: ...; ...``."""
        if not self.total:
            return "no bad records"
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.counts.most_common())
        noun = "record" if self.total == 1 else "records"
        return f"skipped {self.total} bad {noun} ({reasons}); first: " + "; ".join(self.examples)


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """What readers take from each record: the text field, an optional dotted group field, and where bad
    records go (None: raise)."""

    text_key: str = "text"
    group_key: str | None = None
    bad: BadRecords | None = None

    def __post_init__(self) -> None:
        if self.group_key is not None and not all(self.group_key.split(".")):
            raise OptionError(f"--group-by {self.group_key!r} is not a key path; use a key or dotted path such "
                              "as meta.pile_set_name")

    @property
    def group_path(self) -> tuple[str, ...] | None:
        return tuple(self.group_key.split(".")) if self.group_key is not None else None


def _record_or_raise(error: BadRecordError, bad: BadRecords | None) -> None:
    """Count ``error`` when bad records are skipped, raise it otherwise."""
    if bad is None:
        raise error
    bad.add(error)


# --------------------------------------------------------------------------------------------------------- registry


Reader = Callable[[Path, ReadSpec], Iterator[Document]]
_READERS: dict[str, Reader] = {}


def register_reader(suffix: str, reader: Reader) -> None:
    """Make files whose name ends with ``suffix`` (e.g. ``.jsonl.gz``) readable by ``reader(path, spec)``."""
    _READERS[suffix.lower()] = reader


def supported_suffixes() -> list[str]:
    return sorted(_READERS)


def reader_for(path: Path) -> Reader | None:
    """A saved-dataset folder's reader, or the reader of the longest registered suffix that ends ``path``'s name
    (``.jsonl.zst`` beats ``.zst``); None for anything else."""
    if path.is_dir():
        return read_saved_dataset if is_saved_dataset(path) else None
    name = path.name.lower()
    matches = [s for s in _READERS if name.endswith(s) and len(name) > len(s)]
    return _READERS[max(matches, key=len)] if matches else None


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (one input, not a tree)."""
    return all((path / f).is_file() for f in _SAVED_DATASET_FILES) or (path / _SAVED_DATASET_DICT_FILE).is_file()


def _suffix_list() -> str:
    return ", ".join(supported_suffixes()) + ", a folder saved by datasets' save_to_disk"


# ----------------------------------------------------------------------------------------------------------- inputs


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Inputs to read, deduplicated and sorted so the same inputs always give the same dataset.

    Each pattern is a file, a saved-dataset folder, a directory (searched recursively for supported files and
    saved-dataset folders; hidden entries skipped) or a glob (``**`` allowed). A pattern that yields no supported
    input is an error, never silently skipped.
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
    """Supported files under ``directory``; a saved-dataset folder is one input (its .arrow files are not)."""
    if is_saved_dataset(directory):
        return [_saved_input(directory)]
    found = []
    for root, dirs, files in os.walk(directory):
        here = Path(root)
        visible = [d for d in dirs if not d.startswith(".")]
        saved = {d for d in visible if is_saved_dataset(here / d)}
        found += [_saved_input(here / d) for d in saved]
        dirs[:] = [d for d in visible if d not in saved]  # os.walk descends only into these
        found += [here / f for f in files if not f.startswith(".") and reader_for(here / f) is not None]
    return sorted(found, key=str)


def _saved_input(folder: Path) -> Path:
    """A saved Dataset folder is itself the input; a saved DatasetDict's input is its ``train`` split folder (so
    naming both the dict and its ``train`` folder, or a ``**`` glob reaching both, reads it once)."""
    dict_file = folder / _SAVED_DATASET_DICT_FILE
    if not dict_file.is_file():
        return folder
    try:
        splits = json.loads(dict_file.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{dict_file} cannot be read ({_one_line(e)}); save the DatasetDict again") from None
    if "train" not in splits:
        raise _no_train_split(folder, splits)
    return folder / "train"


def _no_train_split(folder: Path, splits: Sequence[str]) -> InputError:
    example = f", e.g. {folder / splits[0]}" if splits else ""
    return InputError(f"{folder} is a saved DatasetDict without a 'train' split (its splits: {', '.join(splits)}); "
                      f"pass one split's folder instead{example}")


def _from_glob(pattern: str) -> list[Path]:
    """Supported files and folders the glob matches; matches inside a matched saved-dataset folder are that
    folder's parts (``root/**`` reaches ``root/dd/test``), not inputs of their own."""
    matches = [Path(m) for m in sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))]
    saved = {p for p in matches if p.is_dir() and is_saved_dataset(p)}
    files: list[Path] = []
    for p in matches:
        if saved and any(parent in saved for parent in p.parents):
            continue
        if p.is_dir():
            files.extend(_supported_under(p))
        elif p.is_file() and reader_for(p) is not None:
            files.append(p)
    return files


# -------------------------------------------------------------------------------------------------------- documents


def iter_documents(paths: Iterable[Path], text_key: str = "text", bad: BadRecords | None = None,
                   group_key: str | None = None) -> Iterator[Document]:
    """All non-empty documents of ``paths``, in order. Empty texts are skipped: they would only add an EOS.

    ``group_key`` (a dotted path such as ``meta.pile_set_name``) fills each document's ``group``. With ``bad``,
    bad records are counted there and skipped; without, the first one raises. Every input is checked to have a
    reader (and, with ``group_key``, fields to group by) before the first one is read.
    """
    spec = ReadSpec(text_key, group_key, bad)
    plan = [(p, _checked_reader(p, spec)) for p in map(Path, paths)]
    for path, reader in plan:
        for doc in reader(path, spec):
            if doc.text:
                yield doc


def _checked_reader(path: Path, spec: ReadSpec) -> Reader:
    reader = reader_for(path)
    if reader is None:
        raise InputError(f"{path} is not a supported file kind (supported: {_suffix_list()})")
    if reader is read_txt and spec.group_key is not None:
        raise InputError(f"{path}: grouping by {spec.group_key!r} needs JSON lines, parquet or saved-dataset inputs "
                         "(a .txt file is one document without fields); drop the grouping or convert the .txt "
                         "files to .jsonl with the group as a field")
    return reader


def read_txt(path: Path, spec: ReadSpec) -> Iterator[Document]:
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


# ------------------------------------------------------------------------------------------------------- JSON lines


def read_jsonl(path: Path, spec: ReadSpec) -> Iterator[Document]:
    """One JSON object per line, text under ``spec.text_key``; blank lines are skipped."""
    with open(path, "rb") as f:
        yield from _jsonl_documents(f, path, spec)


def read_jsonl_zst(path: Path, spec: ReadSpec) -> Iterator[Document]:
    """Like :func:`read_jsonl`, decompressing as a stream (the Pile's ``*.jsonl.zst``)."""
    with open(path, "rb") as raw:
        stream = io.BufferedReader(_ChunkReader(_zst_chunks(raw, path)), buffer_size=_ZST_READ_SIZE)
        yield from _jsonl_documents(stream, path, spec)


def read_jsonl_gz(path: Path, spec: ReadSpec) -> Iterator[Document]:
    """Like :func:`read_jsonl`, decompressing gzip as a stream (several gzip members are read as one)."""
    with gzip.open(path, "rb") as gz:
        stream = io.BufferedReader(gz, buffer_size=_GZ_READ_SIZE)  # C-level line splitting over big reads
        try:
            yield from _jsonl_documents(stream, path, spec)
        except EOFError:
            raise InputError(f"{path} is truncated: the gzip stream ends early; re-download or re-compress "
                             "it") from None
        except (gzip.BadGzipFile, zlib.error) as e:
            raise InputError(f"{path} is not a valid gzip file ({e}); re-download it, or rename it if it is not "
                             "gzip-compressed") from None


def _jsonl_documents(lines: Iterable[bytes], path: Path, spec: ReadSpec) -> Iterator[Document]:
    text_key, group, bad = spec.text_key, spec.group_path, spec.bad
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = _parse_line(raw, path, lineno)
            doc = _object_document(obj, path, lineno, text_key, group)
            if bad is not None and not doc.text.isascii():  # isascii is O(1); encoding ~GB/s
                _check_surrogates(doc)
        except BadRecordError as e:
            _record_or_raise(e, bad)
            continue
        yield doc


def _object_document(obj: dict, path: Path, line: int, text_key: str,
                     group: tuple[str, ...] | None) -> Document:
    """The document of one JSON object / dataset row (a dict), or :class:`BadRecordError`."""
    if text_key not in obj:
        keys = ", ".join(map(repr, list(obj)[:20])) or "none"
        raise BadRecordError(f"{path}:{line}", f"no {text_key!r} key",
                             f"the record has no {text_key!r} key (its keys: {keys})",
                             "pass --text-key with the key that holds the text, " + _SKIP_HINT)
    text = obj[text_key]
    if not isinstance(text, str):
        raise BadRecordError(f"{path}:{line}", "text not a string",
                             f"{text_key!r} holds a JSON {_json_type(text)}, not a string",
                             "point --text-key at a string field or fix the file, " + _SKIP_HINT)
    if group is None:
        return Document(text, path, line)
    return Document(text, path, line, _group_value(obj, group, f"{path}:{line}"))


def _group_value(obj: dict, group: tuple[str, ...], where: str) -> str:
    """The string at the dotted path ``group`` inside nested dicts."""
    value: Any = obj
    for part in group:
        if not isinstance(value, dict) or part not in value:
            raise BadRecordError(where, "no group value", f"the record has no {'.'.join(group)!r} value",
                                 "every record needs one to be grouped; fix the file or the group key, " + _SKIP_HINT)
        value = value[part]
    if not isinstance(value, str):
        raise BadRecordError(where, "group not a string",
                             f"{'.'.join(group)!r} holds a JSON {_json_type(value)}, not a string",
                             "group names must be strings; fix the file or the group key, " + _SKIP_HINT)
    return value


def _check_surrogates(doc: Document) -> None:
    """JSON may escape lone surrogates ("\\ud800"), which are not text and cannot be encoded as UTF-8."""
    try:
        doc.text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRecordError(doc.where, "unpaired surrogate",
                             f"the text holds an unpaired surrogate ({doc.text[e.start]!r}) that is not valid "
                             "Unicode", "fix or drop that document, " + _SKIP_HINT) from None


def _parse_line(raw: bytes, path: Path, lineno: int) -> dict:
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise BadRecordError(f"{path}:{lineno}", "not UTF-8",
                             f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                             "re-encode the file as UTF-8, " + _SKIP_HINT) from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRecordError(f"{path}:{lineno}", "not valid JSON", f"not valid JSON ({e.msg} at column {e.colno})",
                             "each line of a JSON lines file must be one JSON object, " + _SKIP_HINT) from None
    if not isinstance(obj, dict):
        raise BadRecordError(f"{path}:{lineno}", "not a JSON object",
                             f"expected a JSON object, got a JSON {_json_type(obj)}",
                             "each line of a JSON lines file must be one JSON object, " + _SKIP_HINT)
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


# ---------------------------------------------------------------------------------------------- parquet & datasets


def read_parquet(path: Path, spec: ReadSpec) -> Iterator[Document]:
    """Rows of a parquet file (FineWeb: ``text``, ``id``, ...), read a batch of rows at a time, only the columns
    needed; ``line`` is the 1-based row number."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path} is not a valid parquet file ({_one_line(e)}); re-download it, or rename it if it "
                         "is not parquet") from None
    with pf:
        columns = _arrow_columns(pf.schema_arrow, path, spec)
        try:
            yield from _arrow_documents(pf.iter_batches(batch_size=_ARROW_BATCH_ROWS, columns=columns), path, spec)
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{path}: cannot read its parquet data ({_one_line(e)}); the file is corrupt or "
                             "truncated, re-download it") from None


def read_saved_dataset(path: Path, spec: ReadSpec) -> Iterator[Document]:
    """Rows of a folder saved by ``Dataset.save_to_disk`` (memory-mapped, read in order); a ``DatasetDict``
    folder gives its ``train`` split. ``line`` is the 1-based row number."""
    ds = _load_saved_dataset(path)
    columns = _arrow_columns(ds.data.schema, path, spec)
    batches = ds.select_columns(columns).with_format("arrow").iter(batch_size=_ARROW_BATCH_ROWS)
    yield from _arrow_documents(batches, path, spec)


def _load_saved_dataset(path: Path) -> Any:
    """The ``datasets.Dataset`` saved at ``path`` (a DatasetDict's ``train`` split)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise InputError(f"{path} looks like a folder saved by datasets' save_to_disk but cannot be loaded "
                         f"({_one_line(e)}); save it again") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise _no_train_split(path, list(ds))
        ds = ds["train"]
    return ds


def _arrow_columns(schema: pa.Schema, path: Path, spec: ReadSpec) -> list[str]:
    """The columns to read: the text column (a string column, else a whole-file error) and the group's
    top-level column (its nested fields down to a string, else a whole-file error)."""
    names = schema.names
    listing = ", ".join(map(repr, names[:20])) or "none"
    if spec.text_key not in names:
        raise InputError(f"{path} has no {spec.text_key!r} column (its columns: {listing}); pass --text-key with "
                         "the column that holds the text")
    text_type = schema.field(spec.text_key).type
    if not _is_string_type(text_type):
        raise InputError(f"{path}: column {spec.text_key!r} holds {text_type}, not strings; pass --text-key with "
                         f"the column that holds the text (its columns: {listing})")
    group = spec.group_path
    if group is None:
        return [spec.text_key]
    if group[0] not in names:
        raise InputError(f"{path} has no {group[0]!r} column to group by (its columns: {listing}); fix the group "
                         "key")
    _check_group_type(schema.field(group[0]).type, group, path)
    return [spec.text_key] if group[0] == spec.text_key else [spec.text_key, group[0]]


def _check_group_type(arrow_type: pa.DataType, group: tuple[str, ...], path: Path) -> None:
    import pyarrow as pa

    for depth, part in enumerate(group[1:], start=1):
        if not pa.types.is_struct(arrow_type) or arrow_type.get_field_index(part) < 0:
            raise InputError(f"{path}: column {'.'.join(group[:depth])!r} ({arrow_type}) has no field {part!r} "
                             "to group by; fix the group key")
        arrow_type = arrow_type.field(part).type
    if not _is_string_type(arrow_type):
        raise InputError(f"{path}: {'.'.join(group)!r} holds {arrow_type}, not strings; group by a string field")


def _is_string_type(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or \
        pa.types.is_string_view(arrow_type)


def _arrow_documents(batches: Iterable[Any], path: Path, spec: ReadSpec) -> Iterator[Document]:
    """Documents of record batches / tables holding the text column (and the group's top-level column); a null
    text or group is a bad record."""
    text_key, group, bad, row = spec.text_key, spec.group_path, spec.bad, 0
    for batch in batches:
        column = batch.column(text_key)
        texts = column.to_pylist()
        if group is None and column.null_count == 0:
            yield from map(Document, texts, [path] * len(texts), range(row + 1, row + len(texts) + 1))
            row += len(texts)
            continue
        tops = batch.column(group[0]).to_pylist() if group else [None] * len(texts)
        for text, top in zip(texts, tops):
            row += 1
            record = {text_key: text} if group is None else {group[0]: top, text_key: text}
            try:
                doc = _object_document(record, path, row, text_key, group)
            except BadRecordError as e:
                _record_or_raise(e, bad)
                continue
            yield doc


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------------------------------------ the HF Hub


def hf_hub_documents(name: str, config: str | None, split: str, text_key: str = "text",
                     bad: BadRecords | None = None, group_key: str | None = None) -> Iterator[Document]:
    """Documents of a Hugging Face Hub dataset, streamed in row order (``datasets.load_dataset(...,
    streaming=True)``); ``path`` is ``hf:NAME[/CONFIG]/SPLIT`` and ``line`` the 1-based row number.

    The dataset is resolved now (so an unknown name or an unreachable hub fails before any work); rows are
    fetched while iterating. Honours ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` even when set after
    ``datasets`` was imported.
    """
    folder = Path(name).expanduser()
    if folder.is_dir() and is_saved_dataset(folder):  # load_dataset would read its state.json as the only row
        one = folder / split if (folder / _SAVED_DATASET_DICT_FILE).is_file() else folder
        raise InputError(f"--hf-dataset {name} is a folder saved by datasets' save_to_disk, which is an input, not "
                         f"a Hub dataset: pass it as INPUT instead (convert_to_mds.py {one} ...), without "
                         "--hf-dataset / --hf-split")
    spec = ReadSpec(text_key, group_key, bad)
    label = Path(f"hf:{name}" + (f"/{config}" if config else "") + f"/{split}")
    rows = _open_hub_dataset(name, config, split)
    return _hub_documents(rows, name, label, spec)


def _open_hub_dataset(name: str, config: str | None, split: str) -> Any:
    offline = _honour_offline_env()
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, streaming=True)
    except (OSError, ValueError, RuntimeError) as e:  # ConnectionError, DatasetNotFoundError, bad config/split
        mode = " with offline mode on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if offline else ""
        raise InputError(f"cannot stream the Hugging Face dataset {name!r} (config {config or 'default'}, split "
                         f"{split}){mode}: {_one_line(e)}; check the name, config and split, the network and "
                         "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or download it where there is network, save it "
                         "with save_to_disk(DIR) and pass DIR as an input instead") from None


def _hub_documents(rows: Iterable[dict], name: str, label: Path, spec: ReadSpec) -> Iterator[Document]:
    """Non-empty documents of the rows, as :func:`iter_documents` gives them; a failure mid-stream is one
    :class:`InputError`."""
    group, bad = spec.group_path, spec.bad
    try:
        for line, row in enumerate(rows, start=1):
            try:
                doc = _object_document(row, label, line, spec.text_key, group)
                if bad is not None and not doc.text.isascii():
                    _check_surrogates(doc)
            except BadRecordError as e:
                _record_or_raise(e, bad)
                continue
            if doc.text:
                yield doc
    except (OSError, ValueError) as e:  # the connection dropped, a data file is bad
        raise InputError(f"streaming the Hugging Face dataset {name!r} failed ({_one_line(e)}); check the network "
                         "and re-run, or download it and pass the saved folder instead") from None


def _honour_offline_env() -> bool:
    """Whether ``datasets`` runs offline. It and ``huggingface_hub`` read the offline variables once, at import:
    set later (by a caller or a test), they would be ignored and the call would retry the network for ~20 s."""
    import datasets.config

    flags = [os.environ.get(v, "").strip().upper() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")]
    if any(f in {"1", "ON", "YES", "TRUE"} for f in flags) and not datasets.config.HF_HUB_OFFLINE:
        import huggingface_hub.constants

        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    return bool(datasets.config.HF_HUB_OFFLINE)


register_reader(".txt", read_txt)
register_reader(".jsonl", read_jsonl)
register_reader(".jsonl.zst", read_jsonl_zst)
register_reader(".jsonl.gz", read_jsonl_gz)
register_reader(".json.gz", read_jsonl_gz)
register_reader(".parquet", read_parquet)
