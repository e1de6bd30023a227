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
- ``BudgetProp(budget, decay, min_kept, cost_exponent, mode)``: *this project's own* fine-tuning policy (not
  TinyProp): a backward budget (a fraction of the dense backward MACs), spent per entry or on whole samples. Per
  entry it is shared out among the layers by their backward cost, cheap layers dense (``allot_budget``); within a
  layer each sample's ratio is its share times its error relative to a running mean of recent errors, so hard
  samples get (nearly) their whole gradient and fitted ones almost none, and the budget holds on average. On whole
  samples (chosen where the cost is spread over a chain of layers, as in a DS-CNN) only the samples whose
  output-layer error reaches a running quantile back-propagate, densely; the quantile passes a share ``budget``.
  ``skip_below`` skips, per entry too, the samples whose output-layer error is below that multiple of the mean.

The selection-based policies give every runtime their per-layer parameters through one method, ``rule(depth)``
(a ``selection.SelectionRule``).

Loading this module loads no TensorFlow (the CLI checks ``--policy`` specs before TensorFlow's seconds-long
import); the methods that build graph ops import it where they run.
"""

from __future__ import annotations

from tinyprop_tf import schedules as schedules_lib
from tinyprop_tf._registry import keras_serializable, register_with_keras
from tinyprop_tf._validate import ROUNDING_MODES, check_fraction, check_int, check_range


class BackpropPolicy:
    """Base class. Subclasses describe how many entries each sample keeps."""

    #: False for the dense reference: no selection at all.
    selects = True
    #: True when one kept set is shared by the whole batch (ssProp) instead of one per sample.
    batch_shared = False
    #: False when the bias gradient is the sum of the full error (TinyProp, static: documented choice).
    sparse_bias = False
    rounding = "floor"

    def rule(self, depth: int):
        """The layer's ``selection.SelectionRule`` at ``depth`` (p in ``zeta**p``); None when the policy has no
        per-sample rule (dense keeps everything, ssProp's keep fraction is a schedule)."""
        return None

    def sample_ratio(self, y, ymax, depth: int, keep):
        """Back-propagation ratio per sample [B] (float32) before rounding to k."""
        rule = self.rule(depth)
        if rule is None:
            raise NotImplementedError
        return rule.ratio(y, ymax)

    def model_policy(self) -> "BackpropPolicy":
        """The policy as the user chose it for the model, without what ``sparsify`` set for one layer."""
        return self

    def for_layers(self, costs) -> list["BackpropPolicy"] | None:
        """One policy per sparse layer of a model, given each layer's dense backward MACs per sample (0: its
        backward never runs); None when every layer runs the same policy."""
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


def _check_bool(name, value):
    if isinstance(value, (int, float)) and value in (0, 1):  # a command-line spec's 0 / 1
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_rounding(rounding):
    return _check_choice("rounding", rounding, ROUNDING_MODES)


@keras_serializable
class StaticTopK(BackpropPolicy):
    """meProp-style static top-k: every sample keeps ``clamp(floor(M * ratio * zeta**p), 1, M)`` entries."""

    def __init__(self, ratio: float, zeta: float = 1.0, rounding: str = "floor"):
        self.ratio = check_fraction("ratio", ratio)
        self.zeta = _check_zeta(zeta)
        self.rounding = _check_rounding(rounding)

    def rule(self, depth):
        from tinyprop_tf import selection

        # TinyProp with S_min = S_max = ratio: the same expression, so the same float32 result.
        return selection.SelectionRule(self.ratio, self.ratio, self.zeta**depth, self.rounding)

    def get_config(self):
        return {"ratio": self.ratio, "zeta": self.zeta, "rounding": self.rounding}


@keras_serializable
class TinyProp(BackpropPolicy):
    """TinyProp: ``bpr(n) = (s_min + Y(n) * (s_max - s_min) / Ymax) * zeta**p``, ``k = clamp(floor(M*bpr),1,M)``.

    ``rounding="floor"`` follows the authors' C code (truncate and clamp); ``"round"`` follows their PyTorch
    code's rounding, but with the clamp their PyTorch code forgets.

    Two options beyond the paper, both off by default:
    - ``per_sample_max=True``: the running maximum in the order of the authors' AIfES C code, which trains sample
      by sample: sample n of a batch sees the maximum over samples 1..n (their PyTorch code, the default here,
      applies the whole batch's maximum first);
    - ``ymax_decay < 1``: a running maximum that forgets, ``Ymax = max(decay * Ymax, max Y)``.
    """

    def __init__(self, s_min: float = 0.1, s_max: float = 0.9, zeta: float = 0.5, rounding: str = "floor",
                 per_sample_max: bool = False, ymax_decay: float = 1.0):
        self.s_min = check_range("s_min", s_min, 0.0, 1.0)
        self.s_max = check_range("s_max", s_max, 0.0, 1.0)
        if self.s_min > self.s_max:
            raise ValueError(f"s_min must be <= s_max, got s_min={s_min} > s_max={s_max}")
        self.zeta = _check_zeta(zeta)
        self.rounding = _check_rounding(rounding)
        self.per_sample_max = _check_bool("per_sample_max", per_sample_max)
        self.ymax_decay = check_range("ymax_decay", ymax_decay, 0.0, 1.0, low_open=True)

    def rule(self, depth):
        from tinyprop_tf import selection

        return selection.SelectionRule(self.s_min, self.s_max, self.zeta**depth, self.rounding, "max",
                                       self.ymax_decay, self.per_sample_max)

    def get_config(self):
        config = {"s_min": self.s_min, "s_max": self.s_max, "zeta": self.zeta, "rounding": self.rounding}
        if self.per_sample_max or self.ymax_decay != 1.0:  # the paper's configs stay as they were
            config.update(per_sample_max=self.per_sample_max, ymax_decay=self.ymax_decay)
        return config


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

    def rule(self, depth):
        import dataclasses

        # the skip in the rule (selection.SelectionRule.skip_below), at the layer nearest the output only
        return dataclasses.replace(super().rule(depth), skip_below=self.tau if depth == 0 else 0.0)

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


@keras_serializable
class BudgetProp(BackpropPolicy):
    """This project's fine-tuning policy: a backward budget spent where it is cheap, on the samples that need it.

    ``budget``: target backward compute as a fraction of dense back-propagation's (dW + dx MACs of the layers whose
    backward runs). It is spent in one of two ways (``mode``):

    - ``"entries"``: ``allot_budget`` shares the budget out by each layer's dense backward cost ``C``: layer share
      ``r = min(1, a * C**-cost_exponent)``, ``a`` such that ``sum(C * r) = budget * sum(C)``. Narrow, cheap layers
      (logits, a last hidden layer) get ``r = 1`` and stay dense; the wide ones pay. ``cost_exponent = 0`` is one
      ratio for every layer. Per sample, in a layer with ``r < 1``: ``bpr(n) = r * Y(n) / Ybar``, where ``Ybar`` is
      a running mean of the layer's local error (``decay`` per step; ``selection.update_reference``), and ``k =
      clamp(floor(M * bpr), min(min_kept, M), M)``: a sample whose error is ``1 / r`` times the recent mean keeps
      everything, a fitted one almost nothing, and the mean of ``bpr`` is about ``r`` (less where the clamp at M
      cuts it): the budget holds on average. This is TinyProp's formula with ``s_min = 0``, ``s_max = r`` and a mean
      in place of the maximum.
    - ``"samples"``: whole samples. At the sparse layer nearest the output (depth 0) a sample back-propagates only
      if its error reaches a running quantile of the errors, ``Y(n) >= R``, R steered so that a share ``budget`` of
      the samples do (``selection.update_reference``, ``"quantile"``, ``SAMPLES_THRESHOLD_RATE``); the others get no
      backward pass at all (error zeroed there, bias included, so no earlier layer spends anything on them), and
      the ones that pass back-propagate densely through every layer. In a deep chain of similarly costed layers
      the per-entry budget is a sliver of a sliver by the first layer; the whole error of the samples the model
      still gets wrong trains it better (``benchmarks/RESULTS.md``, budget allocation).
    - ``"auto"`` (default): ``"samples"`` when the backward cost is spread over a chain, its effective number of
      layers ``(sum C)**2 / sum(C**2)`` at least ``SAMPLES_FROM_LAYERS`` (a DS-CNN trained whole: 7.0), else
      ``"entries"`` (one layer dominates: an MLP's first layer 1.1, the Conv1D net 1.7, a DS-CNN's last two layers
      1.0, the DCASE autoencoder 2.3), and ``"entries"`` whenever ``skip_below`` is set or the budget is 1.

    - ``min_kept`` (entries): every sample keeps at least this many entries of a layer (or all, in narrower layers).
    - ``skip_below`` (entries; 0: off): at depth 0 a sample whose error is below ``skip_below`` times that layer's
      running mean, ``Y(n) / Ybar < skip_below``, gets no backward pass at all. With ``budget=1`` the kept samples
      back-propagate densely and ``skip_below`` alone sets the compute (the fixed-threshold form of "samples").

    Why not TinyProp's all-time maximum: in fine-tuning the first steps' errors are the largest, so ``Y / Ymax``
    falls towards 0 for good and every layer sits at its floor; the ratio must follow the *recent* errors
    (``benchmarks/RESULTS.md`` compares a decaying maximum, which helps less).

    ``layer_ratio`` and ``layer_mode`` are what ``for_layers`` chose for one layer (``cloning.sparsify`` and
    ``train_last`` set them on each layer's copy of the policy); unset, a layer uses ``budget`` itself, per entry.
    """

    MODES = ("auto", "entries", "samples")
    #: "auto" spends the budget on whole samples from this effective number of layers on
    SAMPLES_FROM_LAYERS = 4.0
    #: how far one step moves the "samples" threshold (``SelectionRule.quantile_rate``)
    SAMPLES_THRESHOLD_RATE = 1.0

    def __init__(self, budget: float = 0.15, decay: float = 0.9, min_kept: int = 1, cost_exponent: float = 1.0,
                 rounding: str = "floor", layer_ratio: float | None = None, skip_below: float = 0.0,
                 mode: str = "auto", layer_mode: str | None = None):
        self.budget = check_fraction("budget", budget)
        self.decay = check_range("decay", decay, 0.0, 1.0, low_open=True)
        self.min_kept = check_int("min_kept", min_kept, 1)
        self.cost_exponent = check_range("cost_exponent", cost_exponent, 0.0, 4.0)
        self.rounding = _check_rounding(rounding)
        self.layer_ratio = None if layer_ratio is None else check_fraction("layer_ratio", layer_ratio)
        # Y / Ybar is about 1 on average; no sample's error reaches 10x the mean of a batch of 10
        self.skip_below = check_range("skip_below", skip_below, 0.0, 10.0)
        self.mode = _check_choice("mode", mode, self.MODES)
        self.layer_mode = None if layer_mode is None else _check_choice("layer_mode", layer_mode, self.MODES[1:])
        if "samples" in (self.mode, self.layer_mode):
            if self.skip_below:
                raise ValueError("BudgetProp: skip_below is the 'entries' mode's fixed threshold; in mode 'samples' "
                                 "the budget sets the share of samples that back-propagate (drop skip_below or use "
                                 "mode='entries')")
            if self.budget == 1.0:
                raise ValueError("BudgetProp: mode 'samples' with budget 1 would skip nothing; use a budget < 1")

    def spends_on(self) -> str:
        """This layer's mode: what ``for_layers`` chose, else ``mode`` ("auto" unresolved: per entry)."""
        return self.layer_mode or ("samples" if self.mode == "samples" else "entries")

    def rule(self, depth):
        from tinyprop_tf import selection

        if self.spends_on() == "samples":
            if depth != 0:  # what passed the layer nearest the output back-propagates densely
                return selection.SelectionRule(1.0, 1.0, 1.0, self.rounding, "mean", self.decay)
            return selection.SelectionRule(1.0, 1.0, 1.0, self.rounding, "quantile", 1.0, skip_below=1.0,
                                           quantile_share=self.budget, quantile_rate=self.SAMPLES_THRESHOLD_RATE)
        r = self.budget if self.layer_ratio is None else self.layer_ratio
        return selection.SelectionRule(1.0 if r == 1.0 else 0.0, r, 1.0, self.rounding, "mean", self.decay,
                                       min_kept=self.min_kept, skip_below=self.skip_below if depth == 0 else 0.0)

    def chosen_mode(self, costs) -> str:
        """"entries" or "samples" for a model whose sparse layers have these dense backward costs."""
        if self.mode != "auto":
            return self.mode
        if self.skip_below or self.budget == 1.0:
            return "entries"
        return "samples" if effective_layers(costs) >= self.SAMPLES_FROM_LAYERS else "entries"

    def choice_text(self, costs) -> str:
        """How this policy spends its budget on layers of these costs, in words (reports)."""
        how = {"samples": "on whole samples (those reaching the output layer's running quantile)",
               "entries": "per entry (shared out by layer cost)"}[self.chosen_mode(costs)]
        why = (f"mode {self.mode}" if self.mode != "auto" else
               f"auto: whole samples from {self.SAMPLES_FROM_LAYERS:g} effective layers"
               + (", but skip_below or budget 1 set" if self.skip_below or self.budget == 1.0 else ""))
        return (f"spends its budget {how}; the backward cost spreads over {effective_layers(costs):.1f} effective "
                f"layers ({why})")

    def for_layers(self, costs):
        mode = self.chosen_mode(costs)
        if mode == "samples":
            return [self.with_layer_ratio(1.0, "samples") for _ in costs]
        return [self.with_layer_ratio(r, "entries") for r in allot_budget(costs, self.budget, self.cost_exponent)]

    def with_layer_ratio(self, ratio: float | None, mode: str | None = None) -> "BudgetProp":
        return BudgetProp(**{**self.get_config(), "layer_ratio": None if ratio is None else float(ratio),
                             "layer_mode": mode})

    def model_policy(self):
        return self.with_layer_ratio(None)

    def get_config(self):
        return {"budget": self.budget, "decay": self.decay, "min_kept": self.min_kept,
                "cost_exponent": self.cost_exponent, "rounding": self.rounding, "layer_ratio": self.layer_ratio,
                "skip_below": self.skip_below, "mode": self.mode, "layer_mode": self.layer_mode}


def effective_layers(costs) -> float:
    """Over how many layers a backward cost spreads: ``(sum C)**2 / sum(C**2)`` over the layers whose backward runs
    (n equal layers: n; one that dominates: about 1; none: 0)."""
    live = [float(c) for c in costs if c > 0]
    return sum(live) ** 2 / sum(c * c for c in live) if live else 0.0


def allot_budget(costs, budget: float, exponent: float) -> list[float]:
    """Ratios ``r_l = min(1, a * C_l**-exponent)`` with ``sum(C_l * r_l) = budget * sum(C_l)`` (bisection on
    ``a``; 1.0 for a layer of zero cost). The cost share is concave in ``a``, so the root is unique."""
    costs = [float(c) for c in costs]
    live = [c for c in costs if c > 0]
    if not live:
        return [1.0] * len(costs)
    target = budget * sum(live)

    def ratios(a):
        return [min(1.0, a * c**-exponent) for c in live]

    low, high = 0.0, max(c**exponent for c in live)  # at `high` every ratio is 1
    for _ in range(200):
        mid = 0.5 * (low + high)
        if sum(c * r for c, r in zip(live, ratios(mid))) < target:
            low = mid
        else:
            high = mid
    shares = iter(ratios(high))
    return [next(shares) if c > 0 else 1.0 for c in costs]


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
    names = {"dense": DenseBackprop, "tinyprop": TinyProp, "tinyprop_skip": TinyPropSkip, "ssprop": SsProp,
             "budget": BudgetProp}
    if isinstance(identifier, str) and identifier.lower() in names:
        return names[identifier.lower()]()
    raise ValueError(
        f"unknown back-propagation policy {identifier!r}; pass a policy object (DenseBackprop(), "
        f"StaticTopK(ratio), TinyProp(...), TinyPropSkip(...), SsProp(schedule)) or one of {sorted(names)}"
    )


_SPEC_CLASSES = {
    "dense": DenseBackprop, "static": StaticTopK, "tinyprop": TinyProp, "tinyprop_skip": TinyPropSkip,
    "ssprop": SsProp, "budget": BudgetProp,
}


def from_spec(spec: str) -> BackpropPolicy:
    """A policy from a command-line spec: ``name`` or ``name:value`` or ``name:key=value,key=value``.

    Examples: ``dense``, ``static:0.2``, ``static:ratio=0.1,zeta=0.5``, ``tinyprop``,
    ``tinyprop:s_min=0.1,s_max=0.9,zeta=0.5``, ``tinyprop_skip:tau=0.05``, ``ssprop:0.3`` (constant keep),
    ``tinyprop:per_sample_max=1`` (the AIfES order), ``budget``, ``budget:0.1``, ``budget:budget=0.15,min_kept=2``,
    ``budget:mode=samples``.
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
            parsed = value if key.strip() in ("rounding", "mode") else float(value if has_key else key)
            if key.strip() == "min_kept" and parsed.is_integer():
                parsed = int(parsed)
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
