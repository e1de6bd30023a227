"""Independent NumPy reference of the sparse back-propagation rules (../shared/ALGORITHMS.md sections 1-4).

Nothing here imports tinyprop_tf or TensorFlow: the convolutions (forward and backward, TensorFlow's padding
semantics), the selection rule and the policies are written from the spec, with plain loops and einsum.

Policies are described by plain dicts so that the reference shares no code with the library:

    {"kind": "dense"}
    {"kind": "static", "ratio": r, "zeta": z, "rounding": "floor"}
    {"kind": "tinyprop", "s_min": a, "s_max": b, "zeta": z, "rounding": "floor" | "round"}
    {"kind": "tinyprop_skip", "tau": t, "s_min": a, "s_max": b, "zeta": z, "rounding": ...}
    {"kind": "ssprop", "keep": p}
"""

from __future__ import annotations

import numpy as np

YMAX_INIT = np.float32(1e-30)
f32 = np.float32


# --------------------------------------------------------------------------------------------------------------
# Convolution geometry (TensorFlow semantics)
# --------------------------------------------------------------------------------------------------------------
def conv_geometry(size: int, k: int, stride: int, dilation: int, padding: str):
    """(out, pad_before, pad_after) of one spatial axis."""
    eff = (k - 1) * dilation + 1
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + eff - size, 0)
        return out, total // 2, total - total // 2
    if padding == "valid":
        out = -(-(size - eff + 1) // stride)
        return out, 0, 0
    if padding == "causal":
        padded = size + (k - 1) * dilation
        out = -(-(padded - eff + 1) // stride)
        return out, (k - 1) * dilation, 0
    raise ValueError(padding)


def _geometries(spatial, kernel, strides, dilations, padding):
    return [conv_geometry(s, k, st, d, padding) for s, k, st, d in zip(spatial, kernel, strides, dilations)]


def _offset_slices(offset, geoms, strides, dilations):
    """Slices into the padded input that line up with every output position for one kernel offset."""
    slices = []
    for o, (out, _, _), st, d in zip(offset, geoms, strides, dilations):
        start = o * d
        slices.append(slice(start, start + (out - 1) * st + 1, st))
    return tuple(slices)


def _pad(x, geoms):
    pads = [(0, 0)] + [(b, a) for _, b, a in geoms] + [(0, 0)]
    return np.pad(x, pads)


def conv_forward(x, w, b, strides, padding, dilations, depthwise=False):
    """z = conv(x, w) + b, channels_last, rank 1 or 2. ``w``: [*k, C_in, C_out] or depthwise [*k, C_in, dm]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    kernel = w.shape[:-2]
    spatial = x.shape[1:-1]
    geoms = _geometries(spatial, kernel, strides, dilations, padding)
    xp = _pad(x, geoms)
    batch, c_in = x.shape[0], x.shape[-1]
    out_sp = tuple(g[0] for g in geoms)
    c_out = c_in * w.shape[-1] if depthwise else w.shape[-1]
    z = np.zeros((batch,) + out_sp + (c_out,))
    for offset in np.ndindex(*kernel):
        patch = xp[(slice(None),) + _offset_slices(offset, geoms, strides, dilations)]  # [B, *out, C_in]
        if depthwise:
            contrib = np.einsum("...c,cm->...cm", patch, w[offset])  # [B, *out, C_in, dm]
            z += contrib.reshape(z.shape)  # output channel c * dm + m
        else:
            z += np.einsum("...c,co->...o", patch, w[offset])
    if b is not None:
        z += np.asarray(b, np.float64)
    return z


def conv_backward(x, w, delta, strides, padding, dilations, depthwise=False):
    """(dx, dw) of ``sum(conv(x, w) * delta)``."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    delta = np.asarray(delta, np.float64)
    kernel = w.shape[:-2]
    spatial = x.shape[1:-1]
    geoms = _geometries(spatial, kernel, strides, dilations, padding)
    xp = _pad(x, geoms)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    c_in = x.shape[-1]
    if depthwise:
        dm = w.shape[-1]
        delta = delta.reshape(delta.shape[:-1] + (c_in, dm))
    for offset in np.ndindex(*kernel):
        sl = (slice(None),) + _offset_slices(offset, geoms, strides, dilations)
        patch = xp[sl]
        if depthwise:
            dw[offset] = np.einsum("pc,pcm->cm", patch.reshape(-1, c_in), delta.reshape((-1, c_in, dm)))
            dxp[sl] += np.einsum("...cm,cm->...c", delta, w[offset])
        else:
            dw[offset] = np.einsum("pc,po->co", patch.reshape(-1, c_in), delta.reshape(-1, delta.shape[-1]))
            dxp[sl] += np.einsum("...o,co->...c", delta, w[offset])
    crop = (slice(None),) + tuple(slice(b, b + s) for (_, b, _), s in zip(geoms, spatial)) + (slice(None),)
    return dxp[crop], dw


def dense_forward(x, w, b):
    z = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    return z if b is None else z + np.asarray(b, np.float64)


def dense_backward(x, w, delta):
    x = np.asarray(x, np.float64)
    delta = np.asarray(delta, np.float64)
    dx = delta @ np.asarray(w, np.float64).T
    dw = x.reshape(-1, x.shape[-1]).T @ delta.reshape(-1, delta.shape[-1])
    return dx, dw


# --------------------------------------------------------------------------------------------------------------
# The selection rule
# --------------------------------------------------------------------------------------------------------------
def adaptive_ratio(y, ymax, s_min, s_max, zeta, depth):
    """bpr in float32, in the spec's evaluation order."""
    y = np.asarray(y, np.float32)
    d = f32(s_max) - f32(s_min)
    q = (y / f32(ymax)).astype(np.float32)
    t = (q * d).astype(np.float32)
    t = (f32(s_min) + t).astype(np.float32)
    return (t * f32(zeta**depth)).astype(np.float32)


def ratio_to_k(bpr, m: int, rounding: str = "floor", min_kept: int = 1):
    t = (f32(m) * np.asarray(bpr, np.float32)).astype(np.float32)
    t = np.floor(t) if rounding == "floor" else np.round(t)  # np.round: half to even
    return np.clip(t, min(min_kept, m), m).astype(np.int64)


def running_reference(old, y, reference="max", decay=1.0, per_sample_max=False, share=None, rate=None):
    """(new state, [B] reference per sample) in float32, written from the rule's text (selection.update_reference);
    ``share``, ``rate``: the quantile's."""
    y = np.asarray(y, np.float32)
    old, decay = f32(old), f32(decay)
    floor = f32(YMAX_INIT)
    if reference in ("mean", "quantile"):
        total = f32(0.0)
        for v in y:  # in sample order
            total = f32(total + v)
        mean = f32(total / f32(len(y)))
        if old <= floor:
            state = mean
        elif reference == "mean":
            state = f32(f32(old * decay) + f32(mean * f32(f32(1.0) - decay)))
        else:  # steered by the share of samples reaching the old level
            above = f32(f32(np.count_nonzero(y >= old)) / f32(len(y)))
            state = f32(old * f32(f32(1.0) + f32(f32(rate) * f32(above - f32(share)))))
        state = max(state, floor)
        return state, np.full(len(y), state, np.float32)
    m = f32(old * decay) if decay != 1.0 else old
    seen = []
    for v in y:
        m = max(m, v)
        seen.append(max(m, floor) if decay != 1.0 else m)
    state = max(m, floor) if decay != 1.0 else m
    return f32(state), (np.array(seen, np.float32) if per_sample_max else np.full(len(y), state, np.float32))


def topk_rows(scores, k):
    """Bool mask [B, M]: per row the k(n) largest scores, ties to the lower index."""
    scores = np.asarray(scores)
    mask = np.zeros(scores.shape, bool)
    for n, row in enumerate(scores):
        # A stable sort of the negated scores keeps equal scores in index order.
        order = np.argsort(-row, kind="stable")
        mask[n, order[: int(k[n])]] = True
    return mask


def entry_scores(delta, selection):
    """Per-sample scores [B, M] (float64) and the number M of selectable entries."""
    a = np.abs(np.asarray(delta, np.float64))
    batch = a.shape[0]
    if selection == "element":
        flat = a.reshape(batch, -1)
    elif selection == "channel":
        flat = a.reshape(batch, -1, a.shape[-1]).sum(axis=1)
    else:
        raise ValueError(selection)
    return flat, flat.shape[1]


def _expand_mask(mask, delta_shape, selection):
    batch = delta_shape[0]
    if selection == "element":
        return mask.reshape(delta_shape)
    return mask.reshape((batch,) + (1,) * (len(delta_shape) - 2) + (delta_shape[-1],))


def reference_step(delta, policy, depth, selection="channel", ymax_old=YMAX_INIT):
    """One backward step of a sparse layer.

    Returns a dict: ``masked`` (delta with unkept entries zeroed, float64), ``dbias`` ([C], float64), ``k`` ([B]
    kept entries per sample, for every sample, skipped or not), ``bpr`` ([B]), ``ymax`` (updated, float32),
    ``skipped`` ([B] bool), ``mask`` ([B, M] bool, after skipping), ``M``.
    """
    delta = np.asarray(delta, np.float64)
    batch = delta.shape[0]
    scores, m = entry_scores(delta, selection)
    y = np.abs(delta).reshape(batch, -1).sum(axis=1).astype(np.float32)  # L1 per sample
    kind = policy["kind"]
    samples = kind == "budget" and policy.get("mode") == "samples"  # whole samples: a quantile at depth 0
    if samples and depth == 0:
        ymax, reference = running_reference(ymax_old, y, "quantile", share=policy["budget"], rate=policy["rate"])
    elif kind == "budget":  # the running mean
        ymax, reference = running_reference(ymax_old, y, "mean", policy["decay"])
    else:  # updated before use
        ymax, reference = running_reference(ymax_old, y, "max", policy.get("ymax_decay", 1.0),
                                            policy.get("per_sample_max", False))
    skipped = np.zeros(batch, bool)
    if kind == "dense":
        bpr = np.ones(batch, np.float32)
        k = np.full(batch, m)
        mask = np.ones((batch, m), bool)
    elif kind == "ssprop":
        if selection != "channel":
            raise ValueError("ssProp is channel-wise")
        shared = np.abs(delta).reshape(-1, delta.shape[-1]).mean(axis=0)  # mean over batch and positions
        k_shared = max(int(np.floor(f32(m) * f32(policy["keep"]))), 1)
        k_shared = min(k_shared, m)
        row = topk_rows(shared[None, :], [k_shared])[0]
        bpr = np.full(batch, f32(policy["keep"]))
        k = np.full(batch, k_shared)
        mask = np.broadcast_to(row, (batch, m)).copy()
    else:
        zeta, min_kept = policy.get("zeta", 1.0), 1
        if kind == "static":
            s_min = s_max = policy["ratio"]
        elif kind == "budget":  # ratio = share * Y / mean, dense where the share is 1 (every layer: samples)
            share = 1.0 if samples else policy["layer_ratio"]
            s_min, s_max = (1.0 if share == 1.0 else 0.0), share
            min_kept = policy["min_kept"]
        else:
            s_min, s_max = policy["s_min"], policy["s_max"]
        bpr = adaptive_ratio(y, reference, s_min, s_max, zeta, depth)
        k = ratio_to_k(bpr, m, policy.get("rounding", "floor"), min_kept)
        mask = topk_rows(scores, k)
        # TinyPropSkip's tau, BudgetProp's skip_below: at depth 0, Y / (updated reference) below it skips the sample
        # (samples: below the quantile itself)
        threshold = {"tinyprop_skip": policy.get("tau"),
                     "budget": 1.0 if samples else policy.get("skip_below", 0.0)}.get(kind)
        if threshold and depth == 0:
            skipped = (y / ymax).astype(np.float32) < f32(threshold)
            mask[skipped] = False
    masked = delta * _expand_mask(mask, delta.shape, selection)
    axes = tuple(range(delta.ndim - 1))
    if kind == "ssprop":
        dbias = masked.sum(axis=axes)
    else:
        dbias = (delta * (~skipped).reshape((batch,) + (1,) * (delta.ndim - 1))).sum(axis=axes)
    return {"masked": masked, "dbias": dbias, "k": k, "bpr": bpr, "ymax": ymax, "skipped": skipped,
            "mask": mask, "M": m}


def reference_gradients(layer_kind, x, w, delta_masked, conv_args=None):
    """(dx, dW) from the masked delta for ``layer_kind`` in {"dense", "conv", "depthwise"}."""
    if layer_kind == "dense":
        return dense_backward(x, w, delta_masked)
    strides, padding, dilations = conv_args
    return conv_backward(x, w, delta_masked, strides, padding, dilations, depthwise=layer_kind == "depthwise")


def reference_forward(layer_kind, x, w, b, conv_args=None):
    if layer_kind == "dense":
        return dense_forward(x, w, b)
    strides, padding, dilations = conv_args
    return conv_forward(x, w, b, strides, padding, dilations, depthwise=layer_kind == "depthwise")

