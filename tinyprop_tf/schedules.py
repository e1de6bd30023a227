"""ssProp keep-fraction schedules (the share of output channels whose gradient is computed).

Closed forms from the ssProp authors' code (epoch ``e`` of ``E``, 0-indexed; ``p`` = keep, ``p_min`` = minimum
keep). Priority: warm-up > interleave > mode.

- warm-up: keep 1.0 for the first ``warmup`` epochs (or iterations, per-iteration variant);
- interleave: alternate a full epoch (1.0) and a sparse epoch (the mode's value). Which parity is full is not
  stated in ALGORITHMS.md; here the sparse epoch comes first after warm-up (``(e - warmup) % 2 == 0`` is
  sparse), so a 1-epoch fine-tune is sparse.
- constant ``p``; linear ``max(p_min, p - (p - p_min) * e / (E - 1))``;
  cosine ``p_min + (p - p_min) * (1 + cos(pi * e / (E - 1))) / 2``; bar ``p`` for ``e < E // 2`` else ``p_min``.
  With ``E == 1`` the fraction ``e / (E - 1)`` is taken as 0.
- per-iteration variant (``period=T``): ``e`` becomes ``i mod T`` and ``E`` becomes ``T`` (iteration ``i`` counts
  training steps from the start of the run).
"""

from __future__ import annotations

import math

from tinyprop_tf._registry import keras_serializable
from tinyprop_tf._validate import check_fraction, check_int, check_range


class KeepSchedule:
    """Base class: ``keep(epoch, epochs, iteration)`` -> fraction of channels kept, in (0, 1]."""

    def __init__(self, warmup: int = 0, interleave: bool = False, period: int | None = None):
        self.warmup = check_int("warmup", warmup, minimum=0)
        self.interleave = bool(interleave)
        self.period = None if period is None else check_int("period", period, minimum=1)

    @property
    def per_iteration(self) -> bool:
        return self.period is not None

    def _mode_value(self, position: int, length: int) -> float:
        raise NotImplementedError

    def keep(self, epoch: int, epochs: int, iteration: int = 0) -> float:
        """Keep fraction for this epoch (epoch-based) or this iteration (``period`` set)."""
        if self.per_iteration:
            step, position, length = iteration, iteration % self.period, self.period
        else:
            step, position, length = epoch, epoch, max(int(epochs), 1)
        if step < self.warmup:
            return 1.0
        if self.interleave and (step - self.warmup) % 2 == 1:
            return 1.0
        return float(self._mode_value(position, length))

    def get_config(self):
        return {"warmup": self.warmup, "interleave": self.interleave, "period": self.period}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


def _fraction_of_run(position: int, length: int) -> float:
    return 0.0 if length <= 1 else position / (length - 1)


@keras_serializable
class Constant(KeepSchedule):
    """Keep ``p`` throughout (ssProp's headline recipe: ``Constant(0.2, interleave=True)``, mean keep 0.6)."""

    def __init__(self, p: float, **options):
        super().__init__(**options)
        self.p = check_fraction("p", p)

    def _mode_value(self, position, length):
        return self.p

    def get_config(self):
        return {"p": self.p, **super().get_config()}


class _Decaying(KeepSchedule):
    def __init__(self, p: float, p_min: float, **options):
        super().__init__(**options)
        self.p = check_fraction("p", p)
        self.p_min = check_range("p_min", p_min, 0.0, 1.0)  # 0 is fine: k is clamped to >= 1
        if self.p_min > self.p:
            raise ValueError(f"p_min must be <= p, got p_min={p_min} > p={p}")

    def get_config(self):
        return {"p": self.p, "p_min": self.p_min, **super().get_config()}


@keras_serializable
class Linear(_Decaying):
    """``max(p_min, p - (p - p_min) * e / (E - 1))``."""

    def _mode_value(self, position, length):
        return max(self.p_min, self.p - (self.p - self.p_min) * _fraction_of_run(position, length))


@keras_serializable
class Cosine(_Decaying):
    """``p_min + (p - p_min) * (1 + cos(pi * e / (E - 1))) / 2``."""

    def _mode_value(self, position, length):
        return self.p_min + 0.5 * (self.p - self.p_min) * (
            1.0 + math.cos(math.pi * _fraction_of_run(position, length))
        )


@keras_serializable
class Bar(_Decaying):
    """``p`` for the first half (``e < E // 2``), ``p_min`` after."""

    def _mode_value(self, position, length):
        return self.p if position < length // 2 else self.p_min
