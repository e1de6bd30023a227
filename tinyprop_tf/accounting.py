"""Compute accounting: what each training step cost, per layer, dense vs sparse.

Every backward pass of a sparse layer adds to its accumulators (``record_step``; their names:
``sparsity_state.STAT_SUMS``):

- ``fwd_macs``: forward MACs of the affine part (output elements x fan-in, padded taps included);
- ``bwd_macs_dense``: what dense back-propagation costs (dW when the layer trains, dx when its input needs a
  gradient: none for a frozen prefix, no dx for the first trained layer);
- ``bwd_macs_sparse``: what the kept entries actually need (a sample with zero error, or skipped, needs none);
- ``select_ops``: selection overhead, counted as the device kernel's work (read every error element once to
  score, then a size-k min-heap: about ``M * ceil(log2(k + 1))`` comparisons per sample);
- k and bpr (the policy's ratio before rounding) sums, minima and maxima.

The formulas are here, once: what a layer's sample costs (``LayerCost``: forward MACs, dense backward MACs, the
MACs of one kept entry), the selection overhead (``heap_selection_ops``) and the step record; the layers call them
and the readers (``read_stats``, ``summary``, ``dense_backward_macs_per_sample``) read them back.

On the host the sparse gradient is a masked dense computation, so savings are *counted* here, not timed; the
C++ kernels in ``micro/`` turn the counts into real savings.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tinyprop_tf.sparsity_state import STAT_EXTREMES, STAT_SUMS, sparse_layers


def backward_macs_per_entry(positions: int, fan_in: int, trains: bool, needs_input_grad: bool) -> int:
    """Backward MACs one kept entry costs per sample: dW if the layer trains, dx if its input needs a gradient."""
    return positions * fan_in * (int(bool(trains)) + int(needs_input_grad))


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One sample of a layer: ``entries`` (M) compete, each covering ``positions`` output elements
    (``out_elements`` in all), each output element costs ``fan_in`` MACs; dW counts when it ``trains``, dx when
    its input needs a gradient."""

    entries: int
    positions: int
    out_elements: int
    fan_in: int
    trains: bool
    needs_input_grad: bool

    @property
    def forward_macs(self) -> int:
        return self.out_elements * self.fan_in

    @property
    def per_entry(self) -> int:
        """Backward MACs of one kept entry."""
        return backward_macs_per_entry(self.positions, self.fan_in, self.trains, self.needs_input_grad)


def heap_selection_ops(num_entries: int, k):
    """Comparisons a size-k min-heap needs to pick k of M entries: about ``M * ceil(log2(k + 1))``.

    This is the device kernel's algorithm (O(M log k)); the host's sort is an implementation detail.
    """
    k = tf.cast(k, tf.float32)
    log_k = tf.math.ceil(tf.math.log(k + 1.0) / math.log(2.0))
    return float(num_entries) * tf.maximum(log_k, 1.0)


def record_step(state, cost: LayerCost, chosen, batch, policy) -> None:
    """Add one backward pass to a layer's accumulators (``state``: its ``SparsityState``): ``chosen`` is the step's
    ``selection.Selected`` (a sample that is not active costs nothing), ``batch`` its size."""
    f64 = tf.float64
    batch_f = tf.cast(batch, f64)
    k_eff = tf.cast(tf.where(chosen.active, chosen.k, 0), f64)
    per_entry = float(cost.per_entry)
    dense_bwd = batch_f * float(cost.entries) * per_entry
    if not policy.selects:
        sparse_bwd, select_ops = dense_bwd, tf.constant(0.0, f64)
    else:
        sparse_bwd = tf.reduce_sum(k_eff) * per_entry
        # Scoring reads every delta element once; then a size-k heap over the M scores.
        heap = tf.cast(heap_selection_ops(cost.entries, chosen.k), f64)
        if policy.batch_shared:
            select_ops = batch_f * cost.out_elements + heap[0]
        else:
            select_ops = tf.reduce_sum(tf.cast(chosen.active, f64) * (cost.out_elements + heap))
    bpr64 = tf.cast(chosen.bpr, f64)
    state.sums.assign_add(
        tf.stack([
            tf.constant(1.0, f64),
            batch_f,
            batch_f - tf.reduce_sum(tf.cast(chosen.active, f64)),
            tf.reduce_sum(k_eff),
            tf.reduce_sum(bpr64),
            batch_f * float(cost.forward_macs),
            dense_bwd,
            sparse_bwd,
            select_ops,
        ])
    )
    state.minima.assign(tf.minimum(state.minima.value, tf.stack([tf.reduce_min(k_eff), tf.reduce_min(bpr64)])))
    state.maxima.assign(tf.maximum(state.maxima.value, tf.stack([tf.reduce_max(k_eff), tf.reduce_max(bpr64)])))


def read_stats(model) -> dict[str, dict]:
    """Per sparse layer: the accumulated totals since the last reset, plus derived means.

    Keys per layer: every name in ``STAT_SUMS``, ``k_min``/``k_max``/``bpr_min``/``bpr_max``, ``k_mean``,
    ``bpr_mean``, ``kept_ratio`` (mean k / M), ``entries`` (M), ``depth``, ``policy``, ``frozen``.

    A frozen layer with nothing trainable before it (``trainable.train_last``'s prefix) runs no backward pass, so it
    records nothing itself: its row has ``frozen`` True, no backward MACs, and the forward MACs of every sample the
    trained layers saw (the forward pass runs through it for each).
    """
    stats = {}
    sparse = sparse_layers(model)
    for layer in sparse:
        state = layer.sparsity_state
        sums = dict(zip(STAT_SUMS, np.asarray(state.sums.numpy(), dtype=np.float64).tolist()))
        minima, maxima = state.minima.numpy(), state.maxima.numpy()
        row = dict(sums)
        samples = sums["samples"]
        for i, name in enumerate(STAT_EXTREMES):
            row[f"{name}_min"] = float(minima[i]) if samples else float("nan")
            row[f"{name}_max"] = float(maxima[i]) if samples else float("nan")
        entries = selectable_entries(layer)
        row["k_mean"] = sums["k_sum"] / samples if samples else float("nan")
        row["bpr_mean"] = sums["bpr_sum"] / samples if samples else float("nan")
        row["kept_ratio"] = row["k_mean"] / entries if samples and entries else float("nan")
        row["entries"] = entries
        row["depth"] = layer.depth
        row["policy"] = repr(layer.policy)
        row["running_max"] = float(state.ymax.numpy())
        row["frozen"] = not layer.runs_backward()
        stats[layer.name] = row
    trained_samples = max((stats[layer.name]["samples"] for layer in sparse if layer.runs_backward()), default=0.0)
    for layer in sparse:
        if stats[layer.name]["frozen"]:
            stats[layer.name]["samples"] = trained_samples
            stats[layer.name]["fwd_macs"] = trained_samples * float(layer.forward_macs_per_sample() or 0)
    return stats


def totals(stats: dict[str, dict]) -> dict[str, float]:
    """Model-wide sums over layers, and the ratio of sparse to dense backward MACs."""
    keys = ("fwd_macs", "bwd_macs_dense", "bwd_macs_sparse", "select_ops")
    out = {key: float(sum(row[key] for row in stats.values())) for key in keys}
    out["bwd_macs_ratio"] = out["bwd_macs_sparse"] / out["bwd_macs_dense"] if out["bwd_macs_dense"] else float("nan")
    return out


def reset_stats(model) -> None:
    """Zero every sparse layer's step accumulators (the running maximum is left alone)."""
    for layer in sparse_layers(model):
        layer.sparsity_state.reset_stats()


def selectable_entries(layer) -> int | None:
    """M: how many entries compete per sample (units/channels, or all output elements for ``element``)."""
    shape = getattr(layer, "_tinyprop_output_shape", None)
    if shape is None:
        return None
    return int(np.prod(shape[1:])) if layer.selection == "element" else int(shape[-1])


def dense_backward_macs_per_sample(layer) -> int | None:
    """What one sample's dense backward pass costs in ``layer`` (dW if it trains, dx if its input needs a gradient;
    0 when its backward never runs); None before the layer is built on a shape."""
    fwd, entries = layer.forward_macs_per_sample(), selectable_entries(layer)
    if fwd is None or not entries:
        return None
    positions = fwd // layer._fan_in() // entries
    return entries * backward_macs_per_entry(positions, layer._fan_in(), layer.trainable, layer.needs_input_grad)


def _format_count(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def summary(model, print_fn=print) -> str:
    """Print (and return) a per-layer table: policy, depth, entries, MACs per sample, and recorded k/bpr."""
    stats = read_stats(model)
    header = (
        f"{'layer':<24} {'type':<22} {'p':>2} {'M':>6} {'fwd/smp':>9} {'bwd/smp':>9} "
        f"{'k mean':>7} {'kept':>6} {'bwd sparse/dense':>17}  policy"
    )
    lines = [header, "-" * len(header)]
    for layer in sparse_layers(model):
        row = stats[layer.name]
        fwd = layer.forward_macs_per_sample()
        bwd = dense_backward_macs_per_sample(layer)
        ratio = row["bwd_macs_sparse"] / row["bwd_macs_dense"] if row["bwd_macs_dense"] else float("nan")
        lines.append(
            f"{layer.name:<24} {type(layer).__name__:<22} {layer.depth:>2} {row['entries'] or '-':>6} "
            f"{_format_count(fwd):>9} {_format_count(bwd):>9} "
            f"{_format_count(row['k_mean']) if row['samples'] else '-':>7} "
            f"{row['kept_ratio']:>6.3f} {ratio:>17.3f}  {'frozen (forward only)' if row['frozen'] else row['policy']}"
        )
    total = totals(stats)
    lines.append("-" * len(header))
    lines.append(
        f"backward MACs recorded: sparse {_format_count(total['bwd_macs_sparse'])} / dense "
        f"{_format_count(total['bwd_macs_dense'])} = {total['bwd_macs_ratio']:.3f}; "
        f"selection ops {_format_count(total['select_ops'])}"
    )
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text
