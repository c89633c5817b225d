"""What the tests share: running the scripts as users do (in subprocesses, by absolute path, never from the repo
folder), reading what a run wrote, the one-``error:``-line check, a private /dev/shm, and a real S3 endpoint.

Fixtures built on these live in tests/conftest.py. Run as a script, this file is the pause launcher of
:func:`start_train` (``pause=``: see :func:`_paused_main`) and the spike launcher of :func:`run_train` and
:func:`start_train` (``spike=``: see :func:`_spiked_main`).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
COMPOSER = str(Path(sys.executable).parent / "composer")
SHAKESPEARE = REPO / "assets" / "tinyshakespeare.txt"  # shipped with the project: no ../shared needed
TRAIN_SCRIPT = REPO / "gpt_pile_composer.py"
TINY_YAML = REPO / "yamls" / "tiny.yaml"
LOSS = "loss/train/total"
EVAL_LOSS = "metrics/val/LanguageCrossEntropy"

_WORKDIR: Optional[Path] = None  # set by conftest to a session scratch folder


def workdir() -> Path:
    """The folder subprocesses run in (and, via conftest, the tests themselves): never the repo, so that nothing a
    script writes into its working directory (wandb/, ./s3:, runs/) lands in the working tree."""
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = Path(tempfile.mkdtemp(prefix="gpt-tests-cwd-"))
    return _WORKDIR


# ------------------------------------------------------------------------------------------------------- datasets


def paragraphs_jsonl(text: str, out: Path) -> Path:
    """Documents = blank-line separated paragraphs, one JSON line each (the Pile's layout)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for para in text.split("\n\n"):
            if para.strip():
                f.write(json.dumps({"text": para + "\n"}) + "\n")
    return out


def make_dataset(root: Path, text: str, seq_len: int = 32, val_fraction: float = 0.1,
                 tokenizer: str = "bytes") -> Path:
    from conversion.convert import convert

    src = paragraphs_jsonl(text, root / "src" / "docs.jsonl")
    out = root / "ds"
    convert([str(src)], str(out), tokenizer, seq_len, val_fraction=val_fraction, progress=False)
    return out


# ---------------------------------------------------------------------------------------------------- subprocesses


def train_env() -> dict[str, str]:
    """The environment of every subprocess: CPU only (as on a machine without a GPU), wandb offline."""
    env = dict(os.environ)
    env["WANDB_MODE"] = "offline"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def script_cmd(script: str | Path, *args: str | Path) -> list[str]:
    """``python REPO/SCRIPT ARGS`` (by absolute path: it runs from any folder)."""
    return [PYTHON, str(REPO / script), *map(str, args)]


def run_script(script: str | Path, *args: str | Path, env: Optional[dict[str, str]] = None,
               cwd: Optional[Path] = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts as a user does; output captured as text."""
    return subprocess.run(script_cmd(script, *args), cwd=cwd or workdir(), env=env or train_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_script(script: str | Path, *args: str | Path, env: Optional[dict[str, str]] = None,
                 cwd: Optional[Path] = None, **popen: Any) -> subprocess.Popen:
    """Start one of the repo's scripts (``popen``: stdout/stderr/start_new_session... for Popen)."""
    return subprocess.Popen(script_cmd(script, *args), cwd=cwd or workdir(), env=env or train_env(), **popen)


def run_convert(*args: str | Path, env: Optional[dict[str, str]] = None,
                timeout: float = 180) -> subprocess.CompletedProcess:
    """``python convert_to_mds.py ARGS`` as a user runs it."""
    return run_script("convert_to_mds.py", *args, env=env, timeout=timeout)


def start_convert(*args: str | Path, env: Optional[dict[str, str]] = None, **popen: Any) -> subprocess.Popen:
    """``convert_to_mds.py ARGS`` started in its own session (so a test can signal its process group)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    popen.setdefault("text", True)
    return start_script("convert_to_mds.py", *args, env=env, start_new_session=True, **popen)


def convert_main(capsys: Any, *argv: str | Path) -> tuple[int, str, str]:
    """``convert_to_mds.main(ARGV)`` in this process, as the script would run it (argparse's exit included):
    (exit code, stdout, stderr). The SIGTERM handler and warning hook it installs are put back after."""
    import warnings

    import convert_to_mds

    handler, show = signal.getsignal(signal.SIGTERM), warnings.showwarning
    try:
        code = convert_to_mds.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, handler)
        warnings.showwarning = show
    out, err = capsys.readouterr()
    return code, out, err


def error_line(stderr: str) -> str:
    """The single ``error: ...`` line a script prints for bad input (and no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def one_error(proc: subprocess.CompletedProcess | subprocess.Popen, *needles: str, stderr: Optional[str] = None,
              code: int = 2) -> str:
    """A script refused bad input: exit ``code`` (2), no traceback, exactly one ``error:`` line holding every one of
    ``needles``; returns that line. ``stderr`` when the caller already read it (a Popen)."""
    err = proc.stderr if stderr is None else stderr
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}:\n{err[-3000:]}"
    line = error_line(err)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# ---------------------------------------------------------------------------------------------------------- training


def tiny_args(ds: Path | str, runs: Path, *extra: str) -> list[str]:
    """A micro model that trains in seconds; later items override earlier ones. fp32, not tiny.yaml's measured
    ``auto``: runs that tests compare must not depend on a timing."""
    return [
        str(TINY_YAML), f"data.path={ds}", f"runs_root={runs}", "model.preset=micro",
        "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "global_train_batch_size=8",
        "device_train_microbatch_size=4", "progress_bar=false", "log_interval=1000ba",
        "eval_subset_num_batches=4", "scheduler.t_warmup=5ba", "precision=fp32", *extra,
    ]


def train_cmd(args: Sequence[str], nproc: int = 0, spike: Optional[tuple[int, float | str]] = None,
              digests: Optional[Path] = None) -> list[str]:
    """``python gpt_pile_composer.py ARGS`` (nproc=0) or ``composer -n NPROC gpt_pile_composer.py ARGS``;
    ``spike=(SAMPLE_ID, FACTOR)``: through this file's spike launcher (:func:`_spiked_main`); ``digests=DIR``:
    through its digest launcher (:func:`_digest_main`)."""
    launcher = [PYTHON] if nproc == 0 else [COMPOSER, "-n", str(nproc)]
    script = [str(TRAIN_SCRIPT)]
    if spike is not None:
        script = [str(Path(__file__).resolve()), "spike", str(spike[0]), str(spike[1]), *script]
    if digests is not None:
        assert spike is None, "one launcher at a time"
        script = [str(Path(__file__).resolve()), "digest", str(digests), *script]
    return [*launcher, *script, *map(str, args)]


def run_train(args: Sequence[str], nproc: int = 0, timeout: float = 300, check: bool = True,
              env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None,
              shm: Optional["PrivateShm"] = None, spike: Optional[tuple[int, float | str]] = None,
              digests: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run training to its end; ``shm``: inside that private /dev/shm; ``spike``, ``digests``: see
    :func:`train_cmd`."""
    cmd, env, cwd = train_cmd(args, nproc, spike, digests), env or train_env(), cwd or workdir()
    if shm is not None:
        cmd, env = shm.cmd(cmd, cwd), shm.env(env)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def start_train(args: Sequence[str], log: Path, nproc: int = 0, env: Optional[dict[str, str]] = None,
                cwd: Optional[Path] = None, shm: Optional["PrivateShm"] = None,
                pause: Optional[tuple[str, Path]] = None, spike: Optional[tuple[int, float | str]] = None,
                ) -> subprocess.Popen:
    """Start a training run in its own process group (so a test can SIGKILL all of it), output to ``log``.

    ``pause=(WHERE, MARKER)`` (one process only) runs it through this file's pause launcher: at WHERE
    (``checkpoint:NAME``: half-way through writing checkpoint NAME; ``eval:N``: at the N-th eval batch;
    ``batch:N``: at the start of the first training batch after N batches) the run creates MARKER and waits there
    to be killed, so ``kill_when(proc, MARKER.exists)`` lands exactly there, however loaded the machine.
    ``spike``: see :func:`train_cmd` (with ``pause``, the pause launcher runs the spike launcher)."""
    cmd, env, cwd = train_cmd(args, nproc, spike), env or train_env(), cwd or workdir()
    if pause is not None:
        assert nproc == 0, "the pause launcher runs one process"
        cmd = [PYTHON, str(Path(__file__).resolve()), "pause", pause[0], str(pause[1]), *cmd[1:]]
    if shm is not None:
        cmd, env = shm.cmd(cmd, cwd), shm.env(env)
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def start_nodes(node_args: Sequence[Sequence[str]], tmp: Path, env: Optional[dict[str, str]] = None,
                ) -> list[subprocess.Popen]:
    """One ``composer -n 1`` launcher per "node" on 127.0.0.1, ``node_args[i]`` for node i. Nodes share nothing
    but the network and the working folder: each runs in its own mount namespace with a fresh /dev/shm (so a
    ``runs_root`` under /dev/shm is node-local) and its own TMPDIR. Each launcher is its own process group (so a
    test can SIGKILL all of it); output goes to ``tmp/nodeN.log`` (appended)."""
    port, procs = free_port(), []
    for rank, args in enumerate(node_args):
        node_tmp = short_path(tmp / f"node{rank}-tmp")
        launch = [COMPOSER, "--world_size", str(len(node_args)), "--node_rank", str(rank), "--master_addr",
                  "127.0.0.1", "--master_port", str(port), "-n", "1", str(TRAIN_SCRIPT), *map(str, args)]
        with open(tmp / f"node{rank}.log", "a") as out:
            procs.append(subprocess.Popen(private_shm_cmd(launch), cwd=workdir(),
                                          env={**(env or train_env()), "TMPDIR": str(node_tmp)},
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def short_path(folder: Path) -> Path:
    """``folder`` (created) as a short path: a symlink to it under a fresh /tmp folder. A TMPDIR deep in pytest's
    tree (pytest-N/popen-gwN/test_.../) makes multiprocessing's socket paths longer than AF_UNIX allows."""
    folder.mkdir(parents=True, exist_ok=True)
    link = Path(tempfile.mkdtemp(prefix="n")) / "t"
    link.symlink_to(folder)
    return link


def wait_nodes(procs: Sequence[subprocess.Popen], tmp: Path, timeout: float = 300) -> list[str]:
    """Wait for every node's launcher; returns each node's log."""
    for proc in procs:
        proc.wait(timeout=timeout)
    return [(tmp / f"node{rank}.log").read_text() for rank in range(len(procs))]


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240, poll: float = 0.002) -> None:
    """SIGKILL the run's whole process group as soon as ``ready()`` is true (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before the kill point")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the kill point never came")
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 120, poll: float = 0.01,
               proc: Optional[subprocess.Popen] = None) -> None:
    """Poll ``ready()`` until true; fails after ``timeout`` s, or as soon as ``proc`` (if given) has ended."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc is None or proc.poll() is None, f"the process ended (code {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(poll)


# ------------------------------------------------------------------------------------------------ what a run wrote


def metrics_rows(run_dir: Path) -> list[dict]:
    """Every row of the run's metrics.jsonl (core.runs.read_metrics: the product's own reader)."""
    from core.runs import read_metrics

    return read_metrics(run_dir)


def last_step(run_dir: Path) -> int:
    """The step of the last complete row of metrics.jsonl (0 when none yet), read as a tailing process would."""
    if not (run_dir / "metrics.jsonl").is_file():
        return 0
    rows = [r for r in metrics_rows(run_dir) if "step" in r]
    return rows[-1]["step"] if rows else 0


def losses(run_dir: Path, key: str = LOSS) -> dict[int, float]:
    """{step: train loss}; steps must be logged once each, in order."""
    rows = metrics_rows(run_dir)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"steps repeated or out of order: {steps}"
    return {r["step"]: r[key] for r in rows if key in r}


def rows_by_step(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in metrics_rows(run_dir)}


def sample_ids(run_dir: Path) -> dict[int, list[int]]:
    """{step: the sample ids the step trained on} (runs with log_sample_ids=true)."""
    return {r["step"]: r["data/sample_ids"] for r in metrics_rows(run_dir) if "data/sample_ids" in r}


def final_weights(run_dir: Path) -> dict:
    """The model state of a run folder's latest checkpoint (or of a checkpoint file given directly)."""
    import torch

    path = run_dir / "checkpoints" / "latest-rank0.pt" if Path(run_dir).is_dir() else run_dir
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["state"]["model"]


def final_model(run_dir: Path) -> dict:
    """The final model weights of a run folder by the GPT's own names: its latest checkpoint's, gathered when that
    is sharded (FSDP), so that a sharded run and a full-state-dict one compare."""
    if (Path(run_dir) / "checkpoints" / "latest-rank0.pt").resolve().is_dir():
        from evaluation.checkpoints import load_gpt

        return load_gpt(str(run_dir)).state_dict()
    return {k.removeprefix("model."): v for k, v in final_weights(run_dir).items()}


def assert_same_run(a: Path, b: Path) -> None:
    """Run ``b`` replays run ``a`` exactly: the same steps, per-step losses ``==``, final weights ``torch.equal``."""
    import torch

    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) == list(range(1, max(la) + 1))
    diffs = [s for s in la if la[s] != lb[s]]
    assert not diffs, f"losses differ at steps {diffs[:5]}: {[(la[s], lb[s]) for s in diffs[:3]]}"
    wa, wb = final_model(a), final_model(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "final weights differ"


# -------------------------------------------------------------------------------------------- ports, /dev/shm, HF


def free_port(host: str = "127.0.0.1") -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_MOUNT_SHM = "mount -t tmpfs tmpfs /dev/shm"


def private_shm_cmd(cmd: Sequence[str]) -> list[str]:
    """``cmd`` in its own mount namespace with a fresh, empty /dev/shm (give it its own TMPDIR too, where Streaming
    keeps its file locks): nothing else on the machine sees its shared memory, nor it theirs."""
    return ["unshare", "--mount", "sh", "-c", f'{_MOUNT_SHM} && exec "$@"', "private-shm", *map(str, cmd)]


class PrivateShm:
    """A private /dev/shm that several commands can share, one after another or together, and that the test can
    look into (``.path``): a holder process keeps a mount namespace with its own tmpfs on /dev/shm; commands join
    it with nsenter. ``tmp`` is their TMPDIR. Everything in it is gone when the holder stops."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.holder: Optional[subprocess.Popen] = None

    def __enter__(self) -> "PrivateShm":
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(["unshare", "--mount", "sh", "-c", f"{_MOUNT_SHM} && exec sleep infinity"])
        outside = os.stat("/dev/shm").st_dev
        wait_until(lambda: self._dev() not in (None, outside), "the private /dev/shm is mounted", timeout=30,
                   proc=self.holder)
        return self

    def _dev(self) -> Optional[int]:
        try:
            return os.stat(self.path).st_dev
        except OSError:
            return None

    def __exit__(self, *exc: object) -> None:
        assert self.holder is not None
        self.holder.kill()
        self.holder.wait()

    @property
    def path(self) -> Path:
        """The private /dev/shm, seen from outside (through the holder's root)."""
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/root/dev/shm")

    def cmd(self, cmd: Sequence[str], cwd: Path) -> list[str]:
        assert self.holder is not None
        return ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", f"--wd={cwd}", "--", *map(str, cmd)]

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, "TMPDIR": str(self.tmp)}


def hf_offline(monkeypatch: Any) -> None:
    """Hugging Face offline for one test: the env flags and the module constants that datasets and
    huggingface_hub read them into at import, all restored by ``monkeypatch`` afterwards."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if hasattr(datasets.config, name):
            monkeypatch.setattr(datasets.config, name, True)


# ------------------------------------------------------------------------------------------------ a real S3 endpoint
#
# moto's server on 127.0.0.1 (an ephemeral port): nothing is mocked in the code under test, scripts and Streaming
# talk HTTP to it exactly as to AWS, selected by ``S3_ENDPOINT_URL``. The server runs in the pytest process, so tests
# can also read its backend state (object timestamps with microseconds, delete markers) to check write order.

HOST = "127.0.0.1"
REGION = "us-east-1"
KEY_ID, SECRET = "testing", "testing"


@dataclass
class MotoS3:
    """A started moto server and what tests need from it."""

    server: Any
    port: int
    _iam_key: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self, key_id: str = KEY_ID, secret: str = SECRET, service: str = "s3") -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=key_id,
                            aws_secret_access_key=secret)

    def new_bucket(self, versioned: bool = False, **creds: str) -> str:
        """A fresh bucket per test, so tests never see each other's objects."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        s3 = self.client(**creds)
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def keys(self, bucket: str, prefix: str = "", **creds: str) -> list[str]:
        """Object names under ``prefix/``, relative to it, sorted."""
        base = f"{prefix.strip('/')}/" if prefix else ""
        pages = self.client(**creds).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
        return sorted(o["Key"][len(base):] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def versions(self, bucket: str, key: str) -> list[Any]:
        """The server's own records for ``key`` (objects and delete markers), oldest first."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return list(s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys.getlist(key, []))

    def iam_key(self) -> dict[str, str]:
        """Credentials of an IAM user allowed s3:* (created once; made while the server accepts anything)."""
        if not self._iam_key:
            iam = self.client(service="iam")
            iam.create_user(UserName="trainer")
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            iam.put_user_policy(UserName="trainer", PolicyName="s3", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName="trainer")["AccessKey"]
            self._iam_key.update(key_id=key["AccessKeyId"], secret=key["SecretAccessKey"])
        return dict(self._iam_key)

    @contextlib.contextmanager
    def checking_credentials(self) -> Iterator[dict[str, str]]:
        """Make the server verify signatures against its IAM users (moto's INITIAL_NO_AUTH_ACTION_COUNT, set at
        run time through its /moto-api/reset-auth endpoint); yields valid credentials; back to open after."""
        import requests

        key = self.iam_key()
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        try:
            yield key
        finally:
            requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()

    def env(self, key_id: str = KEY_ID, secret: str = SECRET, endpoint: Optional[str] = None) -> dict[str, str]:
        """``train_env()`` plus what an S3 client reads, pointed at this server only (no profile or config file
        of the machine can leak in)."""
        return {**train_env(), **s3_vars(endpoint or self.endpoint, key_id, secret)}


def s3_vars(endpoint: str, key_id: str = KEY_ID, secret: str = SECRET) -> dict[str, str]:
    return {
        "S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials", "AWS_EC2_METADATA_DISABLED": "true",
    }


def start_moto() -> MotoS3:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request drowns failures

    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    return MotoS3(server, server.get_host_and_port()[1])


# ------------------------------------------------------------------------------------------------ the pause launcher


def _park(marker: Path) -> None:
    """Tell the test we are at the pause point, then wait there to be killed."""
    marker.touch()
    while True:  # parked until the test's SIGKILL (or, if the test failed first, conftest's reaper)
        signal.pause()


def _paused_main(where: str, marker: str, script: str, *argv: str) -> None:
    """``python tests/helpers.py pause WHERE MARKER SCRIPT ARGS``: run SCRIPT as ``__main__`` with one pause point.

    ``checkpoint:NAME``: the checkpoint file NAME is written half (a real partial zip on disk), then the run parks;
    ``eval:N``: the run parks in the N-th eval batch's forward; ``batch:N``: the run parks at the first BATCH_START
    whose timestamp is N batches (after a rollback, that of the new trajectory: the old one never got there). SCRIPT
    may be this file's spike launcher. Test code only: nothing in the product knows of it."""
    import io
    import runpy

    sys.path.insert(0, str(REPO))
    kind, _, arg = where.partition(":")
    if kind == "checkpoint":
        import torch
        from composer.utils import checkpoint

        write = checkpoint._write_checkpoint_file

        def write_half_then_park(state_dict: dict, filename: str) -> None:
            if os.path.basename(filename) != arg:
                return write(state_dict, filename)
            buffer = io.BytesIO()
            torch.save(state_dict, buffer)
            data = buffer.getbuffer()
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                _park(Path(marker))

        checkpoint._write_checkpoint_file = write_half_then_park
    elif kind == "eval":
        from training.model import ComposerGPT

        eval_forward, calls = ComposerGPT.eval_forward, [0]

        def eval_forward_or_park(self, batch, outputs=None):
            calls[0] += 1
            if calls[0] == int(arg):
                _park(Path(marker))
            return eval_forward(self, batch, outputs)

        ComposerGPT.eval_forward = eval_forward_or_park
    elif kind == "batch":
        from composer import Callback

        import training.trainer

        class ParkAtBatch(Callback):
            def batch_start(self, state, logger) -> None:
                if int(state.timestamp.batch) == int(arg):
                    _park(Path(marker))

        fit = training.trainer.fit

        def fit_with_park(trainer, *args, **kwargs):
            trainer.state.callbacks.append(ParkAtBatch())
            return fit(trainer, *args, **kwargs)

        training.trainer.fit = fit_with_park
    else:
        raise SystemExit(f"unknown pause point {where!r}")
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


NAN_GRAD = "nangrad"  # the spike launcher's FACTOR for a finite loss with NaN gradients


def _spiked_main(sample_id: str, factor: str, script: str, *argv: str) -> None:
    """``python tests/helpers.py spike SAMPLE_ID FACTOR SCRIPT ARGS``: run SCRIPT as ``__main__`` with the training
    loss of every microbatch holding Streaming sample SAMPLE_ID multiplied by FACTOR (``inf``: NaN weights after the
    step), a loss spike on demand; FACTOR ``nangrad`` leaves that loss as it is but makes its gradients NaN (the
    weights turn NaN while the loss looked fine). Keyed by the data, not the step: a rollback skips that sample, so
    the spike happens once per trajectory, and a killed run re-run from any checkpoint meets it exactly where the
    uninterrupted run did. Test code only: nothing in the product knows of it."""
    import runpy

    sys.path.insert(0, str(REPO))
    import torch

    from training.model import ComposerGPT

    class NaNGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    loss = ComposerGPT.loss
    spike = NaNGrad.apply if factor == NAN_GRAD else (lambda value: value * float(factor))

    def loss_or_spike(self, outputs, batch, *args, **kwargs):
        value = loss(self, outputs, batch, *args, **kwargs)
        return spike(value) if bool((batch["sample_ids"] == int(sample_id)).any()) else value

    ComposerGPT.loss = loss_or_spike
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


def _digest_main(out: str, script: str, *argv: str) -> None:
    """``python tests/helpers.py digest DIR SCRIPT ARGS``: run SCRIPT as ``__main__``; when its fit returns, every
    rank writes ``DIR/weights-rankR.sha256``, a digest of the weights it holds (each tensor's bytes in key order), so
    a test can see that the ranks of a DDP run end bit-identical. Test code only: nothing in the product knows of it."""
    import hashlib
    import runpy

    sys.path.insert(0, str(REPO))
    import torch
    from composer.utils import dist

    import training.trainer

    fit = training.trainer.fit

    def fit_then_digest(trainer, *args, **kwargs):
        result = fit(trainer, *args, **kwargs)
        digest = hashlib.sha256()
        for key, value in sorted(trainer.state.model.state_dict().items()):
            digest.update(key.encode() + value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"weights-rank{dist.get_global_rank()}.sha256").write_text(digest.hexdigest() + "\n")
        return result

    training.trainer.fit = fit_then_digest
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


def tensorboard_view(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows the run (purges applied), every point kept."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_view_is_metrics_jsonl(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Each tag TensorBoard shows: the same steps (each once) and values (1e-6) as the key in metrics.jsonl. Of
    ``time/*`` (clocks, and counters), only the steps: Composer logs them again at FIT_END, and a resume that redoes
    an epoch-end eval times it again; metrics.jsonl keeps the last value of a step, TensorBoard (which cannot replace
    a point) the first."""
    import pytest

    from callbacks.tensorboard import scalar

    view = tensorboard_view(run_dir)
    rows = metrics_rows(run_dir)
    assert LOSS in view and EVAL_LOSS in view, sorted(view)
    for tag, points in view.items():
        expected = [(r["step"], scalar(r[tag])) for r in rows if tag in r and scalar(r[tag]) is not None]
        assert [s for s, _ in points] == [s for s, _ in expected], tag
        if tag.startswith("time/"):
            continue
        assert [v for _, v in points] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-6), tag
    return view


if __name__ == "__main__" and len(sys.argv) > 4 and sys.argv[1] == "pause":
    _paused_main(*sys.argv[2:])
if __name__ == "__main__" and len(sys.argv) > 4 and sys.argv[1] == "spike":
    _spiked_main(*sys.argv[2:])
if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "digest":
    _digest_main(*sys.argv[2:])

