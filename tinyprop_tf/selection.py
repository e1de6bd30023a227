"""The selection rule, defined once.

Every sparse layer (``layers``), the exported step (``converters/step.py``) and the TFLM select operators call
these functions or mirror them; nothing else in the project re-implements the rule. A policy states a layer's
parameters as a ``SelectionRule`` (``BackpropPolicy.rule``). The C++ kernels in ``micro/`` implement the same
arithmetic, in the same float32 evaluation order, so host, exported graph and device agree on ``k`` and on the
kept set (bit for bit, given the same Y).

The rule, per layer and step: ``scores_and_error`` gives each sample's entry scores and local error ``Y`` (L1 of
its error signal); ``update_reference`` updates the running reference ``R`` *before* it is used (TinyProp's
running maximum, or BudgetProp's running mean or running quantile); a sample whose error is all zero costs nothing
(``active_samples``), and so does one the rule skips (``skip_below``: ``Y / R`` below it, at the layer nearest
the output). Then per sample ``n`` of a layer with ``M`` selectable entries (units, channels or elements):

1. ratio: ``bpr = (s_min + Y / R * (s_max - s_min)) * zeta**p``, evaluated as
   ``d = s_max - s_min; q = Y / Ymax; t = q * d; t = s_min + t; bpr = t * zeta_pow`` in float32.
   Dividing first matters across runtimes: the exported step computes Y with other summation orders (its
   matmuls and reductions round differently in the last bit), and the sample that sets the running maximum
   must still get exactly ``q = 1`` there, ``t = s_max``, so ``M * bpr`` lands on the same side of an integer
   (with ``(Y * d) / Ymax`` it came out one ulp either side of ``d``, and e.g. ``s_max = 1`` kept M - 1 units
   in one runtime and M in the other). Other samples still depend on Y's last bit, but only when
   ``M * bpr`` falls within an ulp of an integer by chance;
2. ``k = clamp(floor(M * bpr), min(min_kept, M), M)`` (``rounding="round"`` uses round-half-to-even instead
   of floor, as ``tf.round`` and C's ``nearbyintf`` do; TinyProp's ``min_kept`` is 1);
3. keep the ``k`` entries with the largest score; among equal scores the lower index wins.

A layer's step (``select_for_policy``) is ``select`` for the policies with a rule; dense back-propagation
(``keep_all``) and ssProp (``select_shared``: one kept set for the batch) have none. ``keep_entries``,
``keep_samples``, ``bias_gradient``, ``kept_error`` and ``step_bias_gradient`` apply a step's selection to the
error signal, in the layers and in the exported step alike.

Step 3 is expressed as "everything strictly above the k-th largest value, plus the first few (by index)
of the entries equal to it". That needs only the k-th largest value, so the same mask code serves both the
host (k-th value from a sort, fast) and the TFLM-exportable graph (k-th value from pairwise counting, which
lowers to builtins only: TFLM has no TOPK_V2/SORT).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tinyprop_tf._validate import ROUNDING_MODES

# Running-max initial value: tiny but a normal float32, so that an all-zero first error gives 0 / tiny = 0
# instead of 0 / 0.
YMAX_INIT = 1e-30


REFERENCES = ("max", "mean", "quantile")


@dataclasses.dataclass(frozen=True)
class SelectionRule:
    """One layer's selection parameters, as its policy sets them (``BackpropPolicy.rule``).

    The same numbers drive the Keras layer, the exported graph, the TFLM operators' parameter tensor
    (``converters/device_ops.SELECT_PARAMS``) and the C++ ``RatioParams``:

    - ``s_min``, ``s_max``, ``zeta_pow``: the ratio ``(s_min + Y / R * (s_max - s_min)) * zeta_pow``;
    - ``rounding``: how ``M * bpr`` becomes k (``"floor"`` or ``"round"``);
    - ``reference``: what ``R``, the layer's running reference, is (``update_reference``): ``"max"``, the running
      maximum of Y (TinyProp), ``"mean"``, a running mean of Y (BudgetProp: the ratio is then proportional to
      a sample's error relative to recent errors, and k's clamp at M caps it), or ``"quantile"``, a level that a
      share ``quantile_share`` of the samples reach (BudgetProp's whole-sample mode: with ``skip_below = 1`` that
      share back-propagates);
    - ``decay``: how fast R forgets, per step (1 = TinyProp's all-time maximum);
    - ``per_sample_max``: sample n of a batch sees the maximum over samples 1..n only (the TinyProp authors'
      AIfES C code, which trains sample by sample), instead of the whole batch's (their PyTorch code);
    - ``min_kept``: the floor on k (k >= min(min_kept, M); TinyProp's is 1);
    - ``skip_below``: a sample with ``Y / R < skip_below`` (its own reference, as its ratio divides by) gets no
      backward pass at all: inactive, its error zeroed here, bias included, so no earlier layer spends anything on
      it (0: none; the policies set it at the sparse layer nearest the output only);
    - ``quantile_share``, ``quantile_rate`` (``"quantile"`` only): the share of samples with ``Y >= R`` that R
      steers to, and how far one step moves it.
    """

    s_min: float
    s_max: float
    zeta_pow: float = 1.0
    rounding: str = "floor"
    reference: str = "max"
    decay: float = 1.0
    per_sample_max: bool = False
    min_kept: int = 1
    skip_below: float = 0.0
    quantile_share: float = 0.0
    quantile_rate: float = 0.0

    def __post_init__(self):
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if (self.reference == "quantile") != (0.0 < self.quantile_share < 1.0 and 0.0 < self.quantile_rate <= 1.0):
            raise ValueError("reference='quantile' needs 0 < quantile_share < 1 and 0 < quantile_rate <= 1 (and "
                             "no other reference takes them)")
        if self.per_sample_max and self.reference != "max":
            raise ValueError("per_sample_max needs reference='max'")

    def ratio(self, y, reference):
        return adaptive_ratio(y, reference, self.s_min, self.s_max, self.zeta_pow)

    def k(self, bpr, num_entries: int):
        return ratio_to_k(bpr, num_entries, self.rounding, self.min_kept)


def update_reference(state, y, rule: SelectionRule):
    """(new state, the reference each sample's ratio divides by: a scalar, or [B] with ``per_sample_max``).

    Updated before it is used in this step, in float32:
    - ``"max"``: ``R = max(decay * R, max_n Y(n))`` (``decay * R`` skipped when the decay is 1: TinyProp's rule,
      bit for bit); with ``per_sample_max`` sample n divides by ``max(decay * R, Y(1..n))`` and the state is the
      last of these;
    - ``"mean"``: ``R = mean_n Y(n)`` on the first step (R still at ``YMAX_INIT``), then
      ``R = decay * R + (1 - decay) * mean_n Y(n)``;
    - ``"quantile"``: the batch mean on the first step, then ``R = R * (1 + rate * (above - share))``, ``above`` the
      share of this batch's samples with ``Y(n) >= R`` (the previous R), evaluated as ``a = count / B; t = a -
      share; t = rate * t; t = 1 + t; R = R * t``: R rises while more than ``share`` of the samples reach it and
      falls while fewer do, so it settles where ``share`` of them do (a stochastic quantile estimate that works
      sample by sample too, ``B = 1``).
    A decaying reference is floored at ``YMAX_INIT``: a long run of zero errors never makes ``Y / R`` a 0 / 0.
    The mean's sum may round differently in TensorFlow's reduction than in the C++ loop (in sample order): like Y
    itself, R can then differ in its last bit between runtimes, which moves a k only where ``M * bpr`` falls within
    an ulp of an integer.
    """
    state = tf.convert_to_tensor(state, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    decay = tf.constant(rule.decay, tf.float32)
    floor = tf.constant(YMAX_INIT, tf.float32)
    if rule.reference in ("mean", "quantile"):
        batch = tf.cast(tf.size(y), tf.float32)
        batch_mean = tf.reduce_sum(y) / batch
        if rule.reference == "mean":
            keep = tf.constant(1.0, tf.float32) - decay
            later = state * decay + batch_mean * keep
        else:
            above = tf.reduce_sum(tf.cast(y >= state, tf.float32)) / batch
            step = tf.constant(rule.quantile_rate, tf.float32) * (above - tf.constant(rule.quantile_share, tf.float32))
            later = state * (tf.constant(1.0, tf.float32) + step)
        # first step (R still at its initial value): the batch mean itself. A blend by 0 / 1 instead of a select
        # (TFLM has no SELECT for a scalar condition): 1 * a + 0 * b is a exactly, for finite a and b.
        first = tf.cast(state <= floor, tf.float32)
        state = first * batch_mean + (tf.constant(1.0, tf.float32) - first) * later
        state = tf.maximum(state, floor)
        return state, state
    base = state * decay if rule.decay != 1.0 else state
    if rule.per_sample_max:
        index = tf.range(tf.shape(y)[0])
        seen = index[None, :] <= index[:, None]  # [n, j]: sample j comes no later than sample n
        per_sample = tf.maximum(base, tf.reduce_max(y[None, :] * tf.cast(seen, tf.float32), axis=1))  # y >= 0
        if rule.decay != 1.0:
            per_sample = tf.maximum(per_sample, floor)
        return per_sample[-1], per_sample
    state = tf.maximum(base, tf.reduce_max(y))
    if rule.decay != 1.0:
        state = tf.maximum(state, floor)
    return state, state


def update_running_max(ymax, y):
    """TinyProp's running maximum, updated with this step's errors: ``max(ymax, max(y))``."""
    return update_reference(ymax, y, SelectionRule(1.0, 1.0))[0]


def adaptive_ratio(y, ymax, s_min: float, s_max: float, zeta_pow: float):
    """TinyProp's back-propagation ratio per sample (float32, fixed evaluation order).

    Args:
      y: [B] local error per sample (L1 norm of the layer's error signal).
      ymax: scalar running maximum, already updated with this step's ``max(y)``.
      s_min, s_max: ratio range; zeta_pow: ``zeta ** depth`` (computed once, as float32, by the caller).
    """
    y = tf.convert_to_tensor(y, tf.float32)
    d = tf.constant(s_max, tf.float32) - tf.constant(s_min, tf.float32)
    q = y / ymax  # exactly 1 for the sample that set the running max, whatever rounding produced its y
    t = q * d
    t = tf.constant(s_min, tf.float32) + t
    return t * tf.constant(zeta_pow, tf.float32)


def ratio_to_k(bpr, num_entries: int, rounding: str = "floor", min_kept: int = 1):
    """Number of entries to keep per sample: ``clamp(floor(M * bpr), min(min_kept, M), M)`` as int32 (see module
    doc)."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    t = tf.constant(float(num_entries), tf.float32) * tf.convert_to_tensor(bpr, tf.float32)
    t = tf.floor(t) if rounding == "floor" else tf.round(t)
    t = tf.clip_by_value(t, float(min(max(int(min_kept), 1), num_entries)), float(num_entries))
    return tf.cast(t, tf.int32)


def scores_and_error(delta, num_entries: int, per_channel: bool):
    """(flat |delta| [B, positions, M], scores [B, M], local error y [B]) of a layer's error signal.

    ``per_channel``: one entry per output unit/channel, its score the sum of |delta| over the other positions
    (a Dense layer's [B, N] delta is the one-position case); else every element is an entry.
    """
    batch = tf.shape(delta)[0]
    flat = tf.reshape(tf.abs(delta), [batch, -1, num_entries] if per_channel else [batch, 1, -1])
    scores = tf.reduce_sum(flat, axis=1)
    return flat, scores, tf.reduce_sum(scores, axis=1)


@dataclasses.dataclass(frozen=True)
class Selected:
    """One step's selection for a layer: the updated running reference, ratio and k per sample, kept mask [B, M]
    (None: everything; [1, M]: one set for the whole batch), ``active`` [B] (a sample whose error is all zero, or
    that the policy skips, needs no backward work: it costs nothing) and ``skipped`` [B] (None: the policy skips
    none)."""

    ymax: object
    bpr: object
    k: object
    kept: object
    active: object
    skipped: object = None


def select(scores, y, reference, rule: SelectionRule, kth_largest=None) -> Selected:
    """The whole per-sample rule for one layer and step: the running reference first, then ratio, k, the top-k
    mask. ``reference``: the layer's state before this step; ``Selected.ymax`` is its new value."""
    ymax, per_sample = update_reference(reference, y, rule)
    bpr = rule.ratio(y, per_sample)
    k = rule.k(bpr, int(scores.shape[-1]))
    kept = topk_mask(scores, k, kth_largest=kth_largest or kth_largest_sorted)
    active = active_samples(y)
    if not rule.skip_below:
        return Selected(ymax, bpr, k, kept, active)
    skipped = skipped_samples(y, per_sample, rule)
    return Selected(ymax, bpr, k, kept, active & tf.logical_not(skipped), skipped)


def skipped_samples(y, reference, rule: SelectionRule):
    """Bool [B]: the samples ``rule`` skips, ``Y / R < skip_below`` in float32 (``R``: the reference each sample's
    ratio divides by, ``update_reference``'s second value); none when ``skip_below`` is 0."""
    y = tf.convert_to_tensor(y, tf.float32)
    return (y / reference) < tf.constant(rule.skip_below, tf.float32) if rule.skip_below else tf.zeros_like(y, tf.bool)


def select_for_policy(policy, depth: int, flat, scores, y, reference, keep, num_entries: int) -> Selected:
    """A sparse layer's step under ``policy`` (``scores_and_error``'s ``flat``, ``scores`` and ``y``; ``reference``
    and ``keep``, the layer's state before the step): ``select`` with the policy's rule; without one, everything
    (``keep_all``) or ssProp's one set for the batch (``select_shared``)."""
    rule = policy.rule(depth)
    if rule is not None:
        return select(scores, y, reference, rule)
    ymax = update_running_max(reference, y)  # updated before it is used in this step
    bpr = policy.sample_ratio(y, ymax, depth, keep)
    return (select_shared(flat, y, ymax, bpr, num_entries, policy.rounding) if policy.selects
            else keep_all(y, ymax, bpr, num_entries))


def keep_all(y, ymax, bpr, num_entries: int) -> Selected:
    """Dense back-propagation: every entry of every sample (all of them active, zero error or not)."""
    batch = tf.shape(y)[0]
    return Selected(ymax, bpr, tf.fill([batch], num_entries), None, tf.ones([batch], tf.bool))


def select_shared(flat, y, ymax, bpr, num_entries: int, rounding: str) -> Selected:
    """ssProp: one kept set for the whole batch, the top ``k`` of the mean |delta| over batch and positions, ``k``
    from the (batch-shared) ratio of the first sample."""
    shared_scores = tf.reduce_mean(flat, axis=[0, 1])[None, :]
    k_shared = ratio_to_k(bpr[:1], num_entries, rounding)
    kept = topk_mask(shared_scores, k_shared)
    return Selected(ymax, bpr, tf.fill([tf.shape(y)[0]], k_shared[0]), kept, active_samples(y))


def active_samples(y):
    """[B] bool: the samples a sparse layer back-propagates (an all-zero error needs no work and costs nothing)."""
    return y > 0


def kth_largest_sorted(scores, k):
    """k-th largest score per row via a full sort (host path). scores [B, M], k [B] int32 -> [B]."""
    values = tf.math.top_k(scores, k=scores.shape[-1], sorted=True).values
    return tf.gather(values, k - 1, axis=1, batch_dims=1)


def kth_largest_pairwise(scores, k):
    """k-th largest score per row by pairwise counting: builtin ops only (GREATER, CAST, SUM, LESS, SELECT_V2).

    An entry is among the top-k-or-tied iff fewer than k entries are strictly greater than it; the k-th
    largest value is the smallest such entry. O(M^2) per row (memory too: [B, M, M]), fine for the layer
    widths of MCU models. Counts are float32 because TFLM's SUM has no int32 kernel (exact below 2**24).
    """
    greater_count = tf.reduce_sum(
        tf.cast(scores[:, None, :] > scores[:, :, None], tf.float32), axis=2
    )  # [B, M]: how many entries beat entry i
    candidate = greater_count < tf.cast(k, tf.float32)[:, None]
    big = tf.fill(tf.shape(scores), tf.constant(float("inf"), scores.dtype))
    return tf.reduce_min(tf.where(candidate, scores, big), axis=1)


def topk_mask(scores, k, kth_largest=kth_largest_sorted):
    """Boolean mask [B, M] keeping, per row, the k largest scores, ties to the lower index.

    Args:
      scores: [B, M] float32, finite.
      k: [B] int32 in [1, M].
      kth_largest: how to find the k-th largest value (``kth_largest_sorted`` or ``kth_largest_pairwise``);
        both give the same mask.
    """
    kth = kth_largest(scores, k)[:, None]
    above = scores > kth
    tied = scores == kth
    # Counts in float32 (exact below 2**24): TFLM's SUM and CUMSUM have no int32 kernels.
    room_for_ties = tf.cast(k, tf.float32) - tf.reduce_sum(tf.cast(above, tf.float32), axis=1)
    # Inclusive running count of tied entries: the first `room_for_ties` of them (lowest indices) are kept.
    tie_rank = tf.cumsum(tf.cast(tied, tf.float32), axis=1)
    return above | (tied & (tie_rank <= room_for_ties[:, None]))


def keep_entries(delta, gate, per_channel: bool, batch):
    """``delta`` with each entry scaled by ``gate`` [batch, M] (1 keeps it, 0 drops it): a channel's gate covers all
    its positions (``per_channel``), else each element has its own. ``batch``: the gate's first dimension."""
    if per_channel:
        shape = [batch] + [1] * (delta.shape.rank - 2) + [delta.shape[-1]]
    else:
        shape = [batch, *delta.shape[1:]]
    return delta * tf.reshape(gate, shape)


def keep_samples(delta, sample_gate):
    """``delta`` with each sample scaled by ``sample_gate`` [B] (1 keeps it, 0 drops it)."""
    return delta * tf.reshape(sample_gate, [-1] + [1] * (delta.shape.rank - 1))


def bias_gradient(error):
    """The bias gradient of an affine layer whose output error is ``error``: its sum over all but the last axis."""
    return tf.reduce_sum(error, axis=list(range(error.shape.rank - 1)))


def kept_error(delta, chosen: Selected, per_channel: bool, batch=None):
    """The error a layer's affine part back-propagates under ``chosen``: the kept entries of the samples the rule
    does not skip (all of ``delta`` when everything is kept). ``batch``: the static batch size where there is one
    (the exported step's), else the gate's dynamic first dimension."""
    sample_gate = None if chosen.skipped is None else tf.cast(chosen.active, delta.dtype)
    if chosen.kept is None:
        return delta if sample_gate is None else keep_samples(delta, sample_gate)
    gate = tf.cast(chosen.kept, delta.dtype)
    if sample_gate is not None:
        gate = gate * sample_gate[:, None]
    return keep_entries(delta, gate, per_channel, tf.shape(gate)[0] if batch is None else batch)


def step_bias_gradient(delta, kept, chosen: Selected, sparse_bias: bool):
    """A step's bias gradient: of the kept error ``kept`` with ``sparse_bias`` (ssProp); otherwise of the whole
    error (the TinyProp authors' choice) of every sample the rule does not skip."""
    if sparse_bias:
        return bias_gradient(kept)
    if chosen.skipped is not None:
        return bias_gradient(keep_samples(delta, tf.cast(chosen.active, delta.dtype)))
    return bias_gradient(delta)
