"""Run configuration: a yaml plus ``key=value`` dotlist overrides, validated into :class:`TrainConfig`.

Vocab size, EOS id and sequence length are not here on purpose: they come from the dataset's metadata.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from core.errors import ConfigError, RunFolderError
from core.files import write_atomic
from core.runs import CONFIG_FILE
from core.streams import StreamSource


@dataclass
class DataConfig:
    path: Optional[str] = None  # dataset root: local folder or s3://bucket/prefix
    cache: Optional[str] = None  # local cache for remote roots (default: {runs_root}/{run_name}/data_cache)
    streams: Optional[dict[str, StreamSource]] = None  # a mixture instead of `path`
    shuffle: bool = True
    shuffle_seed: Optional[int] = None  # default: the run's seed
    num_canonical_nodes: Optional[int] = None
    shuffle_algo: str = "py1e"  # Streaming's default; py1b / py1br / py1s / py2s / naive also accepted
    shuffle_block_size: Optional[int] = None  # samples per shuffle block (Streaming's default: 4M / nodes)
    predownload: Optional[int] = None
    cache_limit: Optional[str] = None
    num_workers: int = 0  # train loader worker processes per rank
    eval_num_workers: Optional[int] = None  # the val mixture's per rank; default min(num_workers, 2)
    train_split: str = "train"
    eval_split: str = "val"
    tokenizer: Optional[str] = None  # an llm-foundry dataset's tokenizer (it has no metadata.json): gpt2, a folder...

    def roots(self) -> list[str]:
        """Every dataset root of the run: ``path``, or each stream's."""
        return [self.path] if self.path is not None else [s.path for s in (self.streams or {}).values()]


@dataclass
class ModelConfig:
    """A gpt.py preset plus overrides (None keeps the preset's value)."""

    preset: str = "gpt2"
    n_layer: Optional[int] = None
    n_head: Optional[int] = None
    n_embd: Optional[int] = None
    dropout: Optional[float] = None
    bias: Optional[bool] = None
    gelu_approximate: Optional[str] = None  # tanh (GPT-2's) | none (exact GELU: nanoGPT's, faster on CPU)
    init_from: Optional[str] = None  # hf:FOLDER_OR_NAME: start from GPT-2 weights (shape from the HF config)
    arch: str = "gpt2"  # gpt2 (gpt.py) | modern (gpt_modern.py: the speedrun's architecture)
    # model.arch=modern only, each one change of gpt_modern.py (None: on, softcap 15, rotary_base 10000)
    rotary: Optional[bool] = None
    rotary_base: Optional[float] = None
    qk_norm: Optional[bool] = None
    relu2: Optional[bool] = None
    zero_init_proj: Optional[bool] = None
    untied_head: Optional[bool] = None
    softcap: Optional[float] = None
    embed_shortcut: Optional[bool] = None
    value_residual: Optional[bool] = None
    unet_skips: Optional[bool] = None
    window: Optional[int] = None  # sliding-window attention over this many positions (None: full causal)
    flex_attention: Optional[str] = None  # auto (FlexAttention for the window on CUDA) | true | false
    fp8_head: Optional[str] = None  # auto (float8 head matmuls in training on CUDA capability >= 8.9) | true | false


@dataclass
class MuonConfig:
    """``optimizer.name=muon`` (training/muon.py): Muon for the blocks' weight matrices, AdamW (``optimizer.lr``,
    ``betas``, ``eps``, ``weight_decay``) for embeddings, head, gains and biases. ``lr`` is Muon's own (in units of
    spectral norm per step with ``lr_scale: spectral``; with ``match_adamw`` an AdamW-sized lr such as 6e-4 works)."""

    lr: float = 0.02
    momentum: float = 0.95  # Nesterov
    ns_steps: int = 5  # quintic Newton-Schulz steps
    lr_scale: str = "spectral"  # spectral: sqrt(max(1, rows/cols)) | match_adamw: 0.2 sqrt(max(rows, cols))
    weight_decay: float = 0.0  # decoupled: W *= 1 - lr * weight_decay
    momentum_warmup: str = "0ba"  # momentum rises linearly from momentum_start to momentum over these batches
    momentum_start: float = 0.85


@dataclass
class OptimizerConfig:
    """AdamW in one of two implementations (``name``), the same update either way: ``decoupled_adamw``, Composer's
    DecoupledAdamW (a per-parameter loop), or ``adamw``, ``torch.optim.AdamW`` with its fused kernel (CUDA and CPU;
    the GPU yamls' and the nanoGPT ones'). ``weight_decay`` is in PyTorch AdamW units (decay per step =
    lr * weight_decay), as in nanoGPT and litgpt; for DecoupledAdamW it is converted to Composer's decoupled form,
    which multiplies by lr / initial lr. Decay applies to matrices (>= 2-D) only."""

    name: str = "decoupled_adamw"  # decoupled_adamw | adamw | muon (see OPTIMIZERS)
    lr: float = 6e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    muon: MuonConfig = field(default_factory=MuonConfig)  # used by name=muon only


@dataclass
class SchedulerConfig:
    """Linear warmup (``t_warmup``), then ``cosine``: cosine decay to ``alpha_f * lr`` at the end of
    ``max_duration``; or ``wsd`` (warmup-stable-decay, training/schedules.py): the full lr until the last
    ``decay_fraction`` of ``max_duration``, then linear decay to ``alpha_f * lr``."""

    name: str = "cosine"  # cosine | wsd
    t_warmup: str = "100ba"
    alpha_f: float = 0.1
    decay_fraction: float = 0.2  # wsd only: the share of max_duration that decays


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "gpt-pile-composer"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TensorboardConfig:
    """Composer's TensorboardLogger, writing to ``{run_dir}/tensorboard`` (callbacks/tensorboard.py): one point per
    step, keyed as in metrics.jsonl; a resumed run purges the steps it redoes."""

    enabled: bool = False


@dataclass
class FSDPConfig:
    """Options for ``parallelism=fsdp`` (Composer's FSDP2: each transformer block is its own shard unit)."""

    state_dict_type: str = "sharded"  # sharded (.distcp per rank) | full (one file, gathered on rank 0)
    activation_checkpointing: bool = False  # the top-level key's alias under FSDP (either true turns it on)
    reshard_after_forward: bool = True  # ZeRO-3 (True) or ZeRO-2-like (False)
    mixed_precision: str = "DEFAULT"  # DEFAULT | PURE | FULL: FSDP2's policy for precision=amp_bf16


@dataclass
class CompileConfig:
    """``torch.compile`` of the GPT (training/compile.py), applied from outside gpt.py before the Trainer wraps it.

    ``per_block`` compiles each transformer block on its own (torchtitan style): one graph, compiled once and reused
    by every block, so the compile time does not grow with depth; ``false`` compiles the whole GPT forward."""

    enabled: bool = False
    mode: str = "default"  # torch.compile's: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    per_block: bool = True


@dataclass
class SpikeConfig:
    """Loss spikes and NaN (callbacks/spike.py, training/resume/rollback.py): a batch whose loss is non-finite, or
    above ``median + threshold * MAD`` of the last ``window`` losses for ``patience`` batches in a row, rolls the run
    back to the newest checkpoint saved before those batches, skips their data plus ``skip_batches`` more, and
    continues; past ``max_rollbacks`` rollbacks (0: never roll back) the run stops with one error line.

    On by default: until a spike it only reads the loss Composer has already averaged over ranks and checks the state
    for NaN/inf when a checkpoint is due, drawing no random numbers and changing nothing, so a run without spikes
    is bit-identical to one with ``enabled=false``; without it a diverged run trains on NaN and saves NaN checkpoints.
    The threshold is conservative (10 MADs, the MAD floored at 1 % of the median) and judged only once the window
    is full, so ordinary noise and the fast early descent do not trigger it. ``enabled=false`` removes all of it,
    the NaN checkpoint guard included."""

    enabled: bool = True
    window: int = 100  # trailing losses the median and MAD are taken over
    threshold: float = 10.0  # MADs above the median
    patience: int = 3  # consecutive batches above the threshold (a non-finite loss: at once)
    skip_batches: int = 0  # batches skipped after those from the checkpoint to the spike (always skipped)
    max_rollbacks: int = 5  # rollbacks in the whole run; the next spike stops it


@dataclass
class EvalTaskConfig:
    """A multiple-choice file in HellaSwag's jsonl layout scored during training (callbacks/choices.py), logged as
    ``metrics/<name>/acc``, ``acc_norm`` and ``acc_norm_tokens``; the same items and scores as ``eval.py
    --hellaswag`` on the checkpoint."""

    name: str = MISSING  # the metric prefix: letters, digits, '.', '_' and '-'
    path: str = MISSING  # a .jsonl file or an s3:// object
    max_items: Optional[int] = None  # the first N items (None: all)
    interval: Optional[str] = None  # how often (e.g. 500ba); default: eval_interval


@dataclass
class TrainConfig:
    run_name: Optional[str] = None  # set it to get autoresume: re-running continues from the latest checkpoint
    runs_root: str = "runs"
    run_lock_wait: str = "0"  # a duration (600, 30s, 10m, 2h): how long to wait for a live run of this folder to end
    run_lock_lease: str = "5m"  # a duration: a lock whose heartbeat is older than this is a killed run's (other hosts)
    seed: int = 17
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: TensorboardConfig = field(default_factory=TensorboardConfig)
    parallelism: str = "ddp"  # ddp | fsdp (with options under fsdp:)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (ddp and fsdp)
    spike: SpikeConfig = field(default_factory=SpikeConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    global_train_batch_size: int = 512  # samples (sequences) per optimizer step, over all ranks
    device_train_microbatch_size: Union[int, str] = 16  # sequences per forward; auto: Composer's (GPU, DDP only)
    device_eval_batch_size: Optional[int] = None  # default: device_train_microbatch_size (auto: the per-rank batch)
    max_duration: str = "1ep"
    eval_interval: str = "500ba"
    eval_subset_num_batches: int = -1  # -1: the whole val split
    eval_per_stream: bool = True  # data.streams: also evaluate each stream's val alone (metrics/val/<name>/...)
    eval_tasks: list[EvalTaskConfig] = field(default_factory=list)  # multiple-choice files scored while training
    save_interval: str = "1000ba"
    save_num_checkpoints_to_keep: int = 3
    save_folder: Optional[str] = None  # default: {runs_root}/{run_name}/checkpoints
    load_path: Optional[str] = None
    # fp32 | amp_bf16 (GPU: Composer's AMP; CPU: bf16 autocast of the forward) | amp_fp16 (GPU) | auto (measured)
    precision: str = "fp32"
    grad_clip_norm: float = 1.0  # 0 disables clipping
    log_interval: str = "10ba"
    progress_bar: bool = True
    log_sample_ids: bool = False  # log each step's global batch sample ids to metrics.jsonl (data/sample_ids)
    sample_prompt: Optional[str] = None  # log a continuation of this text during training ("" = a new document)
    sample_interval: Optional[str] = None  # how often (e.g. 500ba, 1ep); default: eval_interval
    sample_max_new_tokens: int = 64
    sample_temperature: float = 0.8  # 0 = greedy; sampling has its own generator (seeded with seed)
    speed_window: int = 20  # batches SpeedMonitor averages over
    peak_flops: Optional[float] = None  # device peak FLOP/s for MFU; None: Composer's GPU table
    device: Optional[str] = None  # cpu | gpu; None: gpu when available
    dist_timeout: float = 1800.0  # seconds a collective (NCCL/gloo) may wait: above a gpt2-xl checkpoint's download
    python_log_level: Optional[str] = None

    @property
    def run_dir(self) -> str:
        return os.path.join(self.runs_root, self.run_name or "unnamed")

    @property
    def checkpoints_activations(self) -> bool:
        """Whether each block recomputes its activations in backward: ``activation_checkpointing``, or its older
        name ``fsdp.activation_checkpointing`` under FSDP (the ``fsdp.*`` options count for FSDP only, as before)."""
        return self.activation_checkpointing or (self.parallelism == "fsdp" and self.fsdp.activation_checkpointing)

    @property
    def fixed_microbatch(self) -> Optional[int]:
        """``device_train_microbatch_size`` as a number; None for ``auto``, which Composer settles while training
        (the default eval batch then falls back to another size: the per-rank batch, or eval.py's own)."""
        m = self.device_train_microbatch_size
        return None if m == AUTO else int(m)


AUTO = "auto"  # device_train_microbatch_size: Composer finds the largest microbatch that fits (GPU only)
# amp_fp16: GPU only (CUDA's fp16 autocast + gradient scaler); auto: the faster for the shape (training/precision.py)
PRECISIONS = ("fp32", "amp_bf16", "amp_fp16", AUTO)
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")  # seconds, or a number with a unit: 600, 30s, 10m, 2h
SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
SHUFFLE_ALGOS = ("py1e", "py1b", "py1br", "py1s", "py2s", "naive")  # Streaming 0.13.0's
PARALLELISMS = ("ddp", "fsdp")
# gpt.GELU_APPROXIMATIONS, spelled out so that a config is checked before torch loads (a test keeps them equal)
GELU_APPROXIMATIONS = ("tanh", "none")
# Composer's DecoupledAdamW | torch.optim.AdamW (fused) | Muon + AdamW (training/muon.py)
OPTIMIZERS = ("decoupled_adamw", "adamw", "muon")
# gpt_modern.ARCHS and training.muon.LR_SCALES, spelled out so that a config is checked before torch loads (a test
# keeps them equal)
ARCHS = ("gpt2", "modern")
LR_SCALES = ("spectral", "match_adamw")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def load_config(yaml_path: Optional[str], overrides: Sequence[str] = ()) -> TrainConfig:
    """Merge defaults < yaml < dotlist, refusing unknown keys and wrong types with the valid choices."""
    base = OmegaConf.structured(TrainConfig)
    layers = []
    try:
        if yaml_path is not None:
            layers.append(_load_yaml(yaml_path))
        layers.append(_dotlist(overrides))
        merged = OmegaConf.merge(base, *layers)
        cfg = OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        raise ConfigError(_unknown_key_message(e)) from None
    except ValidationError as e:
        raise ConfigError(f"config key {e.full_key!r}: {e.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {str(e).splitlines()[0]}") from None
    except TypeError as e:  # a list's item set by index (eval_tasks.0.path=...): OmegaConf cannot merge that
        raise ConfigError(f"bad config: {e}; a list is set whole, e.g. "
                          "eval_tasks='[{name: hellaswag, path: hellaswag_val.jsonl}]'") from None
    assert isinstance(cfg, TrainConfig)
    validate(cfg)
    return cfg


TEXT_TYPES = ("str", "Optional[str]")  # field annotations (strings: `from __future__ import annotations`)
YAML_NULLS = ("null", "~", "Null", "NULL")


def _dotlist(overrides: Sequence[str]):
    """The ``key=value`` overrides as one config layer. A value for a text field is kept as typed: the shell has
    already removed the user's quotes, so yaml must not turn ``sample_prompt=ROMEO:`` into a mapping or
    ``run_name=007`` into 7 (``null`` still means None, and a value the user quoted for yaml, ``'ROMEO:'``, is
    unquoted as before). Other values are parsed as yaml (numbers, lists, null)."""
    layer = OmegaConf.create({})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        if _is_text_field(key) and raw not in YAML_NULLS and not _yaml_quoted(raw):
            OmegaConf.update(layer, key, raw, force_add=True)
        else:
            layer = OmegaConf.merge(layer, OmegaConf.from_dotlist([item]))
    return layer


def _yaml_quoted(raw: str) -> bool:
    return len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""


def _is_text_field(dotted: str) -> bool:
    parent, _, name = dotted.rpartition(".")
    cls = _dataclass_at(parent)
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
    return name in fields and fields[name].type in TEXT_TYPES


def _load_yaml(path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; pass one of yamls/*.yaml or your own")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - yaml parser errors come in many types
        raise ConfigError(f"{path} is not valid yaml: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, type(OmegaConf.create({}))):
        raise ConfigError(f"{path} must hold a mapping of config keys at top level")
    return loaded


def _unknown_key_message(e: ConfigKeyError) -> str:
    key = e.full_key or str(e.key)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    if getattr(e, "object_type", None) is EvalTaskConfig and not parent:  # a list item: OmegaConf loses its path
        key, parent = f"eval_tasks.<i>.{key}", "eval_tasks.<i>"
    cls = _dataclass_at(parent.replace("<i>", "0"))
    valid = ", ".join(f.name for f in dataclasses.fields(cls)) if cls else "?"
    where = f"under '{parent}'" if parent else "at top level"
    return f"unknown config key {key!r}; valid keys {where}: {valid}"


def _dataclass_at(dotted: str) -> Optional[type]:
    cls: Any = TrainConfig
    for part in [p for p in dotted.split(".") if p]:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part in fields and dataclasses.is_dataclass(_field_type(fields[part])):
            cls = _field_type(fields[part])
        elif cls is DataConfig or cls is StreamSource:
            cls = StreamSource  # data.streams.<name>.<key>
        elif part == "eval_tasks" or (cls is EvalTaskConfig and part.isdigit()):
            cls = EvalTaskConfig  # eval_tasks.<i>.<key>
        else:
            return None
    return cls


def _field_type(f: dataclasses.Field) -> Any:
    t = f.type
    if isinstance(t, str):
        t = {c.__name__: c for c in (DataConfig, ModelConfig, OptimizerConfig, SchedulerConfig,
                                     WandbConfig, TensorboardConfig, StreamSource, FSDPConfig, SpikeConfig,
                                     CompileConfig, EvalTaskConfig)}.get(t, t)
    return t


def validate(cfg: TrainConfig) -> None:
    """Every value checked before any data or weights load; each failure names the key, the valid range, the fix."""
    _validate_structure(cfg)
    _validate_run_name(cfg.run_name)
    _validate_ranges(cfg)
    _validate_choices(cfg)
    _validate_times(cfg)
    _validate_eval_tasks(cfg)
    _validate_run_lock(cfg)


def _validate_structure(cfg: TrainConfig) -> None:
    """Checks that need more than one key."""
    if cfg.data.path is not None and cfg.data.streams:
        raise ConfigError("data.path and data.streams are both set; to train on one dataset with a yaml that has "
                          "streams (yamls/gpt2.yaml), add data.streams=null, or use yamls/gpt2-single.yaml")
    if cfg.data.path is None and not cfg.data.streams:
        raise ConfigError("set data.path (one dataset) or data.streams (a mixture)")
    if cfg.model.init_from is not None and not cfg.model.init_from.startswith("hf:"):
        raise ConfigError(f"model.init_from={cfg.model.init_from!r}; use hf:FOLDER_OR_NAME (a Hugging Face GPT-2)")
    if cfg.model.init_from is not None and cfg.model.arch == "modern":
        raise ConfigError("model.arch=modern with model.init_from: a Hugging Face GPT-2 has GPT-2's architecture; "
                          "drop model.init_from (modern trains from scratch) or use model.arch=gpt2")
    if cfg.model.init_from is not None and cfg.load_path:
        raise ConfigError("model.init_from and load_path are both set; a run starts from one of them: drop one")
    if cfg.device_train_microbatch_size == AUTO and cfg.parallelism == "fsdp":
        raise ConfigError("device_train_microbatch_size=auto does not work with parallelism=fsdp (Composer 0.32.1's "
                          "FSDP2 has no automatic microbatching); set a number, e.g. device_train_microbatch_size=8")
    if len(cfg.optimizer.betas) != 2:
        raise ConfigError(f"optimizer.betas needs two numbers, got {cfg.optimizer.betas}")
    if cfg.compile.enabled and not cfg.compile.per_block and cfg.parallelism == "fsdp":
        raise ConfigError("compile.per_block=false with parallelism=fsdp: FSDP2's hooks around every block break "
                          "the whole-model graph at each block (torch runs them outside the graph); use "
                          "compile.per_block=true, which compiles each block as FSDP shards it")
    for name, s in (cfg.data.streams or {}).items():
        if sum(w is not None for w in (s.proportion, s.repeat, s.choose)) > 1:
            raise ConfigError(f"data.streams.{name}: set at most one of proportion, repeat, choose")


def _validate_run_lock(cfg: TrainConfig) -> None:
    seconds(cfg.run_lock_wait, "run_lock_wait")
    if seconds(cfg.run_lock_lease, "run_lock_lease") <= 0:
        raise ConfigError(f"run_lock_lease={cfg.run_lock_lease!r} must be longer than 0; e.g. 5m (the default)")


def seconds(duration: str, key: str) -> float:
    """A duration key in seconds: a number of seconds (``600``) or a number with a unit s, m or h (``10m``).
    One format for every duration key, so that a SLURM user can write the ``10m`` they are used to."""
    match = DURATION.fullmatch(str(duration).strip())
    if match is None:
        raise ConfigError(f"{key}={duration!r} is not a duration; use seconds (600) or a number with s, m or h "
                          "(30s, 10m, 2h)")
    return float(match.group(1)) * SECONDS_PER_UNIT[match.group(2)]


RUN_NAME = re.compile(r"[\w+=@,-][\w.+=@,-]*")  # one folder name: no path separator, no leading dot


def _validate_run_name(name: Optional[str]) -> None:
    """``run_name`` names the folder ``{runs_root}/{run_name}``: ``../x`` or ``a/b`` would put it elsewhere."""
    if name is not None and (not RUN_NAME.fullmatch(name) or len(name) > 200):
        raise ConfigError(f"run_name={name!r} must be one folder name (letters, digits and . _ - + = @ , ; no / and "
                          "no leading dot; at most 200 characters): the run lives in {runs_root}/{run_name}")


SEED_MAX = 2**32 - 1  # numpy's seeds
# (dotted key, test, the valid range in words): a None value (unset) is always valid
RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("seed", lambda v: 0 <= v <= SEED_MAX, f"0..{SEED_MAX}"),
    ("global_train_batch_size", lambda v: v >= 1, ">= 1"),
    ("device_train_microbatch_size", lambda v: v == AUTO or (isinstance(v, int) and v >= 1),
     f">= 1, or {AUTO} (GPU only: Composer's automatic microbatching)"),
    ("device_eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("eval_subset_num_batches", lambda v: v == -1 or v >= 1, "-1 (the whole val split) or >= 1"),
    ("save_num_checkpoints_to_keep", lambda v: v == -1 or v >= 1, "-1 (keep all) or >= 1 (autoresume needs one)"),
    ("grad_clip_norm", lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    ("speed_window", lambda v: v >= 1, ">= 1"),
    ("dist_timeout", lambda v: v > 0, "> 0 (seconds)"),
    ("peak_flops", lambda v: v > 0, "> 0 (FLOP/s, e.g. 989e12)"),
    ("optimizer.lr", lambda v: v > 0, "> 0 (e.g. 6e-4)"),
    ("optimizer.eps", lambda v: v > 0, "> 0 (e.g. 1e-8)"),
    ("optimizer.weight_decay", lambda v: v >= 0, ">= 0 (e.g. 0.1)"),
    ("optimizer.betas", lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1) (e.g. [0.9, 0.95])"),
    ("optimizer.muon.lr", lambda v: v > 0, "> 0 (e.g. 0.02)"),
    ("optimizer.muon.momentum", lambda v: 0 <= v < 1, "0 <= momentum < 1 (e.g. 0.95)"),
    ("optimizer.muon.ns_steps", lambda v: v >= 1, ">= 1 Newton-Schulz steps (e.g. 5)"),
    ("optimizer.muon.weight_decay", lambda v: v >= 0, ">= 0 (e.g. 0.0)"),
    ("optimizer.muon.momentum_start", lambda v: 0 <= v < 1, "0 <= momentum_start < 1 (e.g. 0.85)"),
    ("scheduler.decay_fraction", lambda v: 0 < v <= 1, "0 < decay_fraction <= 1 (e.g. 0.2)"),
    ("scheduler.alpha_f", lambda v: 0 <= v <= 1, "0..1 (the final lr as a fraction of optimizer.lr)"),
    ("model.n_layer", lambda v: v >= 1, ">= 1"),
    ("model.n_head", lambda v: v >= 1, ">= 1"),
    ("model.n_embd", lambda v: v >= 1, ">= 1"),
    ("model.dropout", lambda v: 0 <= v < 1, "0 <= dropout < 1"),
    ("data.shuffle_seed", lambda v: 0 <= v <= SEED_MAX, f"0..{SEED_MAX}"),
    ("data.num_canonical_nodes", lambda v: v >= 1, ">= 1"),
    ("data.shuffle_block_size", lambda v: v >= 1, ">= 1"),
    ("data.predownload", lambda v: v >= 1, ">= 1 (samples per worker to fetch ahead)"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.eval_num_workers", lambda v: v >= 0, ">= 0"),
    ("sample_max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("sample_temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
    ("spike.window", lambda v: v >= 1, ">= 1 (losses in the trailing window)"),
    ("spike.threshold", lambda v: v > 0, "> 0 (MADs above the median)"),
    ("spike.patience", lambda v: v >= 1, ">= 1 (batches in a row)"),
    ("spike.skip_batches", lambda v: v >= 0, ">= 0"),
    ("spike.max_rollbacks", lambda v: v >= 0, ">= 0 (0: stop at the first spike)"),
)


def _value(cfg: TrainConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _validate_ranges(cfg: TrainConfig) -> None:
    for key, ok, valid in RANGES:
        value = _value(cfg, key)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={value} is out of range; valid: {valid}")
    if cfg.data.cache_limit is not None:
        from streaming.base.util import bytes_to_int  # the parser Streaming will use

        try:
            ok = bytes_to_int(cfg.data.cache_limit) > 0
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise ConfigError(f"data.cache_limit={cfg.data.cache_limit!r} is not a size; use e.g. 200gb or 500mb")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# (dotted key, valid values); None (unset) is always valid
CHOICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("parallelism", PARALLELISMS),
    ("precision", PRECISIONS),
    ("optimizer.name", OPTIMIZERS),
    ("optimizer.muon.lr_scale", LR_SCALES),
    ("scheduler.name", ("cosine", "wsd")),
    ("model.gelu_approximate", GELU_APPROXIMATIONS),
    ("model.arch", ARCHS),
    ("device", ("cpu", "gpu")),
    ("fsdp.state_dict_type", ("sharded", "full")),
    ("fsdp.mixed_precision", ("DEFAULT", "PURE", "FULL")),
    ("compile.mode", COMPILE_MODES),
    ("data.shuffle_algo", SHUFFLE_ALGOS),
    ("python_log_level", LOG_LEVELS),
)


def _validate_choices(cfg: TrainConfig) -> None:
    for key, valid in CHOICES:
        value = _value(cfg, key)
        if value is not None and value not in valid:
            raise ConfigError(f"{key}={value!r}; valid: {', '.join(valid)}")


COUNTED = ("ba", "ep", "sp", "tok")  # Composer's units that count training progress
# (dotted key, the units Composer accepts there, whether 0 is valid); None (unset) is always valid
TIMES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("max_duration", COUNTED, False),
    ("eval_interval", (*COUNTED, "dur"), False),
    ("save_interval", (*COUNTED, "dur"), False),
    ("log_interval", ("ba", "ep"), False),
    ("scheduler.t_warmup", (*COUNTED, "dur"), True),
    ("optimizer.muon.momentum_warmup", ("ba",), True),
    ("sample_interval", (*COUNTED, "dur"), False),
)


def _validate_times(cfg: TrainConfig) -> None:
    """Each time string parsed as Composer will parse it, in a unit that key accepts (a bare ``5`` or ``5sec``
    would be wall-clock time: not reproducible), and positive."""
    for key, units, zero_ok in TIMES:
        _check_time(key, _value(cfg, key), units, zero_ok)


def _check_time(key: str, text: Optional[str], units: tuple[str, ...], zero_ok: bool) -> None:
    from composer.core import Time  # the parser Composer will use

    if text is None:
        return
    try:
        t = Time.from_timestring(str(text))
    except (ValueError, TypeError):
        t = None
    if t is None or t.unit.value not in units or t.value < 0 or (t.value == 0 and not zero_ok):
        sign = "a duration >= 0" if zero_ok else "a positive duration"
        raise ConfigError(f"{key}={text!r} is not {sign} in {', '.join(units)}; use e.g. 500{units[0]}")


def _validate_eval_tasks(cfg: TrainConfig) -> None:
    """Names usable as metric keys and unique, item counts positive, intervals as eval_interval's."""
    seen: set[str] = set()
    for i, task in enumerate(cfg.eval_tasks):
        key = f"eval_tasks.{i}"
        if not re.fullmatch(r"[A-Za-z0-9._-]+", task.name or "") or task.name in seen:
            raise ConfigError(f"{key}.name={task.name!r}: give each task a distinct name of letters, digits, '.', "
                              "'_' and '-' (it names metrics/<name>/acc)")
        if task.name in ("val", "train") or task.name.startswith("val/"):
            raise ConfigError(f"{key}.name={task.name!r} is taken by the val metrics; choose another name")
        seen.add(task.name)
        if not task.path:
            raise ConfigError(f"{key}.path is empty; give a .jsonl file (or s3:// object) of multiple-choice items")
        if task.max_items is not None and task.max_items < 1:
            raise ConfigError(f"{key}.max_items={task.max_items}: give a positive number, or null for all items")
        _check_time(f"{key}.interval", task.interval, ("ba", "ep", "dur"), False)


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as yaml, for the run folder and the start-up print."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def plain_config(cfg: TrainConfig) -> dict:
    """The config as plain dicts and lists (for wandb, and the resume fingerprint)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def write_run_config(cfg: TrainConfig) -> None:
    """Record the resolved config in the run folder (``config.yaml``): what eval.py, generate.py and
    scripts/compare_runs.py read back with :func:`load_run_config`."""
    os.makedirs(cfg.run_dir, exist_ok=True)
    write_atomic(os.path.join(cfg.run_dir, CONFIG_FILE), to_yaml(cfg))


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The resolved config a run recorded at its start; the one reader of a run's ``config.yaml``."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunFolderError(f"{path} is missing: give a run folder made by gpt_pile_composer.py "
                             "({runs_root}/{run_name}) or a checkpoint inside one")
    return load_config(path)
