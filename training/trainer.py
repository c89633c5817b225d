"""Assemble a Composer Trainer from a validated config: device, data, model, optimizer, callbacks, loggers.

Each ``build_*`` function is one row of the training script's table of contents.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from composer import Trainer
from composer.algorithms import GradientClipping
from composer.callbacks import CheckpointSaver, LRMonitor, OptimizerMonitor, RuntimeEstimator, SpeedMonitor
from composer.core import DataSpec
from composer.optim import ComposerScheduler, CosineAnnealingWithWarmupScheduler, DecoupledAdamW
from composer.utils import FSDP2Config, dist, reproducibility

from callbacks.console import ConsoleSummaryLogger, EvalCost
from callbacks.jsonl_logger import JSONLinesLogger
from callbacks.sample_ids import SampleIdLogger
from callbacks.samples import SampleLogger
from callbacks.spike import SpikeDetected, SpikeRecovery
from callbacks.tensorboard import TENSORBOARD_DIR, TensorBoardLogger
from core.errors import ConfigError
from core.metadata import DatasetMetadata
from core.runs import METRICS_FILE
from core.streams import StreamSource
from core.tokenizer import Tokenizer
from gpt import GPTConfig
from gpt_modern import FP8_CAPABILITY, fp8_available
from loaders.choices import Item
from loaders.dataset import LoaderSettings, build_dataspec, check_compatible, dataset_tokenizer, fetch_metadata
from loaders.shm import clean_stale_shared_memory
from training.choices import build_choice_evaluators, read_eval_tasks
from training.compile import CompileTimer, apply_compile, describe_compile
from training.config import AUTO, TrainConfig, plain_config, to_yaml, write_run_config
from training.model import ComposerGPT, checkpoint_blocks
from training.muon import MomentumWarmup, Muon, muon_groups, route
from training.precision import choose_precision
from training.resume import check_checkpoints, model_config
from training.resume.bucket import remote_saver, sharded_in_bucket, upload_failure
from training.resume.checkpoints import save_model_config
from training.resume.guard import SOFT_KEYS, ResumeGuard, run_fingerprint
from training.resume.init_from import load_init_weights
from training.resume.rollback import roll_back
from training.schedules import WarmupStableDecayScheduler
from training.streams import (
    build_evaluators,
    build_mixture_eval,
    build_stream_evals,
    named_sources,
    record_stream_metadata,
    trained_sources,
)
from upstream.composer import (
    MarkEpochEnds,
    RestoreRNGOnResume,
    WandBLoggerNoArtifacts,
    lean_engine_events,
    per_node_signal_files,
    poll_bucket_pointer,
    resolve_peak,
    restore_rng_on_resume,
    skip_cpuinfo_subprocess,
    skip_engine_debug_log,
)


@dataclass
class RunData:
    """What the data room hands the trainer: metadata, tokenizer and the dataloaders."""

    meta: DatasetMetadata
    metas: dict[StreamSource, DatasetMetadata]
    tokenizer: Tokenizer
    train: DataSpec
    eval: Optional[DataSpec]
    device_batch_size: int
    stream_evals: dict[str, DataSpec] = field(default_factory=dict)  # a mixture's val per stream, by name
    eval_tasks: dict[str, list[Item]] = field(default_factory=dict)  # eval_tasks' multiple-choice items, by name


def init_distributed(cfg: TrainConfig) -> str:
    """Pick the device, start the process group, and clear stale Streaming shared memory (one per node)."""
    device = cfg.device or ("gpu" if torch.cuda.is_available() else "cpu")
    check_device_support(cfg, device)
    share_cpu_threads(device)
    if dist.get_world_size() > 1:  # as Composer: a 1-rank process group would only add an all-reduce per metric
        dist.initialize_dist(device, timeout=cfg.dist_timeout)
    if dist.get_local_rank() == 0:
        clean_stale_shared_memory()
    dist.barrier()
    return device


def check_device_support(cfg: TrainConfig, device: str) -> None:
    """Refuse on CPU, at start (before any process group, data or weights), what only a GPU does: Composer's
    automatic microbatching works by catching CUDA out-of-memory errors, and fp16 AMP needs CUDA's autocast and
    gradient scaler (Composer 0.32.1 trains fp32 on CPU; our amp_bf16 there is the model's own autocast). Every
    rank decides alike, so every rank stops with the same line."""
    if device != "cpu":
        return
    if cfg.device_train_microbatch_size == AUTO:
        per_rank = max(1, cfg.global_train_batch_size // dist.get_world_size())
        raise ConfigError("device_train_microbatch_size=auto needs a GPU (Composer's automatic microbatching reacts "
                          "to CUDA out-of-memory errors); on CPU set a number of sequences per forward, e.g. "
                          f"device_train_microbatch_size={per_rank} (the whole per-rank batch at once)")
    if cfg.precision == "amp_fp16":
        raise ConfigError("precision=amp_fp16 needs a GPU (CUDA's fp16 autocast and gradient scaler); on CPU use "
                          "precision=amp_bf16 (bf16 autocast of the forward) or precision=fp32")


def share_cpu_threads(device: str) -> None:
    """On CPU, split the cores between the ranks of a node, as torchrun does (Composer's launcher does not): every
    rank starting one thread per core oversubscribes the cores, and OpenMP's spinning threads then wait on each
    other. An explicit OMP_NUM_THREADS wins."""
    local_ranks = dist.get_local_world_size()
    if device == "cpu" and local_ranks > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_ranks))


def name_run(cfg: TrainConfig) -> bool:
    """Name the run if unnamed (every rank the same name) and default the folders inside it; writes nothing, so that
    the run lock can be taken before anything lands in the run folder (training/resume/lock.py).

    Returns whether to autoresume: only a run the user named can be found again by re-running.
    """
    autoresume = cfg.run_name is not None
    if not autoresume:
        name = [time.strftime("run-%Y%m%d-%H%M%S")]
        dist.broadcast_object_list(name)  # every rank must agree on the folder
        cfg.run_name = name[0]
    if cfg.save_folder is None:
        cfg.save_folder = os.path.join(cfg.run_dir, "checkpoints")
    if cfg.data.cache is None:
        cfg.data.cache = os.path.join(cfg.run_dir, "data_cache")
    return autoresume


def prepare_run_dir(cfg: TrainConfig) -> None:
    """Create ``{runs_root}/{run_name}`` and record the resolved config (rank 0); under the run lock."""
    if dist.get_global_rank() == 0:
        write_run_config(cfg)


def device_batch_size(cfg: TrainConfig) -> int:
    """Per-rank batch; the global batch must split evenly over ranks."""
    world = dist.get_world_size()
    if cfg.global_train_batch_size % world:
        raise ConfigError(
            f"global_train_batch_size={cfg.global_train_batch_size} does not divide over {world} ranks; "
            f"use a multiple of {world}"
        )
    return cfg.global_train_batch_size // world


def build_data(cfg: TrainConfig) -> RunData:
    """Read the dataset metadata (the one record of tokenizer and seq len) and build the loaders: the train
    mixture of the streams of nonzero weight, its val, and each stream's val (training/streams.py)."""
    named = named_sources(cfg)
    sources = trained_sources(named)
    eval_tasks = read_eval_tasks(cfg)  # a bad multiple-choice file fails here, before any loader starts
    by_name = {name: fetch_metadata(s.path, cfg.data.cache, cfg.data.tokenizer) for name, s in named.items()}
    metas = {s: by_name[name] for name, s in named.items() if s in sources}
    meta = check_compatible({named[name].path: m for name, m in by_name.items()})
    record_stream_metadata(cfg.run_dir, named, cfg.data.cache, by_name)
    tokenizer = dataset_tokenizer(sources[0].path, cfg.data.cache, cfg.data.tokenizer)
    settings = LoaderSettings(
        shuffle=cfg.data.shuffle,
        shuffle_seed=cfg.seed if cfg.data.shuffle_seed is None else cfg.data.shuffle_seed,
        num_canonical_nodes=cfg.data.num_canonical_nodes,
        shuffle_algo=cfg.data.shuffle_algo,
        shuffle_block_size=cfg.data.shuffle_block_size,
        predownload=cfg.data.predownload,
        cache_limit=cfg.data.cache_limit,
        num_workers=cfg.data.num_workers,
    )
    batch = device_batch_size(cfg)
    train = build_dataspec(sources, cfg.data.train_split, batch, settings, cfg.data.cache)
    eval_batch = cfg.device_eval_batch_size or cfg.fixed_microbatch or batch  # auto: split by Composer (auto)
    eval_spec = build_mixture_eval(cfg, sources, list(metas.values()), eval_batch, settings)
    stream_evals = build_stream_evals(cfg, named, by_name, eval_batch, settings)
    return RunData(meta, metas, tokenizer, train, eval_spec, batch, stream_evals, eval_tasks)


def check_gpu_only(gpt_config: GPTConfig, device: str) -> None:
    """Refuse a GPU-only kernel forced on (``true``) where it cannot run; ``auto`` leaves it off there."""
    if getattr(gpt_config, "flex_attention", "auto") == "true" and device == "cpu":
        raise ConfigError("model.flex_attention=true on CPU: torch 2.7 compiles only FlexAttention's forward there, "
                          "so it cannot train; use model.flex_attention=auto (on CPU the window runs through SDPA "
                          "with its mask)")
    if getattr(gpt_config, "fp8_head", "auto") == "true" and not (device == "gpu" and fp8_available()):
        where = "on CPU" if device == "cpu" else \
            f"on a CUDA device of compute capability {torch.cuda.get_device_capability()}"
        raise ConfigError(f"model.fp8_head=true {where}: float8 matmuls (torch._scaled_mm) need CUDA compute "
                          f"capability >= {'.'.join(map(str, FP8_CAPABILITY))} (H100, L4, RTX 4090); use "
                          "model.fp8_head=auto (on where supported) or false")


def build_model(cfg: TrainConfig, data: RunData, resuming: bool = False, device: str = "cpu") -> ComposerGPT:
    """The GPT sized by the preset and overrides, its block size and vocab read from the dataset; or, with
    ``model.init_from=hf:...``, shaped and initialised by a Hugging Face GPT-2 (training/resume/init_from.py) when the
    run starts, and shaped by its own ``model.json`` when it resumes (its checkpoint has the weights). Settles
    ``precision: auto`` on the built model, before anything wraps or compiles it."""
    gpt_config = model_config(cfg, data.meta, resuming)
    check_gpu_only(gpt_config, device)
    if dist.get_global_rank() == 0:
        save_model_config(cfg.run_dir, gpt_config)
    reproducibility.seed_all(cfg.seed)  # the same init on every rank and every run with this seed
    model = ComposerGPT(gpt_config, torch.as_tensor(data.tokenizer.token_bytes()))
    if cfg.model.init_from and not resuming:  # before the Trainer: FSDP shards these weights
        load_init_weights(model.model, cfg.model.init_from)
    settle_precision(cfg, model, data, device)
    if cfg.checkpoints_activations and cfg.parallelism != "fsdp":  # FSDP2 does its own (parallelism_config)
        checkpoint_blocks(model.model)
    apply_compile(model, cfg.compile)  # before the Trainer wraps it: see training/compile.py
    return model


def settle_precision(cfg: TrainConfig, model: ComposerGPT, data: RunData, device: str) -> None:
    """``precision: auto`` -> the faster one for this shape (training/precision.py); recorded in the run's
    config.yaml too, so that the run folder says what ran."""
    microbatch = min(cfg.fixed_microbatch or data.device_batch_size, data.device_batch_size)
    choice = choose_precision(cfg.precision, model.model, microbatch, data.meta.seq_len, device, cfg.run_dir)
    model.precision_note = choice.why if cfg.precision != AUTO else f"auto: {choice.why}"
    if choice.precision != cfg.precision:
        cfg.precision = choice.precision
        prepare_run_dir(cfg)


# torch.optim.AdamW's fused kernel, on GPU (one kernel for all parameters: no per-tensor launches, no host sync) and
# on CPU too: torch 2.7's fused CPU AdamW steps the nano model in 0.38 ms where foreach, the for-loop and Composer's
# DecoupledAdamW take 1.3-1.7 ms (BENCHMARKS.md, nanoGPT parity), ~3 % of that step.
ADAMW_KERNEL = {"fused": True}


def build_optimizer(cfg: TrainConfig, model: ComposerGPT, device: str = "cpu") -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (>= 2-D) only; biases, LayerNorms stay undecayed. ``optimizer.name``
    picks the implementation, not the update: both decay by lr_t * weight_decay per step (PyTorch-AdamW units)."""
    o = cfg.optimizer
    if o.name == "muon":  # routed by role, not by ndim (training/muon.py)
        return build_muon(cfg, model.model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    if o.name == "adamw":
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, **ADAMW_KERNEL)
    # DecoupledAdamW decays by weight_decay * lr_t / initial lr per step: scaling by the initial lr gives lr_t * wd
    return DecoupledAdamW(
        [{"params": decay, "weight_decay": o.weight_decay * o.lr}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr,
        betas=tuple(o.betas),
        eps=o.eps,
    )


def build_scheduler(cfg: TrainConfig) -> ComposerScheduler:
    """``scheduler.name``: Composer's warmup + cosine, or our warmup-stable-decay (training/schedules.py)."""
    s = cfg.scheduler
    if s.name == "wsd":
        return WarmupStableDecayScheduler(t_warmup=s.t_warmup, decay_fraction=s.decay_fraction, alpha_f=s.alpha_f)
    return CosineAnnealingWithWarmupScheduler(t_warmup=s.t_warmup, alpha_f=s.alpha_f)


def build_muon(cfg: TrainConfig, gpt: torch.nn.Module, device: str) -> Muon:
    """Muon for the blocks' matrices of ``gpt`` (gpt.py's or gpt_modern's model), AdamW (``optimizer.*``) for the
    rest, routed by role; the routing is printed once (rank 0). Newton-Schulz in bf16 on GPU, fp32 on CPU."""
    o, m = cfg.optimizer, cfg.optimizer.muon
    r = route(gpt.named_parameters())
    if dist.get_global_rank() == 0:
        print(r.describe(), flush=True)
    return Muon(muon_groups(r, lr=m.lr, momentum=m.momentum, ns_steps=m.ns_steps, lr_scale=m.lr_scale,
                            weight_decay=m.weight_decay, adamw_lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps,
                            adamw_weight_decay=o.weight_decay, ns_dtype="bfloat16" if device == "gpu" else "float32"))


def wandb_id(run_name: str) -> str:
    """A stable wandb run id per run_name, so a resumed process continues the same wandb run."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", run_name)[:48]
    return f"{slug}-{hashlib.sha1(run_name.encode()).hexdigest()[:8]}"


def build_loggers(cfg: TrainConfig) -> list:
    loggers: list = [JSONLinesLogger(os.path.join(cfg.run_dir, METRICS_FILE))]
    if not cfg.progress_bar:
        loggers.append(ConsoleSummaryLogger(log_interval=cfg.log_interval, stream="stdout"))
    if cfg.wandb.enabled:
        init_kwargs = {"dir": cfg.run_dir, "config": json.loads(json.dumps(plain_config(cfg)))}
        if cfg.run_name:
            init_kwargs.update(id=wandb_id(cfg.run_name), resume="allow")
        loggers.append(
            WandBLoggerNoArtifacts(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                group=cfg.wandb.group,
                tags=list(cfg.wandb.tags) or None,
                init_kwargs=init_kwargs,
            )
        )
    if cfg.tensorboard.enabled:  # rank 0 writes; a resume purges the steps it redoes (callbacks/tensorboard.py)
        loggers.append(TensorBoardLogger(os.path.join(cfg.run_dir, TENSORBOARD_DIR),
                                         os.path.join(cfg.run_dir, METRICS_FILE)))
    return loggers


def build_callbacks(cfg: TrainConfig, device: str) -> list:
    peak, _ = resolve_peak(cfg.peak_flops, device, cfg.precision)
    return [
        EvalCost(),
        SpeedMonitor(window_size=cfg.speed_window, gpu_flops_available=peak, time_unit="seconds"),
        LRMonitor(),
        OptimizerMonitor(log_optimizer_metrics=False, batch_log_interval=10),  # grad norms every 10 steps
        RuntimeEstimator(time_unit="minutes"),
    ]


def build_trainer(cfg: TrainConfig, model: ComposerGPT, data: RunData, device: str, autoresume: bool) -> Trainer:
    """Composer does the loop, checkpointing and autoresume; we hand it everything built above."""
    optimizer = build_optimizer(cfg, model, device)
    scheduler = build_scheduler(cfg)
    evaluators = build_evaluators(data.eval, data.stream_evals, list(model.val_metrics),
                                  microbatch=AUTO if cfg.fixed_microbatch is None else None)
    evaluators += build_choice_evaluators(cfg, data.eval_tasks, data.tokenizer, model.config.block_size)
    algorithms = [] if cfg.grad_clip_norm <= 0 else [
        GradientClipping(clipping_type="norm", clipping_threshold=cfg.grad_clip_norm)
    ]
    fingerprint = run_fingerprint(cfg, data.meta, data.metas, model.config)
    guard = ResumeGuard(fingerprint, strict=autoresume, soft=SOFT_KEYS)
    callbacks = [*build_spike_recovery(cfg), *build_callbacks(cfg, device), guard, RestoreRNGOnResume(),
                 MarkEpochEnds()]
    if cfg.log_sample_ids:
        callbacks.append(SampleIdLogger())
    if cfg.compile.enabled:
        callbacks.append(CompileTimer(describe_compile(cfg.compile, model.config.n_layer)))
    warmup = int(cfg.optimizer.muon.momentum_warmup.removesuffix("ba"))  # validated: N ba
    if cfg.optimizer.name == "muon" and warmup > 0:
        callbacks.append(MomentumWarmup(cfg.optimizer.muon.momentum_start, cfg.optimizer.muon.momentum, warmup))
    if cfg.sample_prompt is not None:
        callbacks.append(SampleLogger(data.tokenizer, cfg.sample_prompt, cfg.sample_interval or cfg.eval_interval,
                                      cfg.sample_max_new_tokens, cfg.sample_temperature, seed=cfg.seed))
    saver = remote_saver(cfg)  # None: Composer's own saver, from save_folder
    if saver is not None:
        callbacks.append(saver)
    check_checkpoints(cfg, autoresume, guard)
    per_node_signal_files()
    skip_cpuinfo_subprocess()
    with warnings.catch_warnings():
        # We pass ConsoleSummaryLogger on purpose (it filters per-parameter norms); Composer warns about that.
        warnings.filterwarnings("ignore", message="Specifying the ConsoleLogger via `loggers`")
        trainer = Trainer(
            model=model,
            train_dataloader=data.train,
            eval_dataloader=evaluators or None,
            eval_interval=cfg.eval_interval,
            eval_subset_num_batches=cfg.eval_subset_num_batches,
            max_duration=cfg.max_duration,
            optimizers=optimizer,
            schedulers=scheduler,
            algorithms=algorithms,
            callbacks=callbacks,
            loggers=build_loggers(cfg),
            run_name=cfg.run_name,
            progress_bar=cfg.progress_bar,
            log_to_console=False,  # ConsoleSummaryLogger instead, when the progress bar is off
            save_folder=None if saver is not None else cfg.save_folder,
            save_interval=cfg.save_interval,
            save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
            save_overwrite=sharded_in_bucket(cfg),
            autoresume=autoresume,
            load_path=cfg.load_path,
            device=device,
            precision=apply_precision(cfg, model, device),
            device_train_microbatch_size=cfg.device_train_microbatch_size,
            parallelism_config=parallelism_config(cfg),
            seed=cfg.seed,
            python_log_level=cfg.python_log_level,
        )
    if sharded_in_bucket(cfg):
        poll_bucket_pointer(trainer._checkpoint_saver)
    skip_engine_debug_log(trainer)
    lean_engine_events(trainer)
    restore_rng_on_resume(trainer)
    guard_checkpoints(trainer)
    return trainer


def build_spike_recovery(cfg: TrainConfig) -> list[SpikeRecovery]:
    """The loss-spike callback (``spike:``), first of the callbacks so that none of the others sees a spiked batch."""
    s = cfg.spike
    if not s.enabled:
        return []
    return [SpikeRecovery(s.window, s.threshold, s.patience, s.skip_batches, s.max_rollbacks, cfg.run_dir)]


def guard_checkpoints(trainer: Trainer) -> None:
    """Every checkpoint saver (Composer's own, or the bucket's) checks the state is finite before it saves."""
    for recovery in (cb for cb in trainer.state.callbacks if isinstance(cb, SpikeRecovery)):
        for saver in (cb for cb in trainer.state.callbacks if isinstance(cb, CheckpointSaver)):
            recovery.guard(saver)


def apply_precision(cfg: TrainConfig, model: ComposerGPT, device: str) -> str:
    """The precision to hand Composer. Composer 0.32.1 trains only fp32 on CPU, so there ``amp_bf16`` becomes the
    model's own bf16 autocast of its forward (ComposerGPT.cpu_autocast_dtype) under an fp32 Trainer: matmuls in
    bf16 (several times the fp32 speed on CPUs with AVX512-BF16 or AMX, see BENCHMARKS.md), weights, optimizer
    and loss in fp32."""
    if device == "cpu" and cfg.precision == "amp_bf16":
        model.cpu_autocast_dtype = torch.bfloat16
        return "fp32"
    return cfg.precision


def fit(trainer: Trainer, cfg: TrainConfig) -> None:
    """Train; a loss spike rolls the run back and training goes on (training/resume/rollback.py); a run stopped by
    its checkpoint bucket (uploads failing after retries) ends in a CheckpointError that says what to do, not a
    traceback from a worker process. Re-running a finished run is not an error."""
    state = trainer.state
    if state.max_duration is not None and state.max_duration <= state.timestamp.get(state.max_duration.unit):
        if dist.get_global_rank() == 0:
            print(f"run {cfg.run_name} already reached max_duration={cfg.max_duration}; nothing to train (raise "
                  "max_duration to continue it)", flush=True)
        return
    while True:
        try:
            trainer.fit()  # after a rollback Composer's fit goes on from the loaded timestamp
            return
        except SpikeDetected as spike:
            roll_back(trainer, cfg, spike)
        except Exception as e:  # noqa: BLE001 - re-raised unless it is the bucket's
            failure = upload_failure(trainer, cfg, e)
            if failure is None:
                raise
            raise failure from None


def parallelism_config(cfg: TrainConfig) -> Optional[dict]:
    """DDP (Composer's default for several ranks) or FSDP2; FSDP1's path in Composer 0.32.1 needs CUDA."""
    if cfg.parallelism != "fsdp":
        return None
    f = cfg.fsdp
    return {"fsdp": FSDP2Config(state_dict_type=f.state_dict_type, activation_checkpointing=cfg.checkpoints_activations,
                                reshard_after_forward=f.reshard_after_forward, mixed_precision=f.mixed_precision)}


def describe_run(cfg: TrainConfig, model: ComposerGPT, data: RunData, device: str) -> str:
    """The start-up summary: resolved config, parameters, FLOPs per token and tokens per step."""
    gpt = model.model
    tokens_per_step = cfg.global_train_batch_size * data.meta.seq_len
    lines = [
        "=" * 72,
        to_yaml(cfg).rstrip(),
        "-" * 72,
        f"dataset      {data.meta.tokenizer.get('name')} tokenizer, vocab {data.meta.vocab_size}, "
        f"EOS {data.meta.eos_id}, seq_len {data.meta.seq_len}, "
        + ", ".join(f"{k} {v.samples:,} samples" for k, v in data.meta.splits.items()),
        f"model        {gpt.config}" + ("; activation checkpointing (each block recomputed in backward)"
                                            if cfg.checkpoints_activations else ""),
        f"parameters   {gpt.num_params(non_embedding=False):,} ({gpt.num_params():,} non-embedding)",
        f"FLOPs/token  {gpt.flops_per_token(data.meta.seq_len):,} (training: forward + backward)",
        f"tokens/step  {tokens_per_step:,} ({cfg.global_train_batch_size} x {data.meta.seq_len}; "
        f"{data.device_batch_size} per rank x {dist.get_world_size()} ranks; {torch.get_num_threads()} CPU "
        "threads per rank)",
        f"precision    {cfg.precision} ({model.precision_note})",
        f"MFU peak     {resolve_peak(cfg.peak_flops, device, cfg.precision)[1]}",
        f"run folder   {cfg.run_dir}  (checkpoints: {cfg.save_folder})",
        "=" * 72,
    ]
    return "\n".join(lines)
