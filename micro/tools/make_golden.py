"""Golden test vectors for the C++ kernels, computed by the Python package and TensorFlow/Keras.

    .venv/bin/python micro/tools/make_golden.py --out micro/tests/golden        # writes python_reference.tpv

Selection cases (adaptive_k, topk) come from ``tinyprop_tf.selection`` and must match bit for bit. Gradient
cases come from TensorFlow's own gradients (tf.nn.conv2d / depthwise_conv2d / matmul with the masked error
as upstream gradient) and losses/optimizers from Keras 3 (tolerance 1e-5; Adam/SGD exact when replayed with
TensorFlow's beta powers).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tpv import write_tpv  # noqa: E402

f32, i32, f64 = np.float32, np.int32, np.float64


def selection_cases(rng):
    import tensorflow as tf

    from tinyprop_tf import selection

    cases = []
    for idx in range(12):
        batch, n = int(rng.integers(1, 9)), int(rng.choice([1, 2, 7, 10, 32, 100, 257]))
        s_min, s_max = sorted(rng.uniform(0, 1, 2).tolist())
        if idx % 4 == 0:
            s_min = s_max = float(rng.uniform(0.01, 1))  # static top-k
        zeta, depth = float(rng.choice([0.5, 0.7, 1.0])), int(rng.integers(0, 4))
        zeta_pow = float(np.float32(zeta**depth))
        rounding = "round" if idx % 3 == 2 else "floor"
        y = rng.uniform(0, 10, batch).astype(f32)
        if idx % 5 == 1:
            y[0] = 0.0
        ymax_in = f32(rng.uniform(0.1, 12)) if idx % 2 else f32(selection.YMAX_INIT)
        # Beyond the paper in some cases: a decaying max (once decayed below every y and the floor), the AIfES
        # per-sample max, BudgetProp's running mean (first step, then decayed), a floor on k.
        decay = (1.0, 0.9, 0.5)[idx % 3]
        if idx == 10:
            ymax_in, y = f32(1e-30), np.zeros(batch, f32)  # decays below YMAX_INIT: floored
        reference = "mean" if idx in (4, 7, 8, 11) else "max"
        per_sample_max = reference == "max" and idx in (1, 2, 5, 6)
        min_kept = int(rng.integers(1, n + 2)) if idx % 4 == 3 else 1
        skip_below = (0.0, 0.0, 0.6, 1.0)[idx % 4]  # a skipped sample has k = 0
        rule = selection.SelectionRule(s_min, s_max, zeta_pow, rounding, reference, decay, per_sample_max, min_kept,
                                       skip_below)
        ymax, per_sample = selection.update_reference(ymax_in, y, rule)
        bpr = rule.ratio(y, per_sample)
        k = tf.where(selection.skipped_samples(y, per_sample, rule), 0, rule.k(bpr, n))
        cases.append((f"adaptive_k_{idx}", "adaptive_k", {
            "y": y, "ymax": np.array([ymax_in], f32), "s_min": np.array([s_min], f32),
            "s_max": np.array([s_max], f32), "zeta_pow": np.array([zeta_pow], f32), "n": np.array([n], i32),
            "rounding": np.array([1 if rounding == "round" else 0], i32),
            "reference": np.array([1 if reference == "mean" else 0], i32), "decay": np.array([decay], f32),
            "per_sample_max": np.array([int(per_sample_max)], i32), "min_kept": np.array([min_kept], i32),
            "skip_below": np.array([skip_below], f32), "ymax_out": np.array([ymax.numpy()], f32),
            "bpr": bpr.numpy().astype(f32), "k": k.numpy().astype(i32),
        }))
    cases += quantile_cases(np.random.default_rng(1))
    for idx in range(10):
        batch, n = int(rng.integers(1, 6)), int(rng.choice([1, 3, 8, 33, 64]))
        scores = rng.uniform(0, 3, (batch, n)).astype(f32)
        if idx % 2:
            scores = rng.integers(0, 3, (batch, n)).astype(f32)  # ties
        k = rng.integers(1, n + 1, batch).astype(i32)
        kth = selection.kth_largest_pairwise if idx % 3 == 0 else selection.kth_largest_sorted
        mask = selection.topk_mask(tf.constant(scores), tf.constant(k), kth_largest=kth).numpy()
        cases.append((f"topk_{idx}", "topk", {
            "shape": np.array([batch, n], i32), "scores": scores, "k": k, "mask": mask.astype(i32),
        }))
    return cases


def _mask(rng, batch, n):
    mask = (rng.uniform(size=(batch, n)) < rng.uniform(0.2, 1.0)).astype(i32)
    mask[0] = 1
    if batch > 1:
        mask[1] = 0
    return mask


def gradient_cases(rng):
    import tensorflow as tf

    cases = []
    for idx in range(4):
        b, i, o = int(rng.integers(1, 5)), int(rng.integers(1, 20)), int(rng.integers(1, 20))
        x, w, d = (rng.uniform(-1, 1, s).astype(f32) for s in ((b, i), (i, o), (b, o)))
        mask = _mask(rng, b, o)
        xt, wt = tf.constant(x), tf.constant(w)
        with tf.GradientTape() as tape:
            tape.watch([xt, wt])
            z = tf.matmul(xt, wt)
        dx, dw = tape.gradient(z, [xt, wt], output_gradients=tf.constant(d * mask.astype(f32)))
        cases.append((f"dense_{idx}", "dense_backward", {
            "shape": np.array([b, i, o], i32), "x": x, "w": w, "delta": d, "mask": mask,
            "dw": dw.numpy(), "dx": dx.numpy(), "db": d.sum(axis=0, dtype=f32),
        }))
    configs = [  # (B, H, W, C, O_or_dm, kh, kw, sh, sw, dh, dw, same)
        (2, 7, 6, 3, 5, 3, 3, 1, 1, 1, 1, 1), (1, 8, 8, 2, 4, 3, 3, 2, 2, 1, 1, 1),
        (2, 9, 7, 2, 3, 3, 2, 2, 3, 1, 1, 0), (1, 9, 9, 3, 4, 3, 3, 1, 1, 2, 2, 1),
        (3, 6, 5, 1, 2, 2, 3, 1, 1, 2, 1, 0), (1, 5, 5, 4, 6, 5, 5, 3, 3, 1, 1, 1),
    ]
    for idx, (b, h, wd, c, o, kh, kw, sh, sw, dh, dw_, same) in enumerate(configs):
        for depthwise in (False, True):
            if depthwise and sh != sw:
                continue  # TF's depthwise kernel needs equal strides
            out_c = c * o if depthwise else o
            x = rng.uniform(-1, 1, (b, h, wd, c)).astype(f32)
            w = rng.uniform(-1, 1, (kh, kw, c, o)).astype(f32)
            xt, wt = tf.constant(x), tf.constant(w)
            padding = "SAME" if same else "VALID"
            with tf.GradientTape() as tape:
                tape.watch([xt, wt])
                if depthwise:
                    z = tf.nn.depthwise_conv2d(xt, wt, [1, sh, sw, 1], padding, dilations=[dh, dw_])
                else:
                    z = tf.nn.convolution(xt, wt, [sh, sw], padding, dilations=[dh, dw_])
            d = rng.uniform(-1, 1, z.shape).astype(f32)
            mask = _mask(rng, b, out_c)
            gx, gw = tape.gradient(z, [xt, wt], output_gradients=tf.constant(d * mask[:, None, None, :].astype(f32)))
            cases.append((f"{'depthwise' if depthwise else 'conv'}_{idx}",
                          "depthwise_conv2d_backward" if depthwise else "conv2d_backward", {
                              "shape": np.array([b, h, wd, c, o], i32),
                              "window": np.array([kh, kw, sh, sw, dh, dw_, same], i32),
                              "x": x, "w": w, "delta": d, "mask": mask,
                              "dw": gw.numpy(), "dx": gx.numpy(), "db": d.sum(axis=(0, 1, 2), dtype=f32)}))
    return cases


def keras_cases(rng):
    import keras
    import tensorflow as tf

    cases = []
    b, c = 5, 7
    logits = rng.uniform(-3, 3, (b, c)).astype(f32)
    labels = rng.integers(0, c, b).astype(i32)
    lt = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(lt)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, lt)
    cases.append(("sparse_ce", "softmax_cross_entropy", {
        "shape": np.array([b, c], i32), "logits": logits, "labels": labels,
        "loss": np.array([loss.numpy()], f32), "grad": tape.gradient(loss, lt).numpy()}))
    targets = rng.dirichlet(np.ones(c), b).astype(f32)
    with tf.GradientTape() as tape:
        tape.watch(lt)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)(targets, lt)
    cases.append(("dense_ce", "softmax_cross_entropy_dense", {
        "shape": np.array([b, c], i32), "logits": logits, "targets": targets,
        "loss": np.array([loss.numpy()], f32), "grad": tape.gradient(loss, lt).numpy()}))
    pred, target = rng.uniform(-1, 1, (4, 3)).astype(f32), rng.uniform(-1, 1, (4, 3)).astype(f32)
    pt = tf.constant(pred)
    with tf.GradientTape() as tape:
        tape.watch(pt)
        loss = keras.losses.MeanSquaredError()(target, pt)
    cases.append(("mse", "mse", {
        "shape": np.array([4, 3], i32), "pred": pred, "target": target,
        "loss": np.array([loss.numpy()], f32), "grad": tape.gradient(loss, pt).numpy()}))

    n, steps = 16, 6
    w0 = rng.uniform(-1, 1, n).astype(f32)
    grads = rng.uniform(-1, 1, (steps, n)).astype(f32)
    for name, opt, momentum, nesterov in (("sgd_plain", keras.optimizers.SGD(0.05), 0.0, False),
                                          ("sgd_momentum", keras.optimizers.SGD(0.05, momentum=0.9), 0.9, False),
                                          ("sgd_nesterov", keras.optimizers.SGD(0.05, 0.9, nesterov=True), 0.9, True)):
        var = keras.Variable(w0)
        for t in range(steps):
            opt.apply([tf.constant(grads[t])], [var])
        arrays = {"hyper": np.array([0.05, momentum], f32), "nesterov": np.array([int(nesterov)], i32),
                  "steps": np.array([steps], i32), "w0": w0, "grads": grads, "w": np.asarray(var.numpy(), f32),
                  "exact": np.array([1], i32)}
        if momentum:
            arrays["v"] = np.asarray(opt.momentums[0].numpy(), f32)
        cases.append((name, "sgd", arrays))
    opt = keras.optimizers.Adam(learning_rate=1e-2)
    var = keras.Variable(w0)
    powers = []
    for t in range(steps):
        local_step = tf.cast(t + 1, tf.float32)
        powers += [tf.pow(tf.constant(0.9, tf.float32), local_step).numpy(),
                   tf.pow(tf.constant(0.999, tf.float32), local_step).numpy()]
        opt.apply([tf.constant(grads[t])], [var])
    cases.append(("adam", "adam", {
        "hyper": np.array([1e-2, 0.9, 0.999, 1e-7], f64), "steps": np.array([steps], i32), "w0": w0,
        "grads": grads, "beta_powers": np.array(powers, f32), "w": np.asarray(var.numpy(), f32),
        "m": np.asarray(opt._momentums[0].numpy(), f32), "v": np.asarray(opt._velocities[0].numpy(), f32),
        "exact": np.array([1], i32)}))
    return cases


def quantile_cases(rng):
    """BudgetProp's whole-sample rule: the running quantile (first step, then steered up or down) and the skip of
    the samples below it, a few steps in a row (each step's state the next one's input)."""
    import tensorflow as tf

    from tinyprop_tf import selection

    cases = []
    for idx, (batch, share, rate) in enumerate([(1, 0.15, 0.5), (7, 0.15, 0.5), (32, 0.3, 1.0), (5, 0.5, 0.25)]):
        rule = selection.SelectionRule(1.0, 1.0, 1.0, "floor", "quantile", 1.0, skip_below=1.0,
                                       quantile_share=share, quantile_rate=rate)
        state = f32(selection.YMAX_INIT)
        for step in range(3):
            y = rng.exponential(2.0, batch).astype(f32)
            ymax, per_sample = selection.update_reference(state, y, rule)
            bpr = rule.ratio(y, per_sample)
            k = tf.where(selection.skipped_samples(y, per_sample, rule), 0, rule.k(bpr, 10))
            cases.append((f"adaptive_k_quantile_{idx}_{step}", "adaptive_k", {
                "y": y, "ymax": np.array([state], f32), "s_min": np.array([1.0], f32), "s_max": np.array([1.0], f32),
                "zeta_pow": np.array([1.0], f32), "n": np.array([10], i32), "reference": np.array([2], i32),
                "decay": np.array([1.0], f32), "skip_below": np.array([1.0], f32),
                "quantile_share": np.array([share], f32), "quantile_rate": np.array([rate], f32),
                "ymax_out": np.array([ymax.numpy()], f32), "bpr": bpr.numpy().astype(f32),
                "k": k.numpy().astype(i32)}))
            state = f32(ymax.numpy())
    return cases


def make_cases(seed: int = 0):
    rng = np.random.default_rng(seed)
    return selection_cases(rng) + gradient_cases(rng) + keras_cases(rng)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "python_reference.tpv")
    cases = make_cases(args.seed)
    write_tpv(path, cases)
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
