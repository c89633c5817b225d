"""Learning-rate schedules Composer 0.32.1 does not have: warmup-stable-decay (WSD: Hu et al. 2024, MiniCPM; the
"trapezoid" of the modded-nanogpt records). Like Composer's own, a multiplier of each group's initial lr computed
from the timestamp alone, so a resumed run gets the very lr the uninterrupted one had."""
from __future__ import annotations

from typing import Union

from composer.core import State, Time
from composer.optim import ComposerScheduler
from composer.optim.scheduler import _convert_time  # Composer's own "100ba" / "0.1dur" reader


class WarmupStableDecayScheduler(ComposerScheduler):
    """Linear warmup from 0 to 1 over ``t_warmup``, 1 until the last ``decay_fraction`` of ``max_duration``, then
    linear to ``alpha_f`` at its end."""

    def __init__(self, t_warmup: Union[str, Time], decay_fraction: float, alpha_f: float) -> None:
        self.t_warmup, self.decay_fraction, self.alpha_f = t_warmup, decay_fraction, alpha_f

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        assert state.max_duration is not None, "max_duration should be set whenever schedulers are invoked"
        t_warmup = _convert_time(self.t_warmup, state)
        warm = state.timestamp.get(t_warmup.unit).value
        if warm < t_warmup.value:
            return warm / t_warmup.value
        t_max = _convert_time("1dur", state, ssr=ssr)  # in max_duration's unit
        now = state.timestamp.get(t_max.unit).value
        decay_start = t_max.value * (1 - self.decay_fraction)
        if now < decay_start:
            return 1.0
        frac = min(1.0, (now - decay_start) / (t_max.value - decay_start))
        return 1.0 + frac * (self.alpha_f - 1.0)
