"""``torch.compile`` of the GPT, applied from outside gpt.py (torchtitan style), and the one line that says its cost.

Compiled in place with ``Module.compile()``: the modules stay where they are, so checkpoint keys keep GPT-2's names
(no ``_orig_mod.``) and eval.py, generate.py and export_hf.py read a compiled run's checkpoints as any other. It is
applied before the Trainer, which then wraps the same modules: DDP wraps the ComposerGPT (its gradient hooks fire
on the compiled backward's gradients), and FSDP2 (Composer's ``prepare_fully_shard``, after its activation
checkpointing) shards the compiled blocks, whose forward hooks dynamo leaves out of the graph
(``torch._dynamo.config.skip_fsdp_hooks``, on by default in torch 2.7): the reason the whole GPT is not compiled
under FSDP (training/config.py refuses it), as those hooks would break its graph at every block. Under activation
checkpointing the recompute runs the compiled block again.

Eval compiles its own graph (no grad, eval mode) at its first batch, once: dynamo's automatic dynamic shapes compile
it with a dynamic batch dimension when the eval batch differs from the training microbatch, so a smaller last batch
reuses it; with equal sizes the smaller last batch recompiles once (and a batch of 1, which dynamo specialises,
once more), never at every eval. ``TORCH_LOGS=recompiles`` prints each recompile and why.
"""
from __future__ import annotations

import time
from typing import Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from core.errors import ConfigError
from gpt import next_token_loss
from training.config import CompileConfig
from training.model import ComposerGPT


def check_compiler(cfg: CompileConfig, device: str) -> None:
    """On CPU inductor builds its kernels with a C++ compiler (``$CXX``, else ``g++``): without one the run would
    die at its first step, after the data and weights loaded, in a long traceback. Asked of torch's own search."""
    if not cfg.enabled or device != "cpu":
        return
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise ConfigError("compile.enabled=true on CPU needs a C++ compiler for torch inductor, and none was found "
                          "(it runs $CXX, else g++): install one (apt-get install g++) or point CXX at it, or set "
                          "compile.enabled=false") from None


def apply_compile(model: ComposerGPT, cfg: CompileConfig) -> None:
    """Compile each transformer block (``per_block``: one graph for all of them) or the whole GPT forward, and the
    loss: outside the GPT's graph, the eager loss copies the (B, T, V) logits twice (measured on an H200: gpt.py
    0.81x nanoGPT's model.py compiled, whose loss is inside its graph)."""
    if not cfg.enabled:
        return
    for module in model.model.blocks() if cfg.per_block else [model.model]:
        module.compile(mode=cfg.mode)
    model.loss_fn = torch.compile(next_token_loss, mode=cfg.mode)


def describe_compile(cfg: CompileConfig, n_blocks: int) -> str:
    what = f"each of the {n_blocks} transformer blocks, one graph for all" if cfg.per_block else "the whole GPT forward"
    return f"torch.compile of {what}, mode={cfg.mode}"


class CompileTimer(Callback):
    """Prints ``compile: S s`` once (rank 0): the first training step of this process, which compiles the forward
    and backward graphs, less the second step, which runs them (after a resume the new process compiles again)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._start: Optional[float] = None
        self._steps: list[float] = []  # the first two steps' seconds
        self._reported = False

    def batch_start(self, state: State, logger: Logger) -> None:
        self._start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._start is None or self._reported:
            return
        self._steps.append(time.perf_counter() - self._start)
        if len(self._steps) == 2:
            self._report()

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._steps and not self._reported:  # a run of one step: no compiled step to subtract
            self._report()

    def _report(self) -> None:
        self._reported = True
        first, later = self._steps[0], (self._steps[1] if len(self._steps) > 1 else 0.0)
        if dist.get_global_rank() == 0:
            print(f"compile: {first - later:.1f} s ({self.what}; first step {first:.1f} s, a compiled step "
                  f"{later:.2f} s)", flush=True)
