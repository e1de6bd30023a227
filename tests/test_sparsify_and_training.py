"""sparsify/strip, save/load, errors, NaN handling, training with fit and GradientTape, and the accounting."""

import csv
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinyprop_tf as tp
from tinyprop_tf import models


def _cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def _outputs_equal(a, b, x):
    return np.array_equal(a(x, training=False).numpy(), b(x, training=False).numpy())


# --- sparsify / strip -------------------------------------------------------------------------------------------
def test_sparsify_sequential_same_weights_bit_identical_outputs_and_depths():
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(10, activation="relu"), keras.layers.Dropout(0.1),
         keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    x = np.random.default_rng(1).normal(size=(7, 12)).astype("float32")
    sparse = tp.sparsify(model, tp.TinyProp(zeta=0.5))
    assert [type(l).__name__ for l in sparse.layers] == ["SparseDense", "Dropout", "SparseDense", "SparseDense"]
    assert [l.depth for l in tp.sparse_layers(sparse)] == [2, 1, 0]
    assert [l.needs_input_grad for l in tp.sparse_layers(sparse)] == [False, True, True]
    assert _outputs_equal(model, sparse, x)
    for a, b in zip(model.get_weights(), [w for l in sparse.layers for w in l.get_weights()[:2] if l.weights]):
        np.testing.assert_array_equal(a, b)
    round_trip = tp.strip(sparse)
    assert [type(l) for l in round_trip.layers] == [type(l) for l in model.layers]
    for a, b in zip(model.get_weights(), round_trip.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sparsify_functional_dscnn_with_residuals_batchnorm_and_pooling():
    model = models.ds_cnn(input_shape=(20, 10, 1), filters=8, blocks=3, residual=True)
    x = np.random.default_rng(2).normal(size=(4, 20, 10, 1)).astype("float32")
    # Make BatchNorm statistics non-trivial so that copying them is actually checked.
    model.compile("sgd", _cross_entropy())
    model.fit(x, np.arange(4) % 12, epochs=1, verbose=0)
    sparse = tp.sparsify(model, tp.TinyProp())
    assert _outputs_equal(model, sparse, x)
    depths = {l.name: l.depth for l in tp.sparse_layers(sparse)}
    assert depths == {"logits": 0, "pw3": 1, "dw3": 2, "pw2": 3, "dw2": 4, "pw1": 5, "dw1": 6, "conv0": 7}
    assert isinstance(sparse.get_layer("dw1"), tp.SparseDepthwiseConv2D)
    assert not sparse.get_layer("conv0").needs_input_grad


def test_residual_branch_depth_is_the_longest_path():
    inputs = keras.Input((6,))
    a = keras.layers.Dense(6, name="a")(inputs)
    b = keras.layers.Dense(6, name="b")(a)
    c = keras.layers.Dense(6, name="c")(b)
    merged = keras.layers.Add()([a, c])  # a reaches the output directly and through b, c
    out = keras.layers.Dense(2, name="out")(merged)
    sparse = tp.sparsify(keras.Model(inputs, out), tp.StaticTopK(0.5))
    assert {l.name: l.depth for l in tp.sparse_layers(sparse)} == {"out": 0, "c": 1, "b": 2, "a": 3}


def test_sparsify_layers_subset_and_reports_what_stays_dense():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, out)
    with pytest.warns(UserWarning, match=r"left dense: sep \(SeparableConv2D has no sparse counterpart\)"):
        sparse = tp.sparsify(model, tp.TinyProp())
    assert sparse.sparsify_report["sparse"] == ["conv", "fc"]
    assert any(item.startswith("sep") for item in sparse.sparsify_report["left_dense"])
    only_fc = tp.sparsify(model, tp.TinyProp(), layers=["fc"], verbose=False)
    assert [l.name for l in tp.sparse_layers(only_fc)] == ["fc"]
    # conv is upstream of fc but not sparse, so it does not count for fc's depth.
    assert only_fc.get_layer("fc").depth == 0


def test_sparsify_errors_name_the_bad_input():
    model = models.mlp(input_shape=(8,), num_classes=3, hidden=(6,))
    with pytest.raises(ValueError, match=r"no layer named \['fc9'\]"):
        tp.sparsify(model, tp.TinyProp(), layers=["fc9"])
    with pytest.raises(TypeError, match="expects a keras.Model .* got ndarray"):
        tp.sparsify(np.zeros(3), tp.TinyProp())
    with pytest.raises(TypeError, match="expects a keras.Model .* got Dense"):
        tp.sparsify(keras.layers.Dense(3), tp.TinyProp())

    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    custom = Custom()
    custom(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed model"):
        tp.sparsify(custom, tp.TinyProp())
    no_weights = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no layer that can be made sparse"):
        tp.sparsify(no_weights, tp.TinyProp())
    conv_first = keras.Sequential([keras.Input((2, 6, 6)), keras.layers.Conv2D(2, 3, data_format="channels_first")])
    with pytest.raises(ValueError, match="channels_first"):
        tp.sparsify(conv_first, tp.TinyProp(), layers=[conv_first.layers[0].name])


def test_ssprop_defaults_to_2d_convolutions_only():
    model = models.small_cnn(input_shape=(12, 12, 1), num_classes=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sparse = tp.sparsify(model, tp.SsProp(0.5))
    assert [type(l).__name__ for l in tp.sparse_layers(sparse)] == ["SparseConv2D", "SparseConv2D"]
    assert any("logits (not selected for SsProp)" in str(w.message) for w in caught)


def test_strip_returns_plain_keras_layers_with_trained_weights(digits):
    (x, y), _ = digits
    model = models.mlp(input_shape=(64,), num_classes=10, hidden=(16,))
    sparse = tp.sparsify(model, tp.TinyProp())
    sparse.compile(keras.optimizers.Adam(1e-2), _cross_entropy())
    sparse.fit(x[:256], y[:256], epochs=1, verbose=0)
    plain = tp.strip(sparse)
    assert not tp.sparse_layers(plain)
    assert all(type(l) in (keras.layers.InputLayer, keras.layers.Dense) for l in plain.layers)
    trained = [w.numpy() for w in sparse.trainable_weights]
    assert not np.array_equal(trained[0], model.get_weights()[0])  # it did train
    for a, b in zip(trained, plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _outputs_equal(sparse, plain, x[:9])


def test_keras_save_load_round_trips_policy_state_and_weights(tmp_path, digits):
    (x, y), _ = digits
    model = models.mlp(input_shape=(64,), num_classes=10, hidden=(16, 12))
    policy = tp.SsProp(tp.Linear(0.9, 0.3, warmup=1))
    sparse = tp.sparsify(model, tp.TinyProp(0.05, 0.7, 0.6, rounding="round"), layers=["fc1", "logits"])
    sparse.compile(keras.optimizers.Adam(1e-2), _cross_entropy())
    sparse.fit(x[:200], y[:200], epochs=1, verbose=0)
    path = tmp_path / "sparse.keras"
    sparse.save(path)
    loaded = keras.models.load_model(path)
    for before, after in zip(tp.sparse_layers(sparse), tp.sparse_layers(loaded)):
        assert type(after) is type(before) and after.policy == before.policy
        assert (after.depth, after.selection, after.needs_input_grad) == (
            before.depth, before.selection, before.needs_input_grad)
        assert after.sparsity_state.ymax.numpy() == before.sparsity_state.ymax.numpy() > 1e-3
    assert _outputs_equal(sparse, loaded, x[:5])
    for a, b in zip(sparse.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A policy with a schedule survives too; a stripped model saves as plain Keras.
    conv = tp.sparsify(models.small_cnn(input_shape=(8, 8, 1), num_classes=3), policy)
    conv.save(tmp_path / "ss.keras")
    assert tp.sparse_layers(keras.models.load_model(tmp_path / "ss.keras"))[0].policy == policy
    tp.strip(loaded).save(tmp_path / "plain.keras")
    assert not tp.sparse_layers(keras.models.load_model(tmp_path / "plain.keras"))


# --- NaN --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", [tp.TinyProp(), tp.DenseBackprop()], ids=["tinyprop", "dense"])
def test_nan_error_signal_stops_training_naming_the_layer_and_leaves_weights_intact(policy):
    model = tp.sparsify(models.mlp(input_shape=(6,), num_classes=3, hidden=(5,)), policy)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    model.compile(keras.optimizers.SGD(0.1), lambda yt, yp: tf.reduce_mean(tf.sqrt(yp - 100.0)))
    before = [w.numpy().copy() for w in model.trainable_weights]
    ymax_before = [l.sparsity_state.ymax.numpy() for l in tp.sparse_layers(model)]
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite error signal .* layer 'logits'"):
        model.fit(x, np.zeros(16), epochs=1, batch_size=8, verbose=0)
    for a, w in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(a, w.numpy())
    assert [l.sparsity_state.ymax.numpy() for l in tp.sparse_layers(model)] == ymax_before


# --- training ---------------------------------------------------------------------------------------------------
POLICIES = {
    "dense": tp.DenseBackprop(),
    "static": tp.StaticTopK(0.3),  # meProp uses no depth damping
    "tinyprop": tp.TinyProp(0.1, 0.9, 0.5),
    "tinyprop_skip": tp.TinyPropSkip(0.05, 0.1, 0.9, 0.5),
    "ssprop": tp.SsProp(tp.Constant(0.5, interleave=True)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POLICIES))
def test_fit_learns_real_digits_with_each_policy(name, digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    if name == "ssprop":
        base = models.small_cnn(input_shape=(8, 8, 1), num_classes=10, filters=(16, 32))
        x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    else:
        base = models.mlp(input_shape=(64,), num_classes=10, hidden=(32, 16))
    model = tp.sparsify(base, POLICIES[name], verbose=False)
    model.compile(keras.optimizers.Adam(1e-2), _cross_entropy(), metrics=["accuracy"])
    stats = tp.BackpropStats(csv_path=str(tmp_path / "s.csv"), json_path=str(tmp_path / "s.json"))
    history = model.fit(x, y, epochs=12, batch_size=32, verbose=0, callbacks=[tp.UpdateSparsity(), stats])
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    # "It learns", with margins no CPU's summation order can flip: one seed's trajectory does move with it (seed 0
    # gave static top-k 0.627 on an AVX-512 machine, 0.7+ elsewhere). Seeds 0-3 measured on that machine: dense
    # 0.97-0.98, TinyProp 0.80-0.90, TinyPropSkip 0.83-0.94, static 0.46-0.63 (trained from scratch with 30 % of a
    # 32-unit MLP it learns slowest, the gap the TinyProp paper reports). Chance is 0.1.
    bar = {"dense": 0.9, "static": 0.3}.get(name, 0.6)
    assert accuracy > bar, f"{name}: test accuracy {accuracy:.3f}"

    ratios = history.history["bwd_macs_ratio"]
    assert len(ratios) == 12 and all(0 < r <= 1 for r in ratios)
    if name == "dense":
        assert ratios == [1.0] * 12
    if name in ("tinyprop", "tinyprop_skip"):
        # As the model converges the error falls against its running maximum: fewer entries are kept.
        assert ratios[-1] < 0.8 * ratios[0], ratios
    if name == "ssprop":
        assert ratios[1::2] == [1.0] * 6 and max(ratios[0::2]) < 0.6  # interleave: sparse, full, sparse...
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 12 * len(tp.sparse_layers(model))
    records = json.load(open(tmp_path / "s.json"))
    assert [r["epoch"] for r in records] == list(range(12))
    assert records[-1]["totals"]["bwd_macs_ratio"] == pytest.approx(ratios[-1])


@pytest.mark.slow
def test_tinyprop_skip_skips_samples_and_costs_less_than_tinyprop(digits):
    (x, y), _ = digits
    costs = {}
    for name in ("tinyprop", "tinyprop_skip"):
        keras.utils.set_random_seed(0)
        model = tp.sparsify(models.mlp(input_shape=(64,), num_classes=10, hidden=(32, 16)), POLICIES[name])
        model.compile(keras.optimizers.Adam(1e-2), _cross_entropy())
        model.fit(x, y, epochs=6, batch_size=32, verbose=0, callbacks=[tp.UpdateSparsity()])
        stats = tp.read_stats(model)  # counters accumulate over the whole run without BackpropStats
        costs[name] = tp.totals(stats)["bwd_macs_sparse"]
        skipped = stats["logits"]["skipped"]
        assert (skipped > 0) == (name == "tinyprop_skip")
    assert costs["tinyprop_skip"] < costs["tinyprop"]


@pytest.mark.slow
@pytest.mark.parametrize("policy, passed_range", [
    # errors below the running mean are most samples once the model fits (about half would be a symmetric spread)
    (tp.BudgetProp(1.0, skip_below=1.0), (0.0, 0.8)),
    # the running quantile lets about a quarter through (it lags a little while the errors fall)
    (tp.BudgetProp(0.25, mode="samples"), (0.15, 0.3)),
], ids=["skip_below", "samples"])
def test_budgetprop_back_propagates_only_the_samples_it_passes_densely(digits, policy, passed_range):
    (x, y), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = tp.sparsify(models.mlp(input_shape=(64,), num_classes=10, hidden=(32, 16)), policy, verbose=False)
    model.compile(keras.optimizers.Adam(1e-2), _cross_entropy(), metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0, callbacks=[tp.UpdateSparsity()])
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.6, accuracy
    stats = tp.read_stats(model)
    logits = stats["logits"]
    passed = 1.0 - logits["skipped"] / logits["samples"]
    assert passed_range[0] < passed < passed_range[1], logits
    # a sample that passes keeps every logit (softmax's error has no zero), so the layer's sparse backward is its
    # dense one for exactly the samples that passed
    assert logits["bwd_macs_sparse"] == pytest.approx(logits["bwd_macs_dense"] * passed, rel=1e-9)
    for name, row in stats.items():
        # a skipped sample has zero error in every earlier layer too (and a ReLU's dead units need no work)
        assert row["skipped"] >= logits["skipped"], name
        assert row["bwd_macs_sparse"] <= row["bwd_macs_dense"] * (row["samples"] - row["skipped"]) / row["samples"]


def test_gradient_tape_loop_trains_and_counts(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(1)
    model = tp.sparsify(models.mlp(input_shape=(64,), num_classes=10, hidden=(32,)), tp.TinyProp())
    optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = _cross_entropy()
    tp.reset_sparsity_state(model)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply(grads, model.trainable_weights)
        return loss

    losses = [float(step(x[i:i + 64], y[i:i + 64])) for _ in range(2) for i in range(0, 1280, 64)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    stats = tp.read_stats(model)
    assert stats["logits"]["steps"] == 40 and stats["logits"]["samples"] == 2560
    assert 1 <= stats["fc1"]["k_min"] <= stats["fc1"]["k_mean"] <= stats["fc1"]["k_max"] <= 32


def test_accounting_closed_forms_for_dense_and_static():
    """MAC counts against hand-computed values: Dense 6->5 (first layer: dW only) and 5->3 (dW and dx)."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    for policy, k in ((tp.DenseBackprop(), (5, 3)), (tp.StaticTopK(0.4), (2, 1))):
        sparse = tp.sparsify(model, policy)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(sparse(x) ** 2)
        tape.gradient(loss, sparse.trainable_weights)
        stats = tp.read_stats(sparse)
        first, second = (stats[l.name] for l in tp.sparse_layers(sparse))
        assert first["fwd_macs"] == 4 * 6 * 5 and second["fwd_macs"] == 4 * 5 * 3
        assert first["bwd_macs_dense"] == 4 * 6 * 5 and second["bwd_macs_dense"] == 2 * 4 * 5 * 3
        assert first["bwd_macs_sparse"] == 4 * k[0] * 6 and second["bwd_macs_sparse"] == 4 * k[1] * 5 * 2
        assert first["k_min"] == first["k_max"] == k[0]
        if isinstance(policy, tp.DenseBackprop):
            assert first["select_ops"] == 0
        else:  # read 5 errors + heap over 5 entries with k=2 (ceil(log2 3) = 2) per sample
            assert first["select_ops"] == 4 * (5 + 5 * 2)


def test_conv_accounting_counts_kept_channels_times_positions():
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.Conv2D(8, 3, strides=2, padding="valid")])
    sparse = tp.sparsify(model, tp.StaticTopK(0.5))
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 2)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sparse(x))
    tape.gradient(loss, sparse.trainable_weights)
    first, second = tp.read_stats(sparse).values()
    # second: output 2x2x8, fan-in 3*3*4 = 36; k = floor(8 * 0.5) = 4 channels of 4 positions, dW and dx.
    assert second["fwd_macs"] == 3 * 2 * 2 * 8 * 36
    assert second["bwd_macs_sparse"] == 3 * 4 * 4 * 36 * 2
    # first: output 6x6x4, fan-in 18, no dx; k = 2 channels.
    assert first["bwd_macs_sparse"] == 3 * 2 * 36 * 18


def test_update_sparsity_resets_running_max_and_applies_the_schedule(digits):
    (x, y), _ = digits
    x = x.reshape(-1, 8, 8, 1)[:128]
    model = tp.sparsify(models.small_cnn(input_shape=(8, 8, 1), num_classes=10), tp.SsProp(tp.Bar(0.9, 0.25)),
                        verbose=False)
    model.compile(keras.optimizers.SGD(0.01), _cross_entropy())
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(tp.sparse_layers(self.model)[0].sparsity_state.keep.numpy()))

    conv1 = model.get_layer("conv1")
    conv1.sparsity_state.ymax.assign(123.0)
    model.fit(x, y[:128], epochs=4, batch_size=32, verbose=0, callbacks=[tp.UpdateSparsity(), Spy()])
    assert seen == pytest.approx([0.9, 0.9, 0.25, 0.25])  # float32 variable
    assert conv1.sparsity_state.ymax.numpy() < 123.0  # reset at train begin, then regrown from real errors
    stats = tp.read_stats(model)["conv1"]
    assert stats["k_min"] == 2 and stats["k_max"] == 7  # floor(8 * 0.25), floor(8 * 0.9)


def test_summary_prints_a_row_per_sparse_layer():
    model = tp.sparsify(models.mlp(input_shape=(8,), num_classes=3, hidden=(6,)), tp.TinyProp())
    model(np.zeros((1, 8), "float32"))
    lines = []
    text = tp.summary(model, print_fn=lines.append)
    assert lines == [text]
    assert "fc1" in text and "logits" in text and "TinyProp(" in text
    assert len(tp.sparse_layers(model)) == 2
