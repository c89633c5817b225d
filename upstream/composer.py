"""Work-arounds for bugs of the pinned Composer 0.32.1, which gets no more releases.

Each docstring starts with the upstream bug in one line; each has a test that shows the upstream behaviour
(named in DESIGN.md's list). They are applied to one Trainer instance where Composer allows it; only
:func:`per_node_signal_files` and :func:`skip_cpuinfo_subprocess` must patch Composer's modules (idempotently).
"""
from __future__ import annotations

import concurrent.futures
import os
import platform
from typing import Any, Optional

from composer import Trainer
from composer.callbacks import CheckpointSaver
from composer.core import Callback, Event, State
from composer.loggers import Logger, LoggerDestination, TensorboardLogger, WandBLogger
from composer.utils import checkpoint, collect_env, parse_uri, reproducibility
from composer.utils import dist as composer_dist

from core.peaks import table_peak


def cpu_model_name() -> str:
    """The CPU's name as the kernel reports it (``model name`` in /proc/cpuinfo), without starting a process."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def skip_cpuinfo_subprocess() -> None:
    """Composer 0.32.1: every Trainer logs its version through ``get_composer_env_dict``, which also asks py-cpuinfo
    for the CPU's name, and py-cpuinfo starts a second Python interpreter for that: ~1 s at every start on every
    rank, for a field nothing logs. Answer it from /proc/cpuinfo instead (before the Trainer is built)."""
    collect_env.get_cpu_model = cpu_model_name


def skip_engine_debug_log(trainer: Trainer) -> None:
    """Composer 0.32.1 bug: Engine._debug_log formats a timestamp string for every callback of every event even
    when ENGINE_DEBUG is unset (~100 calls a step, ~1 ms a step on CPU); make it a no-op unless ENGINE_DEBUG is set."""
    if not os.environ.get("ENGINE_DEBUG"):
        trainer.engine._debug_log = lambda event, msg: None  # type: ignore[method-assign]


def lean_engine_events(trainer: Trainer) -> None:
    """Composer 0.32.1 slowness: Engine.run_event, for each of the ~13 events of every batch, scans the event-name
    tuples through StringEnum.__eq__ (``is_after_event``/``is_before_event``, asked even with no profiler), asserts
    on its own state, splits the callbacks into loggers and others with isinstance, and for each callback builds a
    nullcontext and calls ``Callback.run_event``, which looks up the event's method and calls it: most often the
    base class's no-op (BENCHMARKS.md, nanoGPT parity: 0.3-0.45 ms of a step on CPU). With no profiler, after INIT:
    the same calls in the same order (algorithms, then the other callbacks, then the loggers), made only to the
    callbacks that handle the event (they override ``run_event`` or the event's method). INIT, a profiler,
    ENGINE_DEBUG or a closed engine take upstream's path."""
    if os.environ.get("ENGINE_DEBUG"):
        return
    engine, upstream = trainer.engine, trainer.engine.run_event

    def run_event(event: Event | str) -> Any:
        event = Event(event)
        state = engine.state
        if event is Event.INIT or state.profiler is not None or engine._is_closed:
            return upstream(event)
        traces = engine._run_algorithms(event)
        base, callbacks = getattr(Callback, event.value), list(state.callbacks)  # upstream's lists are taken here
        for loggers in (False, True):
            for cb in callbacks:
                if isinstance(cb, LoggerDestination) is not loggers:
                    continue
                if type(cb).run_event is not Callback.run_event:
                    cb.run_event(event, state, engine.logger)
                    continue
                handler = getattr(cb, event.value)
                if getattr(handler, "__func__", None) is not base:
                    handler(state, engine.logger)
        return traces

    engine.run_event = run_event  # type: ignore[method-assign]


class WandBLoggerNoArtifacts(WandBLogger):
    """Composer 0.32.1 bug: autoresume asks every logger for the latest checkpoint before wandb.init, and
    WandBLogger.download_file then raises RuntimeError (autoresume only skips FileNotFoundError), so the first
    autoresume run with wandb crashes. We never store checkpoints as wandb artifacts: say "not found"."""

    def download_file(self, remote_file_name: str, destination: str, overwrite: bool = False,
                      progress_bar: bool = True) -> None:
        raise FileNotFoundError(f"{remote_file_name}: checkpoints are not kept in wandb")


class TensorboardLoggerAtFitStart(TensorboardLogger):
    """Composer 0.32.1 bug: TensorboardLogger opens its SummaryWriter (and so an event file) at INIT on every rank,
    ``rank_zero_only`` or not, and before autoresume loads the checkpoint, so it cannot be told the step a resumed
    run redoes from (SummaryWriter's ``purge_step`` is read when the writer opens its first file).

    Open the writer at FIT_START instead, after the load, on global rank 0 only, in ``log_dir`` itself (not
    ``log_dir/run_name``), with ``purge_step`` = :meth:`purge_step`; a later FIT_START in the same process (a
    loss-spike rollback's second ``fit``) closes it and opens the next file with its own purge step. Its writer
    thread's periodic flush stays off, as Composer has it: subclasses flush when they choose."""

    def init(self, state: State, logger: Logger) -> None:
        self.run_name = state.run_name  # no writer yet: the checkpoint is not loaded

    def fit_start(self, state: State, logger: Logger) -> None:
        if composer_dist.get_global_rank() != 0:
            return
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is not None:
            self.writer.close()
        assert self.log_dir is not None, "give log_dir"
        self.writer = SummaryWriter(log_dir=self.log_dir, purge_step=self.purge_step(state),
                                    flush_secs=365 * 24 * 3600)

    def purge_step(self, state: State) -> Optional[int]:
        """The step from which TensorBoard's readers drop what earlier event files hold (None: nothing)."""
        return None


class RestoreRNGOnResume(Callback):
    """Composer 0.32.1 bug: on a mid-epoch resume with dataset resumption (a StreamingDataset), _train_loop never
    restores the checkpoint's RNG state (only at batch_in_epoch == 0 or while spinning), so dropout differs from
    the uninterrupted run; restore it where the uninterrupted run stood when it saved.

    A checkpoint on an epoch's last batch resumes into an empty rest-of-epoch: restore at its EPOCH_END, before
    the epoch-end eval and the next epoch's dataloader iterator draw from the RNG, as the uninterrupted run did
    after saving. Otherwise restore at the first BATCH_START (the resumed epoch's iterator has drawn its seed by
    then, as it had in the uninterrupted run).
    """

    def __init__(self) -> None:
        self.trainer: Trainer | None = None

    def epoch_end(self, state: State, logger: Logger) -> None:
        self._restore()

    def batch_start(self, state: State, logger: Logger) -> None:
        self._restore()

    def _restore(self) -> None:
        if self.trainer is not None and self.trainer._rng_state is not None:
            reproducibility.load_rng_state(self.trainer._rng_state)
            self.trainer._rng_state = None
        self.trainer = None  # once per fit


def restore_rng_on_resume(trainer: Trainer) -> None:
    """Hand the trainer to its RestoreRNGOnResume callback (the callback must exist before the trainer)."""
    for cb in trainer.state.callbacks:
        if isinstance(cb, RestoreRNGOnResume):
            cb.trainer = trainer


def load_into_live_trainer(trainer: Trainer, path: str) -> None:
    """Composer 0.32.1 behaviour: checkpoints are loaded only while a Trainer is built; ``load_checkpoint`` into a
    trainer that has trained on (a loss-spike rollback) leaves the saver's memory of the abandoned steps and never
    restores the checkpoint's RNG.

    Load ``path`` as the start-up load does: weights, optimizer, schedulers, timestamp, callbacks' and the dataset's
    state, with the RNG restored at the next batch by :class:`RestoreRNGOnResume`. The CheckpointSaver forgets the
    batch it last saved at (else it would not save that batch again) and the files it would rotate that are gone
    (the caller removed the checkpoints after ``path`` first).
    """
    trainer._rng_state = checkpoint.load_checkpoint(path, trainer.state, trainer.logger, progress_bar=False,
                                                    algorithm_passes=trainer.engine.algorithm_passes)
    restore_rng_on_resume(trainer)
    for saver in trainer.state.callbacks:
        if isinstance(saver, CheckpointSaver):
            saver.last_checkpoint_batch = None
            saver.saved_checkpoints = [p for p in saver.saved_checkpoints if os.path.exists(p)]


class MarkEpochEnds(Callback):
    """Tell the train dataset when an epoch ended, for TokenSamples.state_dict's epoch-end fix (loaders/dataset.py):
    Composer 0.32.1 checkpoints an epoch end as (finished epoch, sample 0) of a StreamingDataset."""

    def epoch_end(self, state: State, logger: Logger) -> None:
        self._set(state, True)

    def epoch_start(self, state: State, logger: Logger) -> None:
        self._set(state, False)

    @staticmethod
    def _set(state: State, finished: bool) -> None:
        dataset = getattr(state.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch_finished"):
            dataset.set_epoch_finished(finished)


def per_node_signal_files() -> None:
    """Composer 0.32.1 bug: dist.get_node_signal_file_name broadcasts rank 0's name ('._signal_file_node0_…') to every
    node, so nodes sharing a save folder (NFS, Lustre) create and delete the same file during autoresume and one
    crashes with FileNotFoundError; give each node its own name. Process-wide and idempotent."""
    if getattr(composer_dist.get_node_signal_file_name, "per_node", False):
        return
    upstream = composer_dist.get_node_signal_file_name

    def node_signal_file_name(rng=None) -> str:
        return f"{upstream(rng)}-node{composer_dist.get_node_rank()}"

    node_signal_file_name.per_node = True  # type: ignore[attr-defined]
    composer_dist.get_node_signal_file_name = node_signal_file_name


class BucketCheckpointSaver(CheckpointSaver):
    """Composer's saver, except that at the end of training a failed upload is seen at once.

    Composer 0.32.1 bug (``RemoteUploader.wait``): it waits on its futures in order, and the existence check of an
    earlier checkpoint (polled to decide when to move the latest pointer) keeps retrying a dead endpoint for up to
    an hour, so ``fit_end`` hangs there and never looks at the upload that failed behind it.
    """

    def fit_end(self, state: Any, logger: Any) -> None:
        if self.remote_uploader is not None:
            raise_first_upload_failure(self.remote_uploader)
        super().fit_end(state, logger)


def raise_first_upload_failure(uploader: Any) -> None:
    """Wait for the uploads until all are done or one failed; on a failure, tell the existence checks to stop
    (they poll ``is_remote_upload_failed``) and raise it."""
    done, _ = concurrent.futures.wait(list(uploader.futures), return_when=concurrent.futures.FIRST_EXCEPTION)
    for future in done:
        if future.exception() is not None:
            uploader.is_remote_upload_failed.set()
            raise future.exception()


SYMLINK_POLL_SECONDS = 2.0  # Composer's default (30 s) leaves the bucket's latest pointer that far behind


def _remove_empty_temp(folder: str, relative: str) -> None:
    """The saver made an empty temporary folder for its local copies (``mkdtemp()/PREFIX``); ours live elsewhere."""
    root = folder[: len(folder) - len(relative)] if relative and folder.endswith(relative) else folder
    try:
        os.rmdir(root)
    except OSError:
        pass


def poll_bucket_pointer(saver: CheckpointSaver) -> None:
    """Composer 0.32.1 (``CheckpointSaver``): the bucket's latest pointer is uploaded only after polling for the
    checkpoint's objects every 30 s, so a sharded run killed within 30 s of a save resumes an interval earlier, and
    every run waits up to 30 s at its end. Composer's own saver (sharded FSDP checkpoints keep its path, which
    reads the pointer from the bucket on resume) polls every SYMLINK_POLL_SECONDS instead."""
    saver._symlink_upload_wait_before_next_try_in_seconds = SYMLINK_POLL_SECONDS


def bucket_checkpoint_saver(url: str, local: str, filename: str, latest: str, save_interval: str,
                            keep: int) -> BucketCheckpointSaver:
    """Composer 0.32.1 bug (``Trainer._get_autoresume_checkpoint``): with a bucket ``save_folder`` it keeps its
    download in ``./s3:/BUCKET/...`` and on every later start resumes from that stale copy, not the bucket's newer
    latest (then fails uploading a checkpoint that exists).

    Handing the Trainer our own saver, whose local copies live in ``local`` (the run folder), makes its autoresume
    look there instead. The saver polls the bucket for the latest pointer every SYMLINK_POLL_SECONDS.
    """
    prefix = parse_uri(url)[2].strip("/")
    saver = BucketCheckpointSaver(
        folder=url,
        filename=filename,
        remote_file_name=f"{prefix}/{filename}" if prefix else filename,
        latest_filename=latest,
        latest_remote_file_name=f"{prefix}/{latest}" if prefix else latest,
        overwrite=True,
        save_interval=save_interval,
        num_checkpoints_to_keep=keep,
    )
    _remove_empty_temp(saver.folder, parse_uri(url)[2])
    saver.folder = saver.filename.folder = local
    if saver.latest_filename is not None:
        saver.latest_filename.folder = local
    saver._symlink_upload_wait_before_next_try_in_seconds = SYMLINK_POLL_SECONDS
    return saver


# ----------------------------------------------------------------------------------------------------- MFU's peak
# Composer 0.32.1 bug (``callbacks.speed_monitor.get_gpu_flops_available``): it knows few device names; an H100 NVL,
# H800, B200 or L40S gets no peak and MFU silently disappears from the logs. Our table (core/peaks.py: dense figures
# per GPU from NVIDIA's datasheets, for the two precisions we train in) is looked at first, Composer's is the
# fallback, and ``peak_flops=`` overrides both.


def resolve_peak(configured: Optional[float], device: str, precision: str) -> tuple[Optional[float], str]:
    """(the peak SpeedMonitor gets, where it came from: printed once at start). None lets Composer look it up."""
    if configured is not None:
        return configured, f"{configured:.4g} FLOP/s (peak_flops)"
    if device != "gpu":
        return None, "none on CPU: MFU not reported (set peak_flops=FLOP/s to report it)"
    import torch

    name = torch.cuda.get_device_name()
    peak = table_peak(name, precision)
    if peak is not None:
        return peak, f"{peak:.4g} FLOP/s ({name}, {precision}; core/peaks.py)"
    return None, f"Composer's table for {name} ({precision}); if MFU is missing, set peak_flops=FLOP/s"
