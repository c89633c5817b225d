"""Log a continuation of a fixed prompt every so often during training: a quick look at what the model learnt.

On (``sample_prompt=...``), the text lands in ``metrics.jsonl`` as ``samples/text`` in the row of the step it was
taken after, and in the console summary. wandb gets it as HTML media under the same key (one per step, browsed
with the step slider), not as a Table: wandb 0.18.7 hangs logging a Table offline without a network
(wandb/wandb#8957).

Sampling must leave the run exactly as it would be without it (exact resume compares runs bit for bit): it draws
from a private generator seeded with the run's seed, in eval mode (no dropout draws), under ``torch.no_grad``,
and puts the model back in train mode afterwards.

Rank 0 samples from the unwrapped GPT (DDP's wrapper only adds gradient hooks). Under FSDP every forward is a
collective over sharded parameters, which rank 0 alone cannot run: sampling is skipped with a one-time warning
(sample from a saved checkpoint with generate.py instead).
"""
from __future__ import annotations

import html
import warnings
from typing import Any, Optional

import torch
from composer.core import Callback, Event, State, Time
from composer.loggers import Logger, WandBLogger
from composer.utils import create_interval_scheduler, dist
from torch.nn.parallel import DistributedDataParallel

from core.tokenizer import Tokenizer
from gpt import GPT
from sampling import sample_text

TEXT_KEY = "samples/text"


class SampleLogger(Callback):
    """Every ``interval`` (and at the end of training), continue ``prompt`` by up to ``max_new_tokens`` tokens
    (stopping at end-of-text) and log prompt + continuation."""

    def __init__(self, tokenizer: Tokenizer, prompt: str, interval: str | Time, max_new_tokens: int = 64,
                 temperature: float = 0.8, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        # BATCH_END (before eval and checkpoint), as Composer's eval_interval: the row of this step gets the text.
        self._due = create_interval_scheduler(interval, checkpoint_events=False,
                                              final_events={Event.BATCH_END, Event.EPOCH_END})
        self._last_step: Optional[int] = None
        self._warned = False

    def batch_end(self, state: State, logger: Logger) -> None:
        self._maybe_sample(state, logger, Event.BATCH_END)

    def epoch_end(self, state: State, logger: Logger) -> None:
        self._maybe_sample(state, logger, Event.EPOCH_END)

    def _maybe_sample(self, state: State, logger: Logger, event: Event) -> None:
        step = int(state.timestamp.batch)
        if not self._due(state, event) or step == self._last_step:
            return
        self._last_step = step
        if state.fsdp_enabled:
            if not self._warned and dist.get_global_rank() == 0:
                warnings.warn("sample_prompt: no samples under FSDP (forward is collective over sharded weights); "
                              "run generate.py on a checkpoint instead")
            self._warned = True
            return
        if dist.get_global_rank() == 0:
            self._log(logger, step, self.generate(unwrap_gpt(state)))

    def generate(self, gpt: GPT) -> str:
        """The prompt and its continuation, in eval mode, the train/eval mode put back as it was."""
        was_training = gpt.training
        gpt.eval()
        try:  # eager under compile.enabled: every token's forward has another length and would recompile
            with torch.compiler.set_stance("force_eager"):
                return sample_text(gpt, self.tokenizer, self.prompt, self.max_new_tokens, temperature=self.temperature,
                                   top_k=None, seed=self.seed, stop_at_eos=True)
        finally:
            gpt.train(was_training)

    def _log(self, logger: Logger, step: int, text: str) -> None:
        """The text as a string metric; for wandb, which charts numbers and shows a string only as its last value,
        as HTML media (kept per step)."""
        for destination in logger.destinations:
            value = _wandb_html(text) if isinstance(destination, WandBLogger) else text
            destination.log_metrics({TEXT_KEY: value}, step=step)


def _wandb_html(text: str) -> Any:
    import wandb  # present whenever a WandBLogger is

    return wandb.Html(f"<pre>{html.escape(text)}</pre>")


def unwrap_gpt(state: State) -> GPT:
    """The GPT inside the ComposerGPT inside DDP's wrapper (when there is one)."""
    model = state.model.module if isinstance(state.model, DistributedDataParallel) else state.model
    return model.model
