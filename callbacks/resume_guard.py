"""Refuse to resume a run whose config no longer matches its checkpoint in ways that break exactness.

The facts that decide which sample lands in which step and what the weights mean (global batch, seq len,
the datasets, the model's shape, the shuffle) are stored in every checkpoint through this callback's state;
loading a checkpoint compares them with the current run.
"""
from __future__ import annotations

import warnings
from typing import Any

from composer.core import Callback


class ResumeMismatchError(Exception):
    """Resuming would silently change the run; the message lists what changed and what to do."""


class ResumeGuard(Callback):
    """``strict``: a resumed run (same run_name) must match; otherwise (``load_path`` into a new run) warn."""

    def __init__(self, fingerprint: dict[str, Any], strict: bool = True):
        self.fingerprint = fingerprint
        self.strict = strict

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("fingerprint", {})
        changed = {k: (saved.get(k), v) for k, v in self.fingerprint.items() if k in saved and saved[k] != v}
        if not changed:
            return
        lines = "; ".join(f"{k}: checkpoint {a!r} -> now {b!r}" for k, (a, b) in sorted(changed.items()))
        if self.strict:
            raise ResumeMismatchError(
                f"cannot resume exactly: the config changed since the checkpoint ({lines}). Set these back, or "
                "start a new run_name with load_path=<checkpoint> to continue from its weights on purpose"
            )
        warnings.warn(f"loading a checkpoint made with a different config ({lines}); the run will not replay it")
