"""Parameter checks shared by policies and schedules: each error names the parameter and the allowed range."""

from __future__ import annotations

import math
import numbers

# How M * ratio becomes k (tinyprop_tf.selection.ratio_to_k): "floor" (the TinyProp authors' C code) or "round".
ROUNDING_MODES = ("floor", "round")
# Fine-tuning optimizers by name (experiment.make_optimizer builds them; the CLI and sweep specs check names here,
# before TensorFlow is imported).
OPTIMIZERS = ("adam", "lazy_adam", "sgd", "momentum")
# ``tinyprop finetune --learning-rate auto`` (its default) tries these (``experiment.choose_learning_rate``): no one
# rate suits every task (benchmarks/choose_learning_rate.py, benchmarks/RESULTS.md).
AUTO_LEARNING_RATES = (1e-3, 3e-3, 1e-2)


def _as_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def check_range(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` in ``[low, high]`` (or ``(low, high]`` with ``low_open``), else ValueError naming it."""
    value = _as_real(name, value)
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")
    return value


def check_fraction(name: str, value) -> float:
    """A kept fraction: in (0, 1]."""
    return check_range(name, value, 0.0, 1.0, low_open=True)


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_finite(name: str, value) -> float:
    """A finite real number (not NaN, not +-inf)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)
