"""Each work-around in upstream/composer.py: the upstream behaviour it answers, and that ours avoids it."""
from __future__ import annotations

import subprocess

import pytest
from composer.core.engine import Engine
from composer.core.event import Event

from tests.helpers import PYTHON, REPO, free_port, make_dataset, private_shm_cmd, train_env
from upstream.composer import skip_engine_debug_log


class _ExplodingTimestamp:
    """A timestamp whose every read fails: shows whether _debug_log touches it."""

    def __getattr__(self, name):
        raise RuntimeError("timestamp read")


class _FakeState:
    timestamp = _ExplodingTimestamp()


class _FakeTrainer:
    def __init__(self):
        self.engine = Engine.__new__(Engine)  # no state needed: we only call _debug_log
        self.engine.state = _FakeState()
        self.engine._is_closed = True  # nothing to close: Engine.__del__ would otherwise fail on the missing field


def test_upstream_debug_log_formats_even_without_engine_debug(monkeypatch):
    monkeypatch.delenv("ENGINE_DEBUG", raising=False)
    engine = _FakeTrainer().engine
    with pytest.raises(RuntimeError, match="timestamp read"):
        engine._debug_log(Event.BATCH_END, "Running callback X")  # the bug: work done for a message never shown


def test_skip_engine_debug_log_makes_it_free(monkeypatch):
    monkeypatch.delenv("ENGINE_DEBUG", raising=False)
    trainer = _FakeTrainer()
    skip_engine_debug_log(trainer)
    trainer.engine._debug_log(Event.BATCH_END, "Running callback X")  # no timestamp read, no error


def test_engine_debug_keeps_upstream_logging(monkeypatch):
    monkeypatch.setenv("ENGINE_DEBUG", "1")
    trainer = _FakeTrainer()
    skip_engine_debug_log(trainer)
    with pytest.raises(RuntimeError, match="timestamp read"):
        trainer.engine._debug_log(Event.BATCH_END, "Running callback X")


def test_upstream_wandb_logger_breaks_autoresume_lookup(tmp_path, monkeypatch):
    import wandb
    from composer.loggers import WandBLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    try:
        with pytest.raises(RuntimeError, match="after running init"):  # autoresume catches only FileNotFoundError
            WandBLogger(project="x").download_file("latest-rank0.pt", str(tmp_path / "ckpt"))
    finally:
        wandb.teardown()  # the lookup started wandb's service in this process: stop it now, not at exit


def test_our_wandb_logger_reports_not_found(tmp_path, monkeypatch):
    from upstream.composer import WandBLoggerNoArtifacts

    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(FileNotFoundError, match="latest-rank0.pt: checkpoints are not kept in wandb"):
        WandBLoggerNoArtifacts(project="x").download_file("latest-rank0.pt", str(tmp_path / "ckpt"))


_SHM_PROBE = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from loaders.dataset import TokenSamples
from loaders.shm import clean_stale_shared_memory
clean_stale_shared_memory()  # no dead runs' locks or segments: this dataset takes prefix 0, where upstream looks
dataset = TokenSamples(local={local!r}, batch_size=4)
mine = sorted(p.name for p in Path("/dev/shm").glob(f"{{dataset._shm_prefix_int:06}}_*"))
assert dataset._shm_prefix_int == 0 and mine, "StreamingDataset keeps its state in /dev/shm"
import json, subprocess
from upstream.streaming import pid_namespace
dead = subprocess.Popen(["true"]); dead.wait()  # a process of this PID namespace that has ended
def leave(prefix, namespace):
    # what a SIGKILLed job leaves: a segment nobody maps, and (ours) the record of who registered it
    segment = Path("/dev/shm") / f"{{prefix:06}}_barrier"
    segment.write_bytes(bytes(8))
    if namespace is not None:
        record = dict(pid_namespace=namespace, pid=dead.pid, start_time=0.0)
        (Path("/dev/shm") / f"gpt_shm_owner_{{prefix:06}}").write_text(json.dumps(record))
    return segment
stale = leave(999, pid_namespace())
neighbour = leave(998, "pid:[1]")  # a job in another container sharing /dev/shm: its PIDs mean nothing here
unknown = leave(997, None)  # no record: cannot tell
if {upstream!r}:
    from streaming.base.util import clean_stale_shared_memory as upstream
    upstream()
else:
    removed = clean_stale_shared_memory()
    assert str(stale) in removed and not stale.exists(), removed
    assert neighbour.exists() and unknown.exists(), "a segment whose owner cannot be seen is left alone"
for segment in (stale, neighbour, unknown):
    segment.unlink(missing_ok=True)
print(sum((Path("/dev/shm") / name).exists() for name in mine), len(mine))
"""


def _live_segments_after_cleaning(tmp_path, text: str, upstream: bool) -> tuple[int, int]:
    """In a fresh process with its own /dev/shm: (live segments left, live segments before) after a clean."""
    ds = make_dataset(tmp_path, text[:20_000], seq_len=32, val_fraction=0.0)
    code = _SHM_PROBE.format(repo=str(REPO), local=str(ds / "train"), upstream=upstream)
    # A private /dev/shm (tmpfs in its own mount namespace) and TMPDIR (Streaming's file locks): a dataset alive
    # elsewhere on the machine cannot hold prefix 0, the one upstream's cleaner looks at.
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run(private_shm_cmd([PYTHON, "-c", code]), capture_output=True, text=True, cwd=tmp_path,
                          env={**train_env(), "TMPDIR": str(tmp_path / "tmp")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    left, before = map(int, proc.stdout.split())
    return left, before


@pytest.mark.slow  # subprocesses that each import Streaming/Composer
def test_upstream_clean_stale_shared_memory_removes_a_live_runs_memory(tmp_path, shakespeare_text):
    left, before = _live_segments_after_cleaning(tmp_path, shakespeare_text, upstream=True)
    assert before > 0 and left == 0  # the bug: a live dataset's segments are unlinked under it


@pytest.mark.slow  # subprocesses that each import Streaming/Composer
def test_our_cleaner_spares_live_memory_and_removes_dead(tmp_path, shakespeare_text):
    left, before = _live_segments_after_cleaning(tmp_path, shakespeare_text, upstream=False)
    assert before > 0 and left == before


def _register_race(tmp_path, ds, mode: str) -> int:
    """How many of 2 jobs opening a dataset at once die registering Streaming's shared memory."""
    tmp = tmp_path / f"tmp-{mode}"
    tmp.mkdir(exist_ok=True)
    race = [PYTHON, str(REPO / "tests" / "upstream" / "shm_race.py"), "2", str(ds / "train"), mode]
    proc = subprocess.run(private_shm_cmd(race), capture_output=True, text=True, cwd=tmp_path,
                          env={**train_env(), "TMPDIR": str(tmp)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1])


@pytest.mark.slow  # subprocesses that each import Streaming/Composer
def test_upstream_jobs_starting_together_collide_and_ours_do_not(tmp_path, shakespeare_text):
    """Streaming 0.13.0 picks a free shared-memory prefix and then creates it, with no lock between: jobs started
    together (a sweep, two runs of a comparison) pick the same one and all but one die with FileExistsError.
    registering_shared_memory serialises the pick across the machine."""
    ds = make_dataset(tmp_path, shakespeare_text[:20_000], seq_len=32, val_fraction=0.0)
    assert _register_race(tmp_path, ds, "upstream") == 1  # both found prefix 0 free; the second to create it died
    assert _register_race(tmp_path, ds, "ours") == 0


def _epoch_order(dataset) -> list[int]:
    return [idx for idx, _ in dataset]


def test_upstream_epoch_end_state_replays_the_finished_epoch(tmp_path, shakespeare_text):
    from streaming import StreamingDataset

    from loaders.dataset import TokenSamples

    ds = make_dataset(tmp_path, shakespeare_text[:20_000], seq_len=32, val_fraction=0.0)
    kw = dict(local=str(ds / "train"), batch_size=4, shuffle=True, shuffle_seed=3)
    first = TokenSamples(**kw)
    epoch0, epoch1 = _epoch_order(first), _epoch_order(first)
    assert epoch0 != epoch1
    # Composer checkpoints an epoch end as sample_in_epoch 0; upstream still names the finished epoch
    upstream = StreamingDataset.state_dict(first, 0, True)
    assert upstream["epoch"] == 1 and upstream["sample_in_epoch"] == 0  # epoch 1 was the last one iterated
    first.set_epoch_finished(True)
    ours = first.state_dict(0, True)
    assert ours["epoch"] == 2
    del first
    for state, expected in ((upstream, epoch1), (ours, None)):
        resumed = TokenSamples(**kw)
        resumed.load_state_dict(state)
        order = _epoch_order(resumed)
        if expected is not None:
            assert order == expected  # the bug: the finished epoch is served again
        else:
            assert order not in (epoch0, epoch1) and sorted(order) == sorted(epoch0)  # a new epoch's order
        del resumed


def test_upstream_position_replays_the_samples_a_rollback_skipped(tmp_path, shakespeare_text):
    """A loss-spike rollback leaves the timestamp at 8 samples of epoch 0 and the data at 20. Composer saves the
    timestamp as the dataset's position, so upstream's state resumes at 8 (samples 8..19 trained again); ours at 20,
    and keeps the difference for later checkpoints of the epoch."""
    from streaming import StreamingDataset

    from loaders.dataset import TokenSamples

    ds = make_dataset(tmp_path, shakespeare_text[:20_000], seq_len=32, val_fraction=0.0)
    kw = dict(local=str(ds / "train"), batch_size=4, shuffle=True, shuffle_seed=3)
    first = TokenSamples(**kw)
    epoch0 = _epoch_order(first)  # the epoch the spike happened in, iterated: next_epoch is 1 now
    first.resume_at(0, 20, 8)
    assert _epoch_order(first) == epoch0[20:]  # the rollback's next iteration, in the same process
    upstream = StreamingDataset.state_dict(first, 8, True)
    assert (upstream["epoch"], upstream["sample_in_epoch"]) == (0, 8)  # the bug: a resume replays 8..19
    ours, later = first.state_dict(8, True), first.state_dict(12, True)
    assert (ours["epoch"], ours["sample_in_epoch"], later["sample_in_epoch"]) == (0, 20, 24)
    del first
    resumed = TokenSamples(**kw)
    resumed.load_state_dict(ours)
    assert resumed.state_dict(12, True)["sample_in_epoch"] == 24  # a resumed run keeps skipping them
    assert _epoch_order(resumed) == epoch0[20:]
    del resumed


_SIGNAL_PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
import torch.distributed as td
from composer.utils import dist
td.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=int(os.environ["RANK"]), world_size=2)
upstream = dist.get_node_signal_file_name()
from upstream.composer import per_node_signal_files
per_node_signal_files()
print(upstream, dist.get_node_signal_file_name())
"""


@pytest.mark.slow  # subprocesses that each import Streaming/Composer
def test_signal_file_names_per_node(tmp_path):
    """Two single-rank "nodes": upstream hands both the same signal file name; ours one each."""
    code = _SIGNAL_PROBE.format(repo=str(REPO), port=free_port())
    procs = [subprocess.Popen([PYTHON, "-c", code], text=True, stdout=subprocess.PIPE, cwd=tmp_path,
                              env={**train_env(), "RANK": str(r), "NODE_RANK": str(r), "WORLD_SIZE": "2",
                                   "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}) for r in (0, 1)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    (up0, ours0), (up1, ours1) = outs
    assert up0 == up1 and up0.startswith("._signal_file_node0_")  # the bug: node 1 gets node 0's file
    assert ours0 != ours1 and ours1.endswith("-node1")


CPU_PROBE = """
import sys
from composer.utils import collect_env
started = []
sys.addaudithook(lambda event, args: started.append(args[0]) if event == "subprocess.Popen" else None)
if sys.argv[1] == "ours":
    from upstream.composer import skip_cpuinfo_subprocess
    skip_cpuinfo_subprocess()
env = collect_env.get_composer_env_dict()  # what every Trainer.__init__ calls to log Composer's version
print(len(started), env["cpu_model"])
"""


@pytest.mark.parametrize("side", ["upstream", "ours"])
def test_upstream_trainer_start_runs_a_cpuinfo_subprocess(side):
    out = subprocess.run([str(PYTHON), "-c", CPU_PROBE, side], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=train_env())
    assert out.returncode == 0, out.stderr
    processes, name = out.stdout.split(" ", 1)
    if side == "upstream":
        assert int(processes) >= 1  # py-cpuinfo starts a second interpreter to read the CPU's name
    else:
        assert int(processes) == 0 and name.strip()  # the name, from /proc/cpuinfo


def _traced_fit(lean: bool, monkeypatch) -> tuple[list[tuple[str, str]], int]:
    """A real 3-batch fit (micro GPT, one eval) with callbacks and a logger that record the handlers they run, in
    order; and how many times the base ``Callback.run_event`` ran (upstream's per-callback dispatch)."""
    import torch
    from composer import Trainer
    from composer.core import Callback, Evaluator
    from composer.loggers import LoggerDestination

    from gpt import GPTConfig
    from training.model import ComposerGPT
    from upstream.composer import lean_engine_events

    trace: list[tuple[str, str]] = []

    class Some(Callback):
        def batch_start(self, state, logger):
            trace.append(("some", "batch_start"))

        def after_loss(self, state, logger):
            trace.append(("some", "after_loss"))

        def eval_end(self, state, logger):
            trace.append(("some", "eval_end"))

    class Every(Callback):
        def run_event(self, event, state, logger):
            trace.append(("every", event.value))

    class Log(LoggerDestination):
        def batch_end(self, state, logger):
            trace.append(("log", "batch_end"))

    base, calls = Callback.run_event, [0]

    def counted(self, event, state, logger):
        calls[0] += 1
        return base(self, event, state, logger)

    monkeypatch.setattr(Callback, "run_event", counted)
    torch.manual_seed(0)
    tokens = torch.randint(0, 257, (12, 17))
    batches = torch.utils.data.DataLoader([{"input_ids": t[:-1], "labels": t[1:]} for t in tokens], batch_size=4)
    model = ComposerGPT(GPTConfig(block_size=16, vocab_size=257, n_layer=1, n_head=1, n_embd=8), torch.ones(257))
    val = Evaluator(label="val", dataloader=batches, metric_names=list(model.val_metrics))
    trainer = Trainer(model=model, train_dataloader=batches, eval_dataloader=val, eval_interval="3ba",
                      max_duration="3ba", callbacks=[Log(), Some(), Every()], device="cpu", progress_bar=False,
                      log_to_console=False)
    if lean:
        lean_engine_events(trainer)
    calls[0] = 0  # INIT ran in the constructor, upstream's way either way
    trainer.fit()
    return trace, calls[0]


def test_upstream_engine_runs_every_callbacks_run_event_at_every_event(monkeypatch):
    trace, calls = _traced_fit(False, monkeypatch)
    events = sum(1 for who, _ in trace if who == "every")
    handled = len(trace) - events
    assert calls > events + handled  # Some and Log are dispatched at (nearly) every event, handled or not


def test_lean_engine_events_runs_the_same_handlers_in_the_same_order(monkeypatch):
    monkeypatch.delenv("ENGINE_DEBUG", raising=False)
    upstream, _ = _traced_fit(False, monkeypatch)
    ours, calls = _traced_fit(True, monkeypatch)
    assert ours == upstream and ("log", "batch_end") in ours and ("some", "eval_end") in ours
    assert [e for who, e in ours if who == "some"] == ["batch_start", "after_loss"] * 3 + ["eval_end"]
    assert calls == 0  # no base run_event: only the handlers
