"""One dataset converted as many tasks, on many machines: ``--num-tasks T``, ``--task I``, ``--merge OUT``.

The input files are cut into ``T`` tasks of whole files, contiguous and balanced by size, from the inputs alone (never
from how many machines run). Task ``I`` is an ordinary conversion of its files, published into ``OUT`` as
Streaming partitions: each split's shards in ``OUT/<split>/IIIII/`` (a group's in ``OUT/<group>/<split>/IIIII/``)
and its record ``OUT/tasks/IIIII/done.json`` written last. ``--merge`` joins the partitions' ``index.json`` as
Streaming's ``merge_index`` does into ``OUT/<split>/index.json`` (shards stay where they are: the merged index names
them ``IIIII/shard...``, as every Streaming reader resolves them, locally or in a bucket) and writes
``metadata.json`` (``groups.json``) last. The bytes depend on the inputs, the arguments and ``T`` only, so the
merged dataset is the same however many machines or workers ran the tasks, and a task run twice at once writes the
same bytes twice: a machine that finds its task done when it comes to publish drops its copy.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

from conversion.batches import TRAIN, VAL
from conversion.convert import (
    Conversion,
    ConvertRequest,
    Prepared,
    already_converted,
    check_inputs_outside,
    convert_local,
    prepare,
)
from conversion.groups import GROUPS_FILE, group_record, write_groups
from core import remote
from core.errors import InputError, MetadataError, OptionError, OutputExistsError, RemoteError
from core.files import remove, write_atomic
from core.metadata import METADATA_FILE, TOKENIZER_DIR, DatasetMetadata, SplitStats
from upstream import defer_streaming_datasets

defer_streaming_datasets()  # before Streaming's first import (MDSWriter): its datasets are not needed here

TASKS_DIR = "tasks"
DONE_FILE = "done.json"
INDEX_FILE = "index.json"
TASK_FORMAT = "gpt-composer-mds-task"
TASK_VERSION = 1
TASK_BYTES = 1 << 30  # default: one task per GiB of input files (as stored)
# the request's keys, as a user would name what differs
ARGUMENT = {"tokenizer": "--tokenizer", "seq_len": "--seq-len", "val_fraction": "--val-fraction",
            "text_key": "--text-key", "split_rule": "the split rule (another version of convert_to_mds.py)",
            "compression": "--compression", "size_limit": "--size-limit", "group_by": "--group-by",
            "skip_bad": "--skip-bad", "hf_dataset": "--hf-dataset", "input_files": "the input files",
            "num_tasks": "--num-tasks"}


def part(i: int) -> str:
    """A task's folder name (in tasks/ and in each split): zero-padded, so listings sort in task order."""
    return f"{i:05d}"


@dataclass
class TaskRun:
    """What a ``--task`` command did."""

    num_tasks: int
    converted: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # done already with these arguments
    merged: Conversion | None = None  # the single command (``--num-tasks`` without ``--task``) merges at the end


# ------------------------------------------------------------------------------------------------------ the plan


def plan(sizes: list[int], num_tasks: int | None) -> list[range]:
    """Each task's input files (indices into the sorted inputs): contiguous runs of whole files, balanced by size,
    every task holding at least one file."""
    n, total = len(sizes), sum(sizes)
    if num_tasks is None:
        num_tasks = min(n, max(1, math.ceil(total / TASK_BYTES)))
    if num_tasks < 1:
        raise OptionError(f"--num-tasks must be at least 1, got {num_tasks}")
    if num_tasks > n:
        raise OptionError(f"--num-tasks {num_tasks} but the inputs are {n} file(s), and a task is whole files; use "
                          f"--num-tasks {n} or fewer, or split the inputs into more files (e.g. split -n l/K)")
    cum = [0]
    for size in sizes:
        cum.append(cum[-1] + size)
    bounds = [0]
    for t in range(1, num_tasks):
        k = next(k for k in range(n + 1) if cum[k] * num_tasks >= t * total)
        bounds.append(min(max(k, bounds[-1] + 1), n - (num_tasks - t)))
    bounds.append(n)
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def parse_tasks(spec: str, num_tasks: int) -> list[int]:
    """``all``, ``I``, ``I-J`` or a comma list of those: the tasks this command converts."""
    if spec == "all":
        return list(range(num_tasks))
    chosen: list[int] = []
    for item in spec.split(","):
        lo, _, hi = item.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise OptionError(f"--task {spec!r}: give a task number, a range I-J, a comma list or all; e.g. "
                              "--task $SLURM_ARRAY_TASK_ID") from None
        if not 0 <= first <= last < num_tasks:
            raise OptionError(f"--task {spec}: this conversion has {num_tasks} tasks, numbered 0-{num_tasks - 1}")
        chosen += [i for i in range(first, last + 1) if i not in chosen]
    return chosen


def difference(a: dict, b: dict, a_is: str, b_is: str) -> str:
    """The first argument two request records differ in, named as a user would (``--seq-len 32 in task 0, 64
    here``)."""
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            if key == "input_files":
                return "the input files: paths, sizes or modification times"
            return f"{ARGUMENT.get(key, key)} {a.get(key)!r} {a_is}, {b.get(key)!r} {b_is}"
    return "nothing"


# ---------------------------------------------------------------------------------------------------- the store


class Store:
    """``OUT`` as tasks see it: a folder, or a bucket prefix (:class:`BucketStore`)."""

    def __init__(self, out: str):
        self.out = out
        self.root = Path(out).expanduser()

    def names(self, prefix: str) -> list[str]:
        base = self.root / prefix
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()) \
            if base.is_dir() else []

    def read(self, name: str, listed: bool = False) -> bytes | None:
        """The file's bytes, None when absent (``listed``: it was just listed, so do not look for it again)."""
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def fetch(self, name: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / name, dest)

    def remove(self, name: str) -> None:
        remove(self.root / name)

    def put_file(self, local: Path, name: str) -> None:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / name, local.read_text())

    def put_folder(self, local: Path, name: str, replace_old: bool = True) -> None:
        """Move a finished folder into place in one rename; an old one is renamed aside first and removed."""
        dest = self.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            if not replace_old:
                return
            aside = dest.with_name(f".{dest.name}.replaced-{uuid.uuid4().hex}")
            with contextlib.suppress(FileNotFoundError):  # another writer may have moved it first
                os.rename(dest, aside)
            remove(aside)
        try:
            os.rename(local, dest)
        except OSError as e:  # another writer's copy (the same bytes) went in first
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise

    @contextlib.contextmanager
    def staging(self, i: int) -> Iterator[Path]:
        """A private folder beside the output (one rename from its place), removed at the end; a killed run's
        staging of this task on this host is removed first."""
        tasks = self.root / TASKS_DIR
        tasks.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for old in tasks.glob(f".partial-{part(i)}-{host}-*"):
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                remove(old)
        path = tasks / f".partial-{part(i)}-{host}-{os.getpid()}"
        remove(path)
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


class BucketStore(Store):
    """``OUT`` in a bucket: a task is converted under TMPDIR and uploaded, ``done.json`` last."""

    def __init__(self, out: str):
        super().__init__(out)
        self.url = out.rstrip("/")

    def names(self, prefix: str) -> list[str]:
        return [f"{prefix}/{n}" for n in remote.list_keys(f"{self.url}/{prefix}")]

    def read(self, name: str, listed: bool = False) -> bytes | None:
        if not listed and name not in self.names(_parent(name)):
            return None
        with tempfile.TemporaryDirectory(prefix="convert_to_mds-") as tmp:
            self.fetch(name, Path(tmp) / "f")
            return (Path(tmp) / "f").read_bytes()

    def fetch(self, name: str, dest: Path) -> None:
        remote.download_file(f"{self.url}/{name}", dest)

    def remove(self, name: str) -> None:
        remote.delete_keys(self.url, [name])

    def put_file(self, local: Path, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="convert_to_mds-") as tmp:
            shutil.copyfile(local, Path(tmp) / name.rsplit("/", 1)[-1])
            remote.upload_dir(tmp, f"{self.url}/{_parent(name)}".rstrip("/"))

    def put_folder(self, local: Path, name: str, replace_old: bool = True) -> None:
        """Upload over the old objects (a concurrent writer of the same task writes the same bytes), then delete
        old objects the new folder does not have."""
        if not replace_old and self.names(name):
            return
        written = set(remote.upload_dir(local, f"{self.url}/{name}"))
        remote.delete_keys(f"{self.url}/{name}",
                           [n for n in remote.list_keys(f"{self.url}/{name}") if n not in written])

    @contextlib.contextmanager
    def staging(self, i: int) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix=f"convert_to_mds-task{i}-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _parent(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def open_store(out: str) -> Store:
    return BucketStore(out) if remote.is_remote(out) else Store(out)


def _alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


# ---------------------------------------------------------------------------------------------------- the tasks


def run_tasks(req: ConvertRequest, spec: str | None, num_tasks: int | None) -> TaskRun:
    """Convert the tasks ``spec`` names (``None``: all of them, then merge: the single command)."""
    if req.hf is not None:
        raise OptionError("--task / --num-tasks split input files; a --hf-dataset is one stream: convert it "
                          "without them, or save it to disk first (datasets' save_to_disk) and pass the files")
    prep = prepare(req)
    layout = plan([f["bytes"] for f in prep.record["input_files"]], num_tasks)
    record = {**prep.record, "num_tasks": len(layout)}
    chosen = parse_tasks(spec or "all", len(layout))
    store = open_store(req.out)
    _check_output(store, prep)
    run = TaskRun(len(layout))
    if spec is None and not isinstance(store, BucketStore):
        finished = already_converted(store.root, record, req.group_by)
        if finished is not None:
            run.skipped, run.merged = chosen, finished
            return run
    done = _check_same_request(store, record, req.overwrite)
    for i in chosen:
        if done.get(i, {}).get("request") == record:
            run.skipped.append(i)
            continue
        _convert_task(prep, record, store, i, [prep.paths[k] for k in layout[i]])
        run.converted.append(i)
    if spec is None:
        run.merged = merge(req.out)
    return run


def _check_output(store: Store, prep: Prepared) -> None:
    """``OUT`` is empty or a task output; it does not hold the inputs."""
    if isinstance(store, BucketStore):
        keys = remote.list_keys(store.url)
        if keys and not any(k.startswith(f"{TASKS_DIR}/") for k in keys):
            raise OutputExistsError(f"--out {store.url} holds objects but no {TASKS_DIR}/: not a task output; "
                                    "choose another prefix for a task conversion")
        return
    root = store.root
    if root.exists() and any(root.iterdir()) and not (root / TASKS_DIR).is_dir():
        raise OutputExistsError(f"--out {root} is not empty and holds no {TASKS_DIR}/: not a task output; choose "
                                "another folder for a task conversion")
    check_inputs_outside(root, prep.paths)


def done_records(store: Store) -> dict[int, dict]:
    """Every task's ``done.json`` in ``OUT`` (by task number)."""
    records = {}
    for name in store.names(TASKS_DIR):
        folder, _, base = name[len(TASKS_DIR) + 1:].partition("/")
        if base != DONE_FILE or not folder.isdigit():
            continue
        try:
            record = json.loads(store.read(name, listed=True) or b"null")
        except ValueError:
            raise MetadataError(f"{store.out}/{name} is not valid JSON; re-run that task "
                                f"(--task {int(folder)})") from None
        if not isinstance(record, dict) or record.get("format") != TASK_FORMAT:
            raise MetadataError(f"{store.out}/{name} was not written by convert_to_mds.py; re-run that task "
                                f"(--task {int(folder)})")
        records[int(folder)] = record
    return records


def _check_same_request(store: Store, record: dict, overwrite: bool) -> dict[int, dict]:
    """Tasks done in ``OUT`` with other arguments are an error (one dataset, one set of arguments), unless
    ``overwrite``: then this command redoes those of its tasks."""
    done = done_records(store)
    for i, theirs in sorted(done.items()):
        if theirs.get("request") != record and not overwrite:
            differs = difference(theirs.get("request") or {}, record, "there", "here")
            raise OutputExistsError(f"task {i} in {store.out} was converted with other arguments ({differs}); use the "
                                    "same arguments, or --overwrite to redo this command's tasks, or another --out")
    return done


def _convert_task(prep: Prepared, record: dict, store: Store, i: int, files: list[Path]) -> None:
    """Convert one task in a private folder, then publish it: partitions, tokenizer, and ``done.json`` last."""
    req = replace(prep.req, overwrite=False)
    with store.staging(i) as staging:
        conv = convert_local(files, staging / "dataset", prep.tok, record, req, overwrite=False)
        if done_records_one(store, i).get("request") == record:
            return  # another machine published this task meanwhile: the same bytes
        store.remove(f"{TASKS_DIR}/{part(i)}/{DONE_FILE}")
        _drop_merged(store, list(conv.datasets))
        for folder, meta in conv.datasets.items():
            base = "" if folder is None else f"{folder}/"
            for split in meta.splits:
                store.put_folder(staging / "dataset" / base / split, f"{base}{split}/{part(i)}")
            store.put_folder(staging / "dataset" / base / TOKENIZER_DIR, f"{base}{TOKENIZER_DIR}", replace_old=False)
        done = {"format": TASK_FORMAT, "version": TASK_VERSION, "task": i, "num_tasks": record["num_tasks"],
                "request": record, "tokenizer_backend": req.tokenizer_backend,
                "datasets": {folder or "": json.loads(meta.to_json()) for folder, meta in conv.datasets.items()},
                "dropped": (conv.groups or {}).get("dropped", {})}
        marker = staging / DONE_FILE
        marker.write_text(json.dumps(done, indent=2, sort_keys=True) + "\n")
        store.put_file(marker, f"{TASKS_DIR}/{part(i)}/{DONE_FILE}")


def done_records_one(store: Store, i: int) -> dict:
    raw = store.read(f"{TASKS_DIR}/{part(i)}/{DONE_FILE}")
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _drop_merged(store: Store, folders: list[str | None]) -> None:
    """A task published anew (not done before: a killed run's, or redone with --overwrite) makes a merged dataset
    of ``OUT`` stale: its finished-markers go first (a duplicate of a done task never gets here)."""
    for name in [GROUPS_FILE, METADATA_FILE, *(f"{f}/{METADATA_FILE}" for f in folders if f is not None)]:
        store.remove(name)


# ---------------------------------------------------------------------------------------------------- the merge


def merge(out: str) -> Conversion:
    """Join every task's partitions into one dataset per split (per group), ``metadata.json`` last."""
    store = open_store(out)
    done = _all_done(store)
    record = done[0]["request"]
    with tempfile.TemporaryDirectory(prefix="convert_to_mds-merge-") as tmp:
        work = Path(tmp)
        datasets: dict[str | None, DatasetMetadata] = {}
        for key in sorted({k for d in done.values() for k in d["datasets"]}):
            metas = {i: DatasetMetadata.from_json(json.dumps(d["datasets"][key]), f"{out}/{TASKS_DIR}/{part(i)}")
                     for i, d in sorted(done.items()) if key in d["datasets"]}
            datasets[key or None] = _merge_dataset(store, work, key, metas, record, done)
        groups = None
        if record.get("group_by"):
            groups = write_groups(work, record["group_by"],
                                  {f: group_record(m.source["group"]["value"], m) for f, m in datasets.items()},
                                  _dropped(done, datasets), record)
        _publish_merge(store, work, datasets, groups is not None)
    return Conversion(datasets, groups=groups)


def _all_done(store: Store) -> dict[int, dict]:
    """Every task's record, all of one request; or one error naming what is missing or differs."""
    done = done_records(store)
    if not done:
        raise MetadataError(f"--merge {store.out}: no {TASKS_DIR}/IIIII/{DONE_FILE}: not a task output, or no task "
                            "is done yet; convert into it with --task I (or --num-tasks T) first")
    first = min(done)
    record = done[first]["request"]
    for i, d in sorted(done.items()):
        if i >= record["num_tasks"]:
            raise OutputExistsError(f"--merge {store.out}: task {i} is left from a conversion with --num-tasks "
                                    f"{d.get('num_tasks')} (task {first} has {record['num_tasks']}); remove "
                                    f"{TASKS_DIR}/{part(i)} and its partitions */{part(i)} from {store.out}")
        if d.get("request") != record:
            differs = difference(d.get("request") or {}, record, f"in task {i}", f"in task {first}")
            raise OutputExistsError(f"--merge {store.out}: task {i} was converted with other arguments than task "
                                    f"{first} ({differs}); redo it with the same arguments (--task {i} --overwrite)")
    total = record["num_tasks"]
    missing = [i for i in range(total) if i not in done]
    if missing:
        raise MetadataError(f"--merge {store.out}: {len(missing)} of {total} tasks not done ({_ranges(missing)}: "
                            f"no {TASKS_DIR}/IIIII/{DONE_FILE}); run them first: convert_to_mds.py ... "
                            f"--task {_ranges(missing).replace(' ', '')}")
    return done


def _ranges(numbers: list[int]) -> str:
    """``0, 2-4, 7``: a list of task numbers as a user would type it."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _merge_dataset(store: Store, work: Path, key: str, metas: dict[int, DatasetMetadata], record: dict,
                   done: dict[int, dict]) -> DatasetMetadata:
    """One dataset's merged split indexes and metadata, built in ``work``."""
    base = f"{key}/" if key else ""
    first = next(iter(metas.values()))
    values = sorted({m.source["group"]["value"] for m in metas.values() if "group" in m.source})
    if len(values) > 1:
        raise InputError(f"--merge {store.out}: group values {values[0]!r} and {values[1]!r} of "
                         f"{record['group_by']!r} both map to the folder {key!r} (in different tasks); rename one "
                         "of them in the data or group by another key")
    splits, index_sha256 = {}, {}
    for split in [s for s in (TRAIN, VAL) if any(s in m.splits for m in metas.values())]:
        parts = {i: m for i, m in metas.items() if split in m.splits}
        _merge_split(store, work / base / split, f"{base}{split}", parts)
        splits[split] = SplitStats(**{f: sum(getattr(m.splits[split], f) for m in parts.values())
                                      for f in asdict(SplitStats())})
        index_sha256[split] = _sha256(work / base / split / INDEX_FILE)
    have = set(store.names(f"{base}{TOKENIZER_DIR}"))
    missing = [n for n in first.tokenizer.get("files", []) if f"{base}{TOKENIZER_DIR}/{n}" not in have]
    if missing:
        raise MetadataError(f"--merge {store.out}: {base}{TOKENIZER_DIR}/{missing[0]} is missing (the tasks publish "
                            "it); re-run any one task with --overwrite")
    source = {"inputs": [p for m in metas.values() for p in m.source["inputs"]],
              **{k: v for k, v in record.items() if k not in ("tokenizer", "seq_len")},
              "tasks": [{"task": i, "inputs": m.source["inputs"], "tokenizer_backend": done[i]["tokenizer_backend"],
                         "splits": {s: asdict(v) for s, v in m.splits.items()}} for i, m in metas.items()],
              "index_sha256": index_sha256}
    if "group" in first.source:
        source["group"] = first.source["group"]
    if record.get("skip_bad"):
        source["bad_records"] = sum(m.source.get("bad_records", 0) for m in metas.values())
    meta = replace(first, splits=splits, source=source)
    meta.write(work / base)
    return meta


def _merge_split(store: Store, dest: Path, name: str, parts: dict[int, DatasetMetadata]) -> None:
    """The tasks' copies of one split's index, each checked against its task's record first (a partition
    half-written by a killed or concurrent writer does not match it), merged as Streaming's ``merge_index`` does."""
    indexes = []
    for i, meta in parts.items():
        local = dest / part(i) / INDEX_FILE
        try:
            store.fetch(f"{name}/{part(i)}/{INDEX_FILE}", local)
        except (OSError, RemoteError):
            raise MetadataError(f"--merge {store.out}: {name}/{part(i)}/{INDEX_FILE} is missing though task {i} "
                                f"is done; redo it: --task {i} --overwrite") from None
        if _sha256(local) != meta.source["index_sha256"][dest.name]:
            raise MetadataError(f"--merge {store.out}: {name}/{part(i)}/{INDEX_FILE} is not the index task {i} "
                                f"recorded; redo it: --task {i} --overwrite")
        indexes.append(local)
    with open(dest / INDEX_FILE, "w") as f:
        json.dump(merged_index(indexes), f)  # json.dump's default layout, as merge_index writes it: the same bytes


def merged_index(indexes: list[Path]) -> dict:
    """Streaming 0.13's ``merge_index`` over local partition indexes (``streaming.base.util._merge_index_from_list``,
    the same object): every partition's shards in order, each file's basename prefixed with its partition's folder.
    Written here because importing Streaming imports torch, ~1.5 s of a merge that otherwise takes a fraction of
    that; tests/conversion/test_tasks.py checks it against ``merge_index`` byte for byte."""
    shards = []
    for index in indexes:
        for shard in json.loads(index.read_text())["shards"]:
            for key in ("raw_data", "zip_data", "raw_meta", "zip_meta"):
                if shard.get(key):
                    shard[key]["basename"] = os.path.join(index.parent.name, shard[key]["basename"])
            shards.append(shard)
    return {"version": 2, "shards": shards}


def _dropped(done: dict[int, dict], datasets: dict) -> dict:
    """Groups too small in every task (groups.json's ``dropped``): their counts summed over the tasks."""
    dropped: dict[str, dict] = {}
    for d in done.values():
        for folder, entry in d.get("dropped", {}).items():
            if folder in datasets:
                continue
            total = dropped.setdefault(folder, {"value": entry["value"]})
            for k, v in entry.items():
                if k != "value":
                    total[k] = total.get(k, 0) + v
    return dropped


def _publish_merge(store: Store, work: Path, datasets: dict[str | None, DatasetMetadata], grouped: bool) -> None:
    """The merged indexes, then each dataset's metadata.json, then groups.json: finished-markers last."""
    for folder, meta in datasets.items():
        base = "" if folder is None else f"{folder}/"
        for split in meta.splits:
            store.put_file(work / base / split / INDEX_FILE, f"{base}{split}/{INDEX_FILE}")
    for folder in datasets:
        base = "" if folder is None else f"{folder}/"
        store.put_file(work / base / METADATA_FILE, f"{base}{METADATA_FILE}")
    if grouped:
        store.put_file(work / GROUPS_FILE, GROUPS_FILE)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
