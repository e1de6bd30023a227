"""The sparse layers' gradients against an independent NumPy reference of the rules (ALGORITHMS.md sections 1-4).

The expected values come from ``_numpy_reference`` (plain NumPy: its own convolutions with TensorFlow's padding
semantics, its own selection rule); TensorFlow only runs the layers under test, and, in one test, the plain
Keras layers whose exact gradient ratio 1.0 must reproduce.

The error signal is injected exactly: the layers run without activation and the loss is ``sum(z * G)``, so
delta = dL/dz = G. G is dyadic (multiples of 1/8 times powers of two) so that every |delta| sum the rule
needs (channel scores, Y(n), the running maximum) is exact in float32 whatever the summation order: k and the
kept set are then determined exactly, and repeated magnitudes exercise the tie rule everywhere.
"""

from __future__ import annotations

import itertools
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import _numpy_reference as ref
import tinyprop_tf as tp
from tinyprop_tf import selection as selection_lib
from tinyprop_tf.sparsity_state import STAT_EXTREMES, STAT_SUMS

RTOL = ATOL = 1e-5

# --------------------------------------------------------------------------------------------------------------
# Layer specifications: (id, sparse class, plain Keras class, constructor kwargs, per-sample input shape)
# --------------------------------------------------------------------------------------------------------------
LAYER_SPECS = [
    # Dense
    ("dense_6to10", "dense", dict(units=10), (6,)),
    ("dense_4to7_nobias", "dense", dict(units=7, use_bias=False), (4,)),
    ("dense_seq3x5to8", "dense", dict(units=8), (3, 5)),  # rank-3 input: channel score sums over the 3 steps
    # Conv2D
    ("c2d_k3_s1_same", "conv2d", dict(filters=5, kernel_size=3, padding="same"), (6, 7, 3)),
    ("c2d_k3_s2_same", "conv2d", dict(filters=4, kernel_size=3, strides=2, padding="same"), (7, 6, 3)),
    ("c2d_k4x2_s2_same", "conv2d", dict(filters=3, kernel_size=(4, 2), strides=2, padding="same"), (8, 7, 2)),
    ("c2d_k2x3_s1_valid_nobias", "conv2d",
     dict(filters=5, kernel_size=(2, 3), padding="valid", use_bias=False), (6, 7, 2)),
    ("c2d_k3_s2_valid", "conv2d", dict(filters=4, kernel_size=3, strides=2, padding="valid"), (8, 7, 2)),
    ("c2d_k3_d2_same", "conv2d", dict(filters=4, kernel_size=3, dilation_rate=2, padding="same"), (7, 7, 2)),
    ("c2d_k2_d2_valid", "conv2d", dict(filters=5, kernel_size=2, dilation_rate=2, padding="valid"), (7, 6, 3)),
    # DepthwiseConv2D
    ("dw_k3_s1_same_dm1", "depthwise", dict(kernel_size=3, padding="same"), (6, 6, 3)),
    ("dw_k3_s2_same_dm2", "depthwise", dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2), (7, 6, 2)),
    ("dw_k2_s1_valid_dm2_nobias", "depthwise",
     dict(kernel_size=2, padding="valid", depth_multiplier=2, use_bias=False), (5, 6, 3)),
    ("dw_k3_s2_valid_dm1", "depthwise", dict(kernel_size=3, strides=2, padding="valid"), (8, 7, 3)),
    ("dw_k3_d2_same_dm2", "depthwise",
     dict(kernel_size=3, dilation_rate=2, padding="same", depth_multiplier=2), (7, 7, 2)),
    ("dw_k2_d2_valid_dm1", "depthwise", dict(kernel_size=2, dilation_rate=2, padding="valid"), (6, 7, 2)),
    # Conv1D
    ("c1d_k3_s1_same", "conv1d", dict(filters=4, kernel_size=3, padding="same"), (9, 3)),
    ("c1d_k4_s2_same", "conv1d", dict(filters=5, kernel_size=4, strides=2, padding="same"), (10, 3)),
    ("c1d_k3_s1_valid_nobias", "conv1d", dict(filters=4, kernel_size=3, padding="valid", use_bias=False), (9, 2)),
    ("c1d_k2_s2_valid", "conv1d", dict(filters=6, kernel_size=2, strides=2, padding="valid"), (9, 3)),
    ("c1d_k3_d2_valid", "conv1d", dict(filters=4, kernel_size=3, dilation_rate=2, padding="valid"), (11, 2)),
    ("c1d_k3_s1_causal", "conv1d", dict(filters=4, kernel_size=3, padding="causal"), (8, 3)),
    ("c1d_k3_d2_causal", "conv1d", dict(filters=5, kernel_size=3, dilation_rate=2, padding="causal"), (9, 2)),
    ("c1d_k3_s2_causal", "conv1d", dict(filters=4, kernel_size=3, strides=2, padding="causal"), (9, 3)),
]
SPECS_BY_ID = {spec[0]: spec for spec in LAYER_SPECS}

SPARSE_CLASS = {
    "dense": tp.SparseDense, "conv2d": tp.SparseConv2D, "depthwise": tp.SparseDepthwiseConv2D,
    "conv1d": tp.SparseConv1D,
}
PLAIN_CLASS = {
    "dense": keras.layers.Dense, "conv2d": keras.layers.Conv2D, "depthwise": keras.layers.DepthwiseConv2D,
    "conv1d": keras.layers.Conv1D,
}


def _tuple(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


def ref_kind(kind):
    return {"dense": "dense", "conv2d": "conv", "conv1d": "conv", "depthwise": "depthwise"}[kind]


def conv_args(kind, kwargs):
    """(strides, padding, dilations) for the reference, from the Keras constructor kwargs."""
    if kind == "dense":
        return None
    rank = 1 if kind == "conv1d" else 2
    return (
        _tuple(kwargs.get("strides", 1), rank),
        kwargs.get("padding", "valid"),
        _tuple(kwargs.get("dilation_rate", 1), rank),
    )


# --------------------------------------------------------------------------------------------------------------
# Policies: (id, library policy factory, reference description, depth/batch runs)
# --------------------------------------------------------------------------------------------------------------
RUNS = [(0, 3), (1, 5), (3, 1)]  # (depth p, batch size); zeta < 1 everywhere below
POLICIES = {
    "dense": (tp.DenseBackprop, {"kind": "dense"}, RUNS),
    "static": (lambda: tp.StaticTopK(0.4, zeta=0.7),
               {"kind": "static", "ratio": 0.4, "zeta": 0.7, "rounding": "floor"}, RUNS),
    "tinyprop_floor": (lambda: tp.TinyProp(0.1, 0.9, 0.6, rounding="floor"),
                       {"kind": "tinyprop", "s_min": 0.1, "s_max": 0.9, "zeta": 0.6, "rounding": "floor"}, RUNS),
    "tinyprop_round": (lambda: tp.TinyProp(0.15, 0.85, 0.7, rounding="round"),
                       {"kind": "tinyprop", "s_min": 0.15, "s_max": 0.85, "zeta": 0.7, "rounding": "round"}, RUNS),
    "skip_depth0": (lambda: tp.TinyPropSkip(0.3, 0.1, 0.9, 0.6),
                    {"kind": "tinyprop_skip", "tau": 0.3, "s_min": 0.1, "s_max": 0.9, "zeta": 0.6,
                     "rounding": "floor"}, [(0, 5), (0, 3), (0, 1)]),
    "skip_depth2": (lambda: tp.TinyPropSkip(0.3, 0.1, 0.9, 0.6),
                    {"kind": "tinyprop_skip", "tau": 0.3, "s_min": 0.1, "s_max": 0.9, "zeta": 0.6,
                     "rounding": "floor"}, [(2, 5), (2, 3), (2, 1)]),
    "ssprop": (lambda: tp.SsProp(0.5), {"kind": "ssprop", "keep": 0.5}, RUNS),
    # a layer's share as sparsify would set it; a fast-forgetting max so that step 2 sees the decay
    "budget": (lambda: tp.BudgetProp(0.3, decay=0.25, min_kept=2, layer_ratio=0.45),
               {"kind": "budget", "layer_ratio": 0.45, "decay": 0.25, "min_kept": 2, "rounding": "floor"}, RUNS),
    # BudgetProp skipping the samples below a multiple of the running mean (depth 0 only), sparse and dense shares
    "budget_skip": (lambda: tp.BudgetProp(0.3, decay=0.25, min_kept=2, layer_ratio=0.45, skip_below=0.8),
                    {"kind": "budget", "layer_ratio": 0.45, "decay": 0.25, "min_kept": 2, "rounding": "floor",
                     "skip_below": 0.8}, [(0, 5), (0, 3), (2, 5)]),
    "budget_dense_skip": (lambda: tp.BudgetProp(1.0, skip_below=1.0, layer_ratio=1.0),
                          {"kind": "budget", "layer_ratio": 1.0, "decay": 0.9, "min_kept": 1, "rounding": "floor",
                           "skip_below": 1.0}, [(0, 5), (0, 3)]),
    # BudgetProp's whole samples: the running quantile at depth 0 decides which samples back-propagate densely;
    # deeper layers keep everything of what reaches them
    "budget_samples": (lambda: tp.BudgetProp(0.4, mode="samples"),
                       {"kind": "budget", "mode": "samples", "budget": 0.4, "decay": 0.9, "min_kept": 1,
                        "rate": tp.BudgetProp.SAMPLES_THRESHOLD_RATE, "rounding": "floor"}, [(0, 5), (0, 3), (2, 5)]),
    # the AIfES order of the running max, and a max that forgets
    "tinyprop_per_sample": (lambda: tp.TinyProp(0.1, 0.9, 0.6, per_sample_max=True, ymax_decay=0.5),
                            {"kind": "tinyprop", "s_min": 0.1, "s_max": 0.9, "zeta": 0.6, "rounding": "floor",
                             "per_sample_max": True, "ymax_decay": 0.5}, RUNS),
}
CHANNEL_ONLY = {"dense", "ssprop"}  # DenseBackprop selects nothing; ssProp is channel-wise by definition

# Per-sample scales of G (powers of two keep G dyadic): samples differ in Y, so k differs per sample and
# TinyPropSkip(tau=0.3) skips some. The second step's scales raise the running max in some runs (4 with
# batch 5), and leave it in others.
SCALES_STEP1 = [1.0, 0.25, 2.0, 0.125, 0.5]
SCALES_STEP2 = [0.5, 1.0, 0.125, 4.0, 0.25]


def dyadic_error(rng, shape, scales, nonzero=False):
    if nonzero:
        g = rng.integers(1, 9, size=shape) * rng.choice([-1, 1], size=shape)
    else:
        g = rng.integers(-16, 17, size=shape)
    g = g.astype(np.float64) / 8.0
    g *= np.asarray(scales[: shape[0]]).reshape((-1,) + (1,) * (len(shape) - 1))
    return g.astype(np.float32)


def make_layer(spec, policy, depth=0, selection="channel", batch=None):
    _, kind, kwargs, in_shape = spec
    layer = SPARSE_CLASS[kind](**kwargs, policy=policy, depth=depth, selection=selection)
    layer.build((batch,) + tuple(in_shape))
    return layer


def set_random_weights(layer, rng):
    kernel = rng.normal(size=layer.kernel.shape).astype(np.float32)
    layer.kernel.assign(kernel)
    bias = None
    if layer.use_bias:
        bias = rng.normal(size=layer.bias.shape).astype(np.float32)
        layer.bias.assign(bias)
    return kernel, bias


def run_step(layer, x, g):
    """Forward output and (dx, dW, db or None) for the loss sum(z * G)."""
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        z = layer(xv)
        loss = tf.reduce_sum(z * tf.constant(g))
    variables = [xv, layer.kernel] + ([layer.bias] if layer.use_bias else [])
    grads = tape.gradient(loss, variables)
    for grad in grads:
        assert grad is not None
    grads = [np.asarray(tf.convert_to_tensor(grad)) for grad in grads]
    return z.numpy(), (grads[0], grads[1], grads[2] if layer.use_bias else None)


def state_ymax(layer):
    return np.float32(layer.sparsity_state.ymax.numpy())


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


K_SUM = STAT_SUMS.index("k_sum")


def recorded_k_sum(layer):
    return float(layer.sparsity_state.sums.numpy()[K_SUM])


# --------------------------------------------------------------------------------------------------------------
# The reference itself (pure NumPy): a naive direct-loop convolution, adjointness, TF's output sizes
# --------------------------------------------------------------------------------------------------------------
def _naive_conv(x, w, b, strides, padding, dilations, depthwise):
    """Direct definition, one output element at a time (rank 1 or 2), for checking the reference's einsums."""
    x = np.asarray(x, np.float64)
    spatial = x.shape[1:-1]
    kernel = w.shape[:-2]
    geoms = [ref.conv_geometry(s, k, st, d, padding) for s, k, st, d in zip(spatial, kernel, strides, dilations)]
    c_in = x.shape[-1]
    c_out = c_in * w.shape[-1] if depthwise else w.shape[-1]
    z = np.zeros((x.shape[0],) + tuple(g[0] for g in geoms) + (c_out,))
    for n in range(x.shape[0]):
        for out in np.ndindex(*z.shape[1:-1]):
            for co in range(c_out):
                acc = 0.0
                for off in np.ndindex(*kernel):
                    pos = [o * st + k * d - g[1] for o, st, k, d, g in zip(out, strides, off, dilations, geoms)]
                    if any(p < 0 or p >= s for p, s in zip(pos, spatial)):
                        continue  # zero padding
                    if depthwise:
                        c, m = divmod(co, w.shape[-1])
                        acc += x[(n, *pos, c)] * w[(*off, c, m)]
                    else:
                        acc += sum(x[(n, *pos, ci)] * w[(*off, ci, co)] for ci in range(c_in))
                z[(n, *out, co)] = acc + (0.0 if b is None else b[co])
    return z


@pytest.mark.parametrize("spec_id", [s[0] for s in LAYER_SPECS if s[1] != "dense"])
def test_reference_convolution_is_consistent(spec_id):
    _, kind, kwargs, in_shape = SPECS_BY_ID[spec_id]
    rng = np.random.default_rng(0)
    rank = len(in_shape) - 1
    c_in = in_shape[-1]
    ksize = _tuple(kwargs["kernel_size"], rank)
    last = kwargs.get("depth_multiplier", 1) if kind == "depthwise" else kwargs["filters"]
    w = rng.normal(size=ksize + (c_in, last))
    x = rng.normal(size=(2,) + in_shape)
    strides, padding, dilations = conv_args(kind, kwargs)
    depthwise = kind == "depthwise"
    b = rng.normal(size=(c_in * last if depthwise else last,))
    z = ref.conv_forward(x, w, b, strides, padding, dilations, depthwise)
    np.testing.assert_allclose(z, _naive_conv(x, w, b, strides, padding, dilations, depthwise), atol=1e-12)
    # TensorFlow's output sizes.
    for size, k, st, d, out in zip(in_shape[:-1], ksize, strides, dilations, z.shape[1:-1]):
        if padding == "same":
            assert out == -(-size // st)
        elif padding == "valid":
            assert out == -(-(size - (k - 1) * d) // st)
        else:
            assert out == -(-size // st)  # causal keeps ceil(in / stride)
    # The backward pass is the adjoint of the (bias-free) forward pass.
    delta = rng.normal(size=z.shape)
    dx, dw = ref.conv_backward(x, w, delta, strides, padding, dilations, depthwise)
    lin = np.sum(ref.conv_forward(x, w, None, strides, padding, dilations, depthwise) * delta)
    np.testing.assert_allclose(np.sum(dx * x), lin, rtol=1e-12)
    np.testing.assert_allclose(np.sum(dw * w), lin, rtol=1e-12)


def test_reference_selection_rule_by_hand():
    # ties to the lower index
    mask = ref.topk_rows(np.array([[1.0, 2.0, 2.0, 1.0, 0.0, 2.0]]), [4])
    assert mask.tolist() == [[True, True, True, False, False, True]]
    # float32 evaluation order and rounding modes
    assert ref.ratio_to_k(ref.adaptive_ratio([0.0], 1.0, 0.1, 0.9, 0.5, 1), 10).tolist() == [1]  # clamp up
    assert ref.ratio_to_k([np.float32(0.25)], 10, "round").tolist() == [2]  # 2.5 -> 2 (half to even)
    assert ref.ratio_to_k([np.float32(0.35)], 10, "round").tolist() == [4]  # 3.5 -> 4
    assert ref.ratio_to_k([np.float32(0.35)], 10, "floor").tolist() == [3]
    assert ref.ratio_to_k([np.float32(1.0)], 10).tolist() == [10]


# --------------------------------------------------------------------------------------------------------------
# Main matrix: every layer type x policy x selection, two steps each, several depths and batch sizes
# --------------------------------------------------------------------------------------------------------------
MATRIX = [
    pytest.param(spec[0], pol, sel, id=f"{spec[0]}-{pol}-{sel}")
    for spec, pol, sel in itertools.product(LAYER_SPECS, POLICIES, ("channel", "element"))
    if not (sel == "element" and pol in CHANNEL_ONLY)
]


@pytest.mark.parametrize("spec_id, policy_id, selection", MATRIX)
def test_gradients_match_reference(spec_id, policy_id, selection):
    spec = SPECS_BY_ID[spec_id]
    _, kind, kwargs, in_shape = spec
    make_policy, ref_policy, runs = POLICIES[policy_id]
    rng = np.random.default_rng(zlib.crc32(f"{spec_id}/{policy_id}/{selection}".encode()))
    cargs = conv_args(kind, kwargs)
    fell = 0  # steps whose running max fell (a decaying policy's must, in some run)
    skipped = 0  # steps that skipped a sample (a skipping policy's must, in some run)
    for depth, batch in runs:
        layer = make_layer(spec, make_policy(), depth=depth, selection=selection)
        kernel, bias = set_random_weights(layer, rng)
        assert state_ymax(layer) == np.float32(1e-30)
        ymax = ref.YMAX_INIT
        for step, scales in enumerate((SCALES_STEP1, SCALES_STEP2)):
            what = f"depth={depth} batch={batch} step={step}"
            x = rng.normal(size=(batch,) + in_shape).astype(np.float32)
            z_ref = ref.reference_forward(ref_kind(kind), x, kernel, bias, cargs)
            g = dyadic_error(rng, z_ref.shape, scales)
            k_sum_before = recorded_k_sum(layer)

            z, (dx, dw, db) = run_step(layer, x, g)

            assert z.shape == z_ref.shape
            assert_close(z, z_ref, f"forward {what}")
            expected = ref.reference_step(g, ref_policy, depth, selection, ymax_old=ymax)
            # The running max is updated before use, and the variable holds the updated value.
            assert state_ymax(layer) == expected["ymax"], what
            forgets = ref_policy["kind"] == "budget" or ref_policy.get("ymax_decay", 1.0) != 1.0
            if not forgets:  # an all-time maximum never falls
                assert expected["ymax"] >= ymax
            fell += bool(expected["ymax"] < ymax)
            skipped += bool(expected["skipped"].any())
            ymax = expected["ymax"]
            # The reference's mask keeps exactly k(n) entries for each sample it does not skip.
            kept = expected["mask"].sum(axis=1)
            np.testing.assert_array_equal(kept[~expected["skipped"]], expected["k"][~expected["skipped"]])
            dx_ref, dw_ref = ref.reference_gradients(ref_kind(kind), x, kernel, expected["masked"], cargs)
            assert_close(dx, dx_ref, f"dx {what}")
            assert_close(dw, dw_ref, f"dW {what}")
            if bias is not None:
                assert_close(db, expected["dbias"], f"db {what}")
            # The layer's own count of kept entries (over samples with work to do) agrees with k(n).
            y = np.abs(g).reshape(batch, -1).sum(axis=1)
            active = (y > 0) & ~expected["skipped"]
            if ref_policy["kind"] == "dense":
                active = np.ones(batch, bool)
            assert recorded_k_sum(layer) - k_sum_before == pytest.approx(float(expected["k"][active].sum())), what
    if ref_policy["kind"] == "budget" or ref_policy.get("ymax_decay", 1.0) != 1.0:
        assert fell, "no step exercised a reference that forgets"
    skips = ref_policy.get("tau") or ref_policy.get("skip_below") or ref_policy.get("mode") == "samples"
    if skips and any(depth == 0 for depth, _ in runs):
        assert skipped, "no step skipped a sample"  # (a policy skips at depth 0 only)


# --------------------------------------------------------------------------------------------------------------
# The masked error itself, per sample: identity kernels make dx == masked delta exactly
# --------------------------------------------------------------------------------------------------------------
IDENTITY_LAYERS = {
    "dense": (tp.SparseDense, dict(units=12, use_bias=True), (12,)),
    "dense_seq": (tp.SparseDense, dict(units=6, use_bias=True), (4, 6)),
    "conv2d": (tp.SparseConv2D, dict(filters=6, kernel_size=1), (3, 4, 6)),
    "conv1d": (tp.SparseConv1D, dict(filters=7, kernel_size=1), (5, 7)),
    "depthwise": (tp.SparseDepthwiseConv2D, dict(kernel_size=1), (3, 3, 6)),
}


def identity_layer(name, policy, depth=0, selection="channel"):
    cls, kwargs, in_shape = IDENTITY_LAYERS[name]
    layer = cls(**kwargs, policy=policy, depth=depth, selection=selection)
    layer.build((None,) + in_shape)
    c = in_shape[-1]
    if name == "depthwise":
        layer.kernel.assign(np.ones((1, 1, c, 1), np.float32))
    else:
        layer.kernel.assign(np.eye(c, dtype=np.float32).reshape(layer.kernel.shape))
    layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
    return layer, in_shape


def masked_delta_of(layer, in_shape, g):
    x = np.zeros((g.shape[0],) + in_shape, np.float32)
    _, (dx, _, db) = run_step(layer, x, g)
    return dx, db


def kept_per_sample(masked, selection):
    nz = masked != 0
    if selection == "element":
        return nz.reshape(nz.shape[0], -1).sum(axis=1)
    return nz.reshape(nz.shape[0], -1, nz.shape[-1]).any(axis=1).sum(axis=1)


@pytest.mark.parametrize(
    "name, policy_id, selection",
    [(n, p, s) for n, p, s in itertools.product(IDENTITY_LAYERS, POLICIES, ("channel", "element"))
     if not (s == "element" and p in CHANNEL_ONLY)],
)
def test_masked_delta_and_per_sample_k(name, policy_id, selection):
    make_policy, ref_policy, runs = POLICIES[policy_id]
    rng = np.random.default_rng(7)
    for depth, batch in runs:
        layer, in_shape = identity_layer(name, make_policy(), depth, selection)
        ymax = ref.YMAX_INIT
        for scales in (SCALES_STEP1, SCALES_STEP2):
            g = dyadic_error(rng, (batch,) + in_shape, scales, nonzero=True)
            masked, db = masked_delta_of(layer, in_shape, g)
            expected = ref.reference_step(g, ref_policy, depth, selection, ymax_old=ymax)
            ymax = expected["ymax"]
            np.testing.assert_array_equal(masked, expected["masked"].astype(np.float32))
            counts = kept_per_sample(masked, selection)
            k = np.where(expected["skipped"], 0, expected["k"])
            np.testing.assert_array_equal(counts, k, err_msg=f"{name} {policy_id} depth={depth} batch={batch}")
            assert_close(db, expected["dbias"], "db")


# --------------------------------------------------------------------------------------------------------------
# Static top-k keeps exactly k = clamp(floor(M * ratio * zeta**p), 1, M) per sample
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ratio, zeta, depth",
    [(0.05, 1.0, 0), (0.25, 1.0, 0), (0.5, 0.5, 1), (0.4, 0.7, 3), (0.99, 1.0, 0), (1.0, 1.0, 0), (0.3, 0.5, 3)],
)
@pytest.mark.parametrize("name, selection", [("dense", "channel"), ("conv2d", "channel"), ("conv2d", "element"),
                                             ("conv1d", "channel"), ("depthwise", "element")])
def test_static_topk_keeps_exactly_k(ratio, zeta, depth, name, selection):
    layer, in_shape = identity_layer(name, tp.StaticTopK(ratio, zeta=zeta), depth, selection)
    m = int(np.prod(in_shape)) if selection == "element" else in_shape[-1]
    # k by hand (float32 as the spec evaluates it), not from the reference module
    bpr = np.float32(np.float32(ratio) * np.float32(zeta**depth))
    k = int(min(max(np.floor(np.float32(m) * bpr), 1), m))
    assert k == min(max(int(np.floor(m * ratio * zeta**depth + 1e-9)), 1), m)
    rng = np.random.default_rng(3)
    for scales in (SCALES_STEP1, SCALES_STEP2):
        g = dyadic_error(rng, (5,) + in_shape, scales, nonzero=True)
        masked, _ = masked_delta_of(layer, in_shape, g)
        np.testing.assert_array_equal(kept_per_sample(masked, selection), np.full(5, k))
        # the kept entries are the largest ones: every kept score >= every dropped score, per sample
        scores, _ = ref.entry_scores(g, selection)
        kept_mask = ref.entry_scores(masked, selection)[0] > 0
        for n in range(5):
            if k < m:
                assert scores[n][kept_mask[n]].min() >= scores[n][~kept_mask[n]].max()


@pytest.mark.parametrize(
    "policy, ref_policy",
    [(tp.StaticTopK(0.29), {"kind": "static", "ratio": 0.29, "zeta": 1.0}),
     (tp.TinyProp(0.29, 0.29, 1.0), {"kind": "tinyprop", "s_min": 0.29, "s_max": 0.29, "zeta": 1.0}),
     (tp.SsProp(0.29), {"kind": "ssprop", "keep": 0.29})],
)
def test_k_is_evaluated_in_float32(policy, ref_policy):
    # float32(100) * float32(0.29) rounds to 29.0, while floor(0.29 * 100) in float64 is 28: the rule's float32
    # evaluation order decides k at such boundaries (host, exported graph and device agree on it).
    layer = tp.SparseDense(100, policy=policy, use_bias=False)
    layer.build((None, 100))
    layer.kernel.assign(np.eye(100, dtype=np.float32))
    g = np.arange(1, 101, dtype=np.float32)[None, :]
    _, (dx, _, _) = run_step(layer, np.zeros((1, 100), np.float32), g)
    expected = ref.reference_step(g, ref_policy, 0)
    assert expected["k"].tolist() == [29]
    np.testing.assert_array_equal(dx, expected["masked"].astype(np.float32))


# --------------------------------------------------------------------------------------------------------------
# Exact ties resolve to the lower index
# --------------------------------------------------------------------------------------------------------------
TIE_ROW = np.array([1, -2, 2, 1, -1, 2, 0, -2], np.float32)


@pytest.mark.parametrize(
    "ratio, kept",
    [(0.125, [1]), (0.25, [1, 2]), (0.5, [1, 2, 5, 7]), (0.625, [0, 1, 2, 5, 7]), (0.75, [0, 1, 2, 3, 5, 7]),
     (0.875, [0, 1, 2, 3, 4, 5, 7])],
)
def test_ties_go_to_lower_index_dense(ratio, kept):
    layer = tp.SparseDense(8, policy=tp.StaticTopK(ratio), use_bias=False)
    layer.build((None, 8))
    layer.kernel.assign(np.eye(8, dtype=np.float32))
    g = np.stack([TIE_ROW, -TIE_ROW, TIE_ROW[::-1].copy()])
    x = np.zeros((3, 8), np.float32)
    _, (dx, _, _) = run_step(layer, x, g)
    expected = np.zeros_like(g)
    expected[0, kept] = g[0, kept]
    expected[1, kept] = g[1, kept]
    # reversed row: |values| = [2, 2, 0, 2, 1, 1, 2, 1]; same rule applied to its own order
    rev_abs = np.abs(g[2])
    order = sorted(range(8), key=lambda i: (-rev_abs[i], i))[: len(kept)]
    expected[2, order] = g[2, order]
    np.testing.assert_array_equal(dx, expected)
    np.testing.assert_array_equal(dx, ref.reference_step(g, {"kind": "static", "ratio": ratio, "zeta": 1.0}, 0)
                                  ["masked"].astype(np.float32))


def test_ties_go_to_lower_index_conv_channels_elements_and_ssprop():
    # Conv2D 1x1 identity, 4 channels over 2x2 positions; channels 1 and 3 have equal sums (4), channel 0 and 2
    # equal sums (2): k=1 keeps channel 1, k=2 keeps 1 and 3, k=3 adds channel 0.
    g = np.zeros((1, 2, 2, 4), np.float32)
    g[0, :, :, 0] = [[0.5, -0.5], [0.5, 0.5]]
    g[0, :, :, 1] = [[1, 1], [-1, 1]]
    g[0, :, :, 2] = [[2, 0], [0, 0]]
    g[0, :, :, 3] = [[0, -2], [2, 0]]
    for ratio, channels in [(0.25, [1]), (0.5, [1, 3]), (0.75, [0, 1, 3])]:
        for policy in (tp.StaticTopK(ratio), tp.SsProp(ratio)):
            layer = tp.SparseConv2D(4, 1, policy=policy)
            layer.build((None, 2, 2, 4))
            layer.kernel.assign(np.eye(4, dtype=np.float32).reshape(1, 1, 4, 4))
            _, (dx, _, db) = run_step(layer, np.zeros((1, 2, 2, 4), np.float32), g)
            expected = np.zeros_like(g)
            expected[..., channels] = g[..., channels]
            np.testing.assert_array_equal(dx, expected, err_msg=f"{policy}")
    # element selection: |g| values 2 appear at (0,0,2), (0,1,3), (1,0,3) in C order -> flat 2, 7, 11
    layer = tp.SparseConv2D(4, 1, policy=tp.StaticTopK(3 / 16), selection="element")
    layer.build((None, 2, 2, 4))
    layer.kernel.assign(np.eye(4, dtype=np.float32).reshape(1, 1, 4, 4))
    _, (dx, _, _) = run_step(layer, np.zeros((1, 2, 2, 4), np.float32), g)
    expected = np.zeros(16, np.float32)
    expected[[2, 7, 11]] = g.reshape(-1)[[2, 7, 11]]
    np.testing.assert_array_equal(dx.reshape(-1), expected)
    # k = 4: the next magnitude (1) ties at flat 1, 5, 9, 13 -> the lowest, 1
    layer = tp.SparseConv2D(4, 1, policy=tp.StaticTopK(4 / 16), selection="element")
    layer.build((None, 2, 2, 4))
    layer.kernel.assign(np.eye(4, dtype=np.float32).reshape(1, 1, 4, 4))
    _, (dx, _, _) = run_step(layer, np.zeros((1, 2, 2, 4), np.float32), g)
    expected[1] = g.reshape(-1)[1]
    np.testing.assert_array_equal(dx.reshape(-1), expected)


# --------------------------------------------------------------------------------------------------------------
# Ratio 1.0 and DenseBackprop reproduce TensorFlow's exact gradients of the plain Keras layer
# --------------------------------------------------------------------------------------------------------------
FULL_POLICIES = {
    "dense": lambda: tp.DenseBackprop(),
    "static1": lambda: tp.StaticTopK(1.0),
    "tinyprop1": lambda: tp.TinyProp(1.0, 1.0, 1.0),
    "tinyprop1_round": lambda: tp.TinyProp(1.0, 1.0, 1.0, rounding="round"),
    "ssprop1": lambda: tp.SsProp(1.0),
}


@pytest.mark.parametrize("policy_id", list(FULL_POLICIES))
@pytest.mark.parametrize("spec_id", [s[0] for s in LAYER_SPECS])
def test_full_ratio_equals_plain_keras_gradients(spec_id, policy_id):
    spec = SPECS_BY_ID[spec_id]
    _, kind, kwargs, in_shape = spec
    rng = np.random.default_rng(11)
    batch = 3
    for selection in ("channel", "element") if policy_id not in ("dense", "ssprop1") else ("channel",):
        sparse = make_layer(spec, FULL_POLICIES[policy_id](), depth=2, selection=selection)
        plain = PLAIN_CLASS[kind](**kwargs)
        plain.build((None,) + in_shape)
        kernel, bias = set_random_weights(sparse, rng)
        plain.kernel.assign(kernel)
        if bias is not None:
            plain.bias.assign(bias)
        x = rng.normal(size=(batch,) + in_shape).astype(np.float32)
        g = rng.normal(size=sparse.compute_output_shape((batch,) + in_shape)).astype(np.float32)
        z_s, (dx_s, dw_s, db_s) = run_step(sparse, x, g)
        z_p, (dx_p, dw_p, db_p) = run_step(plain, x, g)
        np.testing.assert_array_equal(z_s, z_p)  # bit-identical forward
        # same delta into the same TensorFlow gradient ops: identical, not just close
        np.testing.assert_array_equal(dx_s, dx_p)
        np.testing.assert_array_equal(dw_s, dw_p)
        if bias is not None:
            assert_close(db_s, db_p, "db")  # bias reductions may be ordered differently


# --------------------------------------------------------------------------------------------------------------
# ssProp: unselected filters get exactly zero gradient (kernel slice and bias)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("spec_id", ["c2d_k3_s1_same", "c2d_k3_s2_valid", "dw_k3_s2_same_dm2", "dw_k3_s1_same_dm1",
                                     "c1d_k3_s1_causal", "c1d_k4_s2_same", "dense_6to10", "dense_seq3x5to8"])
def test_ssprop_unselected_filters_have_exactly_zero_gradient(spec_id, keep):
    spec = SPECS_BY_ID[spec_id]
    _, kind, kwargs, in_shape = spec
    rng = np.random.default_rng(5)
    layer = make_layer(spec, tp.SsProp(keep), depth=1)
    assert float(layer.sparsity_state.keep.numpy()) == pytest.approx(keep)
    kernel, bias = set_random_weights(layer, rng)
    x = rng.normal(size=(4,) + in_shape).astype(np.float32)
    cargs = conv_args(kind, kwargs)
    z_ref = ref.reference_forward(ref_kind(kind), x, kernel, bias, cargs)
    g = rng.normal(size=z_ref.shape).astype(np.float32)  # continuous: every entry nonzero
    _, (dx, dw, db) = run_step(layer, x, g)
    expected = ref.reference_step(g, {"kind": "ssprop", "keep": keep}, 1)
    selected = expected["mask"][0]
    c_out = selected.size
    assert selected.sum() == max(int(np.floor(np.float32(c_out) * np.float32(keep))), 1)
    # kernel slice of output channel c: [..., c] ([..., c_in, m] with c = c_in*dm + m for depthwise)
    dw_by_channel = dw.reshape(dw.shape[:-2] + (-1,)) if kind == "depthwise" else dw
    for c in range(c_out):
        if selected[c]:
            assert np.any(dw_by_channel[..., c] != 0.0)
            assert db[c] != 0.0
        else:
            assert np.all(dw_by_channel[..., c] == 0.0), f"dW of unselected channel {c}"
            assert db[c] == 0.0, f"db of unselected channel {c}"
    dx_ref, dw_ref = ref.reference_gradients(ref_kind(kind), x, kernel, expected["masked"], cargs)
    assert_close(dx, dx_ref, "dx")
    assert_close(dw, dw_ref, "dW")
    assert_close(db, expected["dbias"], "db")


# --------------------------------------------------------------------------------------------------------------
# TinyPropSkip: a skipped sample contributes nothing, bias included; other samples as TinyProp
# --------------------------------------------------------------------------------------------------------------
def test_tinyprop_skip_zeroes_skipped_samples_including_bias():
    layer = tp.SparseDense(6, policy=tp.TinyPropSkip(tau=0.5, s_min=0.5, s_max=1.0, zeta=0.5), depth=0)
    layer.build((None, 6))
    layer.kernel.assign(np.eye(6, dtype=np.float32))
    layer.bias.assign(np.zeros(6, np.float32))
    g = np.array([[1, -2, 3, -4, 5, -6],      # Y = 21 (max)
                  [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # Y = 3  -> 3/21 < 0.5: skipped
                  [2, 2, 2, 2, 2, 2]], np.float32)  # Y = 12 -> 12/21 >= 0.5: kept
    _, (dx, _, db) = run_step(layer, np.zeros((3, 6), np.float32), g)
    np.testing.assert_array_equal(dx[1], np.zeros(6))
    # sample 0: bpr = (0.5 + 21*0.5/21) * 1 = 1 -> k = 6; sample 2: bpr = (0.5 + 12*0.5/21) -> k = floor(6*0.7857)=4
    np.testing.assert_array_equal(dx[0], g[0])
    np.testing.assert_array_equal(dx[2], [2, 2, 2, 2, 0, 0])
    np.testing.assert_array_equal(db, g[0] + g[2])  # dense bias over the non-skipped samples only
    # the same layer at depth 2 skips nothing (plain TinyProp): zeta**2 = 0.25
    deep = tp.SparseDense(6, policy=tp.TinyPropSkip(tau=0.5, s_min=0.5, s_max=1.0, zeta=0.5), depth=2)
    deep.build((None, 6))
    deep.kernel.assign(np.eye(6, dtype=np.float32))
    deep.bias.assign(np.zeros(6, np.float32))
    _, (dx, _, db) = run_step(deep, np.zeros((3, 6), np.float32), g)
    np.testing.assert_array_equal(dx[0], [0, 0, 0, 0, 0, -6])  # k = floor(6 * 0.25) = 1
    np.testing.assert_array_equal(dx[1], [0.5, 0, 0, 0, 0, 0])  # k = floor(6*(0.5+3*0.5/21)*0.25)=0 -> clamp 1
    np.testing.assert_array_equal(dx[2], [2, 0, 0, 0, 0, 0])  # k = floor(6*(0.5+12*0.5/21)*0.25) = 1, ties
    np.testing.assert_array_equal(db, g.sum(axis=0))  # dense bias


# --------------------------------------------------------------------------------------------------------------
# Running maximum: initial value, update before use, persistence across steps
# --------------------------------------------------------------------------------------------------------------
def test_ymax_initial_value():
    assert selection_lib.YMAX_INIT == 1e-30
    layer = make_layer(SPECS_BY_ID["dense_6to10"], tp.TinyProp())
    assert state_ymax(layer) == np.float32(1e-30)


@pytest.mark.parametrize("name, selection", [("dense", "channel"), ("conv2d", "channel"), ("conv2d", "element"),
                                             ("depthwise", "channel"), ("conv1d", "element")])
def test_running_max_across_steps(name, selection):
    s_min, s_max, zeta, depth = 0.1, 0.9, 0.8, 1
    policy = {"kind": "tinyprop", "s_min": s_min, "s_max": s_max, "zeta": zeta, "rounding": "floor"}
    layer, in_shape = identity_layer(name, tp.TinyProp(s_min, s_max, zeta), depth, selection)
    rng = np.random.default_rng(21)
    shape = (3,) + in_shape
    g1 = dyadic_error(rng, shape, [4.0, 2.0, 1.0], nonzero=True)
    g2 = dyadic_error(rng, shape, [0.25, 0.5, 0.125], nonzero=True)  # all Y below step 1's max
    g3 = dyadic_error(rng, shape, [16.0, 1.0, 8.0], nonzero=True)  # raises the max again

    y1 = np.abs(g1).reshape(3, -1).sum(axis=1)
    masked1, _ = masked_delta_of(layer, in_shape, g1)
    assert state_ymax(layer) == np.float32(y1.max())
    e1 = ref.reference_step(g1, policy, depth, selection)
    np.testing.assert_array_equal(masked1, e1["masked"].astype(np.float32))
    # the sample with the largest Y gets bpr = s_max * zeta**p exactly (ymax updated before use)
    top = int(np.argmax(y1))
    assert e1["k"][top] == ref.ratio_to_k([np.float32(np.float32(s_max) * np.float32(zeta**depth))], e1["M"])[0]
    assert kept_per_sample(masked1, selection)[top] == e1["k"][top]

    masked2, _ = masked_delta_of(layer, in_shape, g2)
    assert state_ymax(layer) == np.float32(y1.max())  # unchanged: step 2's errors are smaller
    e2 = ref.reference_step(g2, policy, depth, selection, ymax_old=e1["ymax"])
    np.testing.assert_array_equal(masked2, e2["masked"].astype(np.float32))
    np.testing.assert_array_equal(kept_per_sample(masked2, selection), e2["k"])
    fresh = ref.reference_step(g2, policy, depth, selection)  # what a reset running max would give
    assert not np.array_equal(fresh["k"], e2["k"]), "test does not discriminate: pick other scales"

    masked3, _ = masked_delta_of(layer, in_shape, g3)
    y3 = np.abs(g3).reshape(3, -1).sum(axis=1)
    assert y3.max() > y1.max()
    assert state_ymax(layer) == np.float32(y3.max())
    e3 = ref.reference_step(g3, policy, depth, selection, ymax_old=e2["ymax"])
    np.testing.assert_array_equal(masked3, e3["masked"].astype(np.float32))
    np.testing.assert_array_equal(kept_per_sample(masked3, selection), e3["k"])
    # the sample that raised the max already used the new max in this step
    top = int(np.argmax(y3))
    assert e3["bpr"][top] == np.float32(np.float32(s_max) * np.float32(zeta**depth))


@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("spec_id", ["dense_6to10", "c2d_k3_s2_same", "dw_k3_s2_same_dm2", "c1d_k3_s1_causal"])
def test_all_zero_first_step_is_finite_and_uses_s_min(spec_id, depth):
    spec = SPECS_BY_ID[spec_id]
    _, kind, kwargs, in_shape = spec
    s_min, s_max, zeta = 0.3, 0.9, 0.6
    policy = {"kind": "tinyprop", "s_min": s_min, "s_max": s_max, "zeta": zeta, "rounding": "floor"}
    layer = make_layer(spec, tp.TinyProp(s_min, s_max, zeta), depth=depth)
    rng = np.random.default_rng(2)
    kernel, bias = set_random_weights(layer, rng)
    x = rng.normal(size=(3,) + in_shape).astype(np.float32)
    out_shape = layer.compute_output_shape((3,) + in_shape)
    _, grads = run_step(layer, x, np.zeros(out_shape, np.float32))
    for grad in grads:
        if grad is not None:
            assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)
    assert state_ymax(layer) == np.float32(1e-30)
    expected = ref.reference_step(np.zeros(out_shape), policy, depth)
    m = out_shape[-1]
    k_by_hand = min(max(int(np.floor(np.float32(m) * np.float32(np.float32(s_min) * np.float32(zeta**depth)))), 1), m)
    np.testing.assert_array_equal(expected["k"], np.full(3, k_by_hand))
    # the ratio the layer used (bpr = s_min * zeta**p: 0 / 1e-30 = 0, no NaN), read from its step record
    bpr_index = STAT_EXTREMES.index("bpr")
    for extreme in (layer.sparsity_state.minima, layer.sparsity_state.maxima):
        assert np.float32(extreme.numpy()[bpr_index]) == expected["bpr"][0]
    # a following nonzero step behaves per the reference with the untouched initial running max
    cargs = conv_args(kind, kwargs)
    g = dyadic_error(rng, out_shape, SCALES_STEP1)
    _, (dx, dw, db) = run_step(layer, x, g)
    e = ref.reference_step(g, policy, depth, ymax_old=ref.YMAX_INIT)
    assert state_ymax(layer) == e["ymax"]
    dx_ref, dw_ref = ref.reference_gradients(ref_kind(kind), x, kernel, e["masked"], cargs)
    assert_close(dx, dx_ref, "dx")
    assert_close(dw, dw_ref, "dW")
    if bias is not None:
        assert_close(db, e["dbias"], "db")
