"""Compute accounting: what each training step cost, per layer, dense vs sparse.

Every backward pass of a sparse layer adds to its accumulators (see ``layers.STAT_SUMS``):

- ``fwd_macs``: forward MACs of the affine part (output elements x fan-in, padded taps included);
- ``bwd_macs_dense``: what dense back-propagation costs (dW when the layer trains, dx when its input needs a
  gradient: none for a frozen prefix, no dx for the first trained layer);
- ``bwd_macs_sparse``: what the kept entries actually need (a sample with zero error, or skipped, needs none);
- ``select_ops``: selection overhead, counted as the device kernel's work (read every error element once to
  score, then a size-k min-heap: about ``M * ceil(log2(k + 1))`` comparisons per sample);
- k and bpr (the policy's ratio before rounding) sums, minima and maxima.

On the host the sparse gradient is a masked dense computation, so savings are *counted* here, not timed; the
C++ kernels in ``micro/`` turn the counts into real savings.
"""

from __future__ import annotations

import numpy as np

from tinyprop_tf import layers as layers_lib


def read_stats(model) -> dict[str, dict]:
    """Per sparse layer: the accumulated totals since the last reset, plus derived means.

    Keys per layer: every name in ``STAT_SUMS``, ``k_min``/``k_max``/``bpr_min``/``bpr_max``, ``k_mean``,
    ``bpr_mean``, ``kept_ratio`` (mean k / M), ``entries`` (M), ``depth``, ``policy``, ``frozen``.

    A frozen layer with nothing trainable before it (``trainable.train_last``'s prefix) runs no backward pass, so it
    records nothing itself: its row has ``frozen`` True, no backward MACs, and the forward MACs of every sample the
    trained layers saw (the forward pass runs through it for each).
    """
    stats = {}
    sparse = layers_lib.sparse_layers(model)
    for layer in sparse:
        state = layer.sparsity_state
        sums = dict(zip(layers_lib.STAT_SUMS, np.asarray(state.sums.numpy(), dtype=np.float64).tolist()))
        minima, maxima = state.minima.numpy(), state.maxima.numpy()
        row = dict(sums)
        samples = sums["samples"]
        for i, name in enumerate(layers_lib.STAT_EXTREMES):
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
    for layer in layers_lib.sparse_layers(model):
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
    return entries * layer.backward_macs_per_entry(positions)


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
    for layer in layers_lib.sparse_layers(model):
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
