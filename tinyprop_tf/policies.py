"""Back-propagation policies: which part of a layer's error signal is kept in the backward pass.

A policy is a small, validated, serialisable description; the arithmetic lives in ``selection.py`` and the
state (running maximum of the local error, ssProp's current keep fraction) lives in each sparse layer.

- ``DenseBackprop()``: the reference, keeps everything.
- ``StaticTopK(ratio, zeta)``: meProp-style fixed ratio per layer, ``k = clamp(floor(M * ratio * zeta**p), 1, M)``.
- ``TinyProp(s_min, s_max, zeta, rounding)``: adaptive ratio per layer, per sample, per step.
- ``TinyPropSkip(tau, s_min, s_max, zeta, rounding)``: TinyProp that also skips the whole backward pass of a
  sample whose output-layer error is already small. This is *this project's own reading* of TinyPropv2
  (whose skip rule is unpublished): a sample is skipped when ``Y_0(n) / Ymax_0 < tau`` at the sparse layer
  nearest the output (depth 0). It is not the paper's method.
- ``SsProp(schedule)``: channel-wise top-k shared by the batch (score = mean |delta| over batch and positions),
  keep fraction from a schedule; the bias gradient of unselected channels is zero too.

Loading this module loads no TensorFlow (the CLI checks ``--policy`` specs before TensorFlow's seconds-long
import); the methods that build graph ops import it where they run.
"""

from __future__ import annotations

from tinyprop_tf import schedules as schedules_lib
from tinyprop_tf._registry import keras_serializable, register_with_keras
from tinyprop_tf._validate import ROUNDING_MODES, check_fraction, check_range


class BackpropPolicy:
    """Base class. Subclasses describe how many entries each sample keeps."""

    #: False for the dense reference: no selection at all.
    selects = True
    #: True when one kept set is shared by the whole batch (ssProp) instead of one per sample.
    batch_shared = False
    #: False when the bias gradient is the sum of the full error (TinyProp, static: documented choice).
    sparse_bias = False
    rounding = "floor"

    def sample_ratio(self, y, ymax, depth: int, keep):
        """Back-propagation ratio per sample [B] (float32) before rounding to k."""
        raise NotImplementedError

    def skipped_samples(self, y, ymax, depth: int):
        """Bool [B]: samples whose whole backward pass is skipped. None when the policy never skips."""
        return None

    def initial_keep(self) -> float:
        """Initial value of the layer's keep variable (only ssProp's schedule moves it)."""
        return 1.0

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras_serializable
class DenseBackprop(BackpropPolicy):
    """Dense back-propagation: the exact gradient, with the same accounting as the sparse policies."""

    selects = False

    def sample_ratio(self, y, ymax, depth, keep):
        import tensorflow as tf

        return tf.ones_like(y)


def _check_zeta(zeta):
    return check_range("zeta", zeta, 0.0, 1.0, low_open=True)


def _check_rounding(rounding):
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    return rounding


@keras_serializable
class StaticTopK(BackpropPolicy):
    """meProp-style static top-k: every sample keeps ``clamp(floor(M * ratio * zeta**p), 1, M)`` entries."""

    def __init__(self, ratio: float, zeta: float = 1.0, rounding: str = "floor"):
        self.ratio = check_fraction("ratio", ratio)
        self.zeta = _check_zeta(zeta)
        self.rounding = _check_rounding(rounding)

    def sample_ratio(self, y, ymax, depth, keep):
        from tinyprop_tf import selection

        # TinyProp with S_min = S_max = ratio: the same expression, so the same float32 result.
        return selection.adaptive_ratio(y, ymax, self.ratio, self.ratio, self.zeta**depth)

    def get_config(self):
        return {"ratio": self.ratio, "zeta": self.zeta, "rounding": self.rounding}


@keras_serializable
class TinyProp(BackpropPolicy):
    """TinyProp: ``bpr(n) = (s_min + Y(n) * (s_max - s_min) / Ymax) * zeta**p``, ``k = clamp(floor(M*bpr),1,M)``.

    ``rounding="floor"`` follows the authors' C code (truncate and clamp); ``"round"`` follows their PyTorch
    code's rounding, but with the clamp their PyTorch code forgets.
    """

    def __init__(self, s_min: float = 0.1, s_max: float = 0.9, zeta: float = 0.5, rounding: str = "floor"):
        self.s_min = check_range("s_min", s_min, 0.0, 1.0)
        self.s_max = check_range("s_max", s_max, 0.0, 1.0)
        if self.s_min > self.s_max:
            raise ValueError(f"s_min must be <= s_max, got s_min={s_min} > s_max={s_max}")
        self.zeta = _check_zeta(zeta)
        self.rounding = _check_rounding(rounding)

    def sample_ratio(self, y, ymax, depth, keep):
        from tinyprop_tf import selection

        return selection.adaptive_ratio(y, ymax, self.s_min, self.s_max, self.zeta**depth)

    def get_config(self):
        return {"s_min": self.s_min, "s_max": self.s_max, "zeta": self.zeta, "rounding": self.rounding}


@keras_serializable
class TinyPropSkip(TinyProp):
    """TinyProp plus sample skipping: this project's reading of TinyPropv2 (its rule is unpublished).

    At the sparse layer nearest the output (depth 0) a sample whose relative error ``Y(n) / Ymax`` is below
    ``tau`` gets no backward pass at all: its error signal is zeroed there (bias included), so every earlier
    layer sees zero error for it and spends nothing on it.
    """

    def __init__(self, tau: float = 0.05, s_min=0.1, s_max=0.9, zeta=0.5, rounding="floor"):
        super().__init__(s_min=s_min, s_max=s_max, zeta=zeta, rounding=rounding)
        self.tau = check_range("tau", tau, 0.0, 1.0)

    def skipped_samples(self, y, ymax, depth):
        import tensorflow as tf

        if depth != 0:
            return None
        return (y / ymax) < tf.constant(self.tau, tf.float32)

    def get_config(self):
        return {"tau": self.tau, **super().get_config()}


@keras_serializable
class SsProp(BackpropPolicy):
    """ssProp: channel-wise top-k shared by the batch, keep fraction from a schedule.

    The schedule is applied by the ``UpdateSparsity`` callback (epoch or iteration based); without it the
    keep fraction stays at the schedule's epoch-0 value.
    """

    batch_shared = True
    sparse_bias = True

    def __init__(self, schedule: schedules_lib.KeepSchedule | float = 0.5):
        if isinstance(schedule, dict):
            schedule = _from_keras_config(schedule)
        elif not isinstance(schedule, schedules_lib.KeepSchedule):
            schedule = schedules_lib.Constant(check_fraction("schedule", schedule))
        self.schedule = schedule

    def sample_ratio(self, y, ymax, depth, keep):
        import tensorflow as tf

        return tf.fill(tf.shape(y), keep)

    def initial_keep(self):
        return self.schedule.keep(epoch=0, epochs=1, iteration=0)

    def get_config(self):
        import keras

        register_with_keras()
        return {"schedule": keras.saving.serialize_keras_object(self.schedule)}

    def __repr__(self):
        return f"SsProp({self.schedule!r})"


def _from_keras_config(config: dict):
    import keras

    register_with_keras()
    return keras.saving.deserialize_keras_object(config)


def get(identifier) -> BackpropPolicy:
    """A policy from an instance, a config dict or a short name (``"dense"``, ``"tinyprop"``, ``"static"``...)."""
    if isinstance(identifier, BackpropPolicy):
        return identifier
    if isinstance(identifier, dict):
        return _from_keras_config(identifier)
    names = {"dense": DenseBackprop, "tinyprop": TinyProp, "tinyprop_skip": TinyPropSkip, "ssprop": SsProp}
    if isinstance(identifier, str) and identifier.lower() in names:
        return names[identifier.lower()]()
    raise ValueError(
        f"unknown back-propagation policy {identifier!r}; pass a policy object (DenseBackprop(), "
        f"StaticTopK(ratio), TinyProp(...), TinyPropSkip(...), SsProp(schedule)) or one of {sorted(names)}"
    )


_SPEC_CLASSES = {
    "dense": DenseBackprop, "static": StaticTopK, "tinyprop": TinyProp, "tinyprop_skip": TinyPropSkip,
    "ssprop": SsProp,
}


def from_spec(spec: str) -> BackpropPolicy:
    """A policy from a command-line spec: ``name`` or ``name:value`` or ``name:key=value,key=value``.

    Examples: ``dense``, ``static:0.2``, ``static:ratio=0.1,zeta=0.5``, ``tinyprop``,
    ``tinyprop:s_min=0.1,s_max=0.9,zeta=0.5``, ``tinyprop_skip:tau=0.05``, ``ssprop:0.3`` (constant keep).
    A bare value sets the first parameter.
    """
    name, _, arguments = str(spec).partition(":")
    cls = _SPEC_CLASSES.get(name.strip().lower())
    if cls is None:
        raise ValueError(f"unknown policy {name!r} in {spec!r}; expected one of {sorted(_SPEC_CLASSES)}")
    args, kwargs = [], {}
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, has_key, value = item.partition("=")
        try:
            parsed = value if key.strip() == "rounding" else float(value if has_key else key)
        except ValueError:
            raise ValueError(f"policy {spec!r}: {item!r} is not a number") from None
        if has_key:
            kwargs[key.strip()] = parsed
        else:
            args.append(parsed)
    try:
        return cls(*args, **kwargs)
    except TypeError as error:
        raise ValueError(f"policy {spec!r}: {error}") from None
