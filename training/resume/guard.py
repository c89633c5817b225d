"""Refuse to resume a run whose config no longer matches its checkpoint in ways that break exactness.

The facts that decide which sample lands in which step and what the weights mean (global batch, seq len,
the datasets, the model's shape, the shuffle) are stored in every checkpoint through this callback's state.
The trainer compares them before a local checkpoint is loaded (:func:`check_fingerprint`); the callback's
``load_state_dict`` compares again for checkpoints it could not read beforehand (remote ones).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

from composer.core import Callback
from core.errors import ResumeMismatchError


def check_fingerprint(saved: Optional[dict[str, Any]], current: dict[str, Any], strict: bool,
                      soft: frozenset[str] = frozenset()) -> None:
    """Raise (strict) or warn listing every key whose value differs; keys in ``soft`` only ever warn."""
    if not saved:
        return
    changed = {k: (saved.get(k), v) for k, v in current.items() if k in saved and saved[k] != v}
    if not changed:
        return
    lines = "; ".join(f"{k}: checkpoint {a!r} -> now {b!r}" for k, (a, b) in sorted(changed.items()))
    if strict and any(k not in soft for k in changed):
        raise ResumeMismatchError(
            f"cannot resume exactly: the config changed since the checkpoint ({lines}). Set these back, or "
            "start a new run_name with load_path=<checkpoint> to continue from its weights on purpose"
        )
    warnings.warn(f"the config differs from the checkpoint's ({lines}); from here on the run does not replay it")


class ResumeGuard(Callback):
    """``strict``: a resumed run (same run_name) must match; otherwise (``load_path`` into a new run) warn.

    Keys in ``soft`` (the schedule: max_duration, optimizer, scheduler) only warn: training longer is a legitimate
    change, but from the resume point on the run no longer replays the checkpoint's.
    """

    def __init__(self, fingerprint: dict[str, Any], strict: bool = True, soft: frozenset[str] = frozenset()):
        self.fingerprint = fingerprint
        self.strict = strict
        self.soft = soft
        self.checked = False  # set when the trainer compared before loading

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.checked:
            check_fingerprint(state.get("fingerprint"), self.fingerprint, self.strict, self.soft)
