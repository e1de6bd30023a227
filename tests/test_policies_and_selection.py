"""Policies' validation, schedules' closed forms, and the selection module's two k-th-value paths."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinyprop_tf as tp
from tinyprop_tf import selection


@pytest.mark.parametrize(
    "make, param",
    [
        (lambda: tp.TinyProp(s_min=0.9, s_max=0.1), "s_min"),
        (lambda: tp.TinyProp(s_min=-0.1), "s_min"),
        (lambda: tp.TinyProp(s_max=1.5), "s_max"),
        (lambda: tp.TinyProp(zeta=0.0), "zeta"),
        (lambda: tp.TinyProp(zeta=1.2), "zeta"),
        (lambda: tp.TinyProp(s_min=float("nan")), "s_min"),
        (lambda: tp.TinyProp(rounding="ceil"), "rounding"),
        (lambda: tp.StaticTopK(0.0), "ratio"),
        (lambda: tp.StaticTopK(1.01), "ratio"),
        (lambda: tp.StaticTopK(float("nan")), "ratio"),
        (lambda: tp.StaticTopK(0.5, zeta=-1), "zeta"),
        (lambda: tp.TinyPropSkip(tau=2.0), "tau"),
        (lambda: tp.SsProp(0.0), "schedule"),
        (lambda: tp.Linear(0.2, 0.5), "p_min"),
        (lambda: tp.Constant(0.5, warmup=-1), "warmup"),
        (lambda: tp.Cosine(0.5, 0.1, period=0), "period"),
        (lambda: tp.StaticTopK("0.5"), "ratio"),
        (lambda: tp.BudgetProp(0.0), "budget"),
        (lambda: tp.BudgetProp(decay=0.0), "decay"),
        (lambda: tp.BudgetProp(min_kept=0), "min_kept"),
        (lambda: tp.BudgetProp(min_kept=1.5), "min_kept"),
        (lambda: tp.BudgetProp(cost_exponent=-1), "cost_exponent"),
        (lambda: tp.BudgetProp(skip_below=-0.5), "skip_below"),
        (lambda: tp.BudgetProp(mode="sample"), "mode"),
        (lambda: tp.BudgetProp(mode="samples", skip_below=1.5), "skip_below"),
        (lambda: tp.BudgetProp(1.0, mode="samples"), "budget < 1"),
        (lambda: tp.TinyProp(per_sample_max="yes"), "per_sample_max"),
        (lambda: tp.TinyProp(ymax_decay=1.5), "ymax_decay"),
    ],
)
def test_bad_policy_parameters_name_the_parameter(make, param):
    with pytest.raises(ValueError, match=param):
        make()


def test_policies_round_trip_through_keras_serialization():
    for policy in [
        tp.DenseBackprop(),
        tp.StaticTopK(0.3, zeta=0.5),
        tp.TinyProp(0.05, 0.8, 0.7, rounding="round"),
        tp.TinyPropSkip(0.1, 0.1, 0.9, 0.5),
        tp.SsProp(tp.Cosine(0.8, 0.2, warmup=1, interleave=True, period=7)),
        tp.TinyProp(0.1, 0.9, 0.5, per_sample_max=True, ymax_decay=0.9),
        tp.BudgetProp(0.2, decay=0.8, min_kept=2, cost_exponent=0.5, layer_ratio=0.3),
        tp.BudgetProp(1.0, skip_below=1.5),
        tp.BudgetProp(0.1, mode="samples"),
        tp.BudgetProp(0.2, mode="auto", layer_ratio=1.0, layer_mode="samples"),
    ]:
        config = keras.saving.serialize_keras_object(policy)
        again = keras.saving.deserialize_keras_object(config)
        assert again == policy and type(again) is type(policy)


def test_unknown_policy_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown back-propagation policy 'tinyprob'"):
        tp.sparsify(tp_models_mlp(), "tinyprob")


def tp_models_mlp():
    from tinyprop_tf import models

    return models.mlp(input_shape=(8,), num_classes=3, hidden=(6,))


# --- schedules: closed forms from ALGORITHMS.md section 3 -------------------------------------------------------
E = 9


@pytest.mark.parametrize("e", range(E))
def test_schedules_match_closed_forms(e):
    p, p_min = 0.8, 0.2
    assert tp.Constant(p).keep(e, E) == p
    assert tp.Linear(p, p_min).keep(e, E) == pytest.approx(max(p_min, p - (p - p_min) * e / (E - 1)))
    assert tp.Cosine(p, p_min).keep(e, E) == pytest.approx(
        p_min + 0.5 * (p - p_min) * (1 + math.cos(math.pi * e / (E - 1)))
    )
    assert tp.Bar(p, p_min).keep(e, E) == (p if e < E // 2 else p_min)


def test_schedule_priority_warmup_then_interleave_then_mode():
    s = tp.Linear(0.6, 0.2, warmup=2, interleave=True)
    keeps = [s.keep(e, 8) for e in range(8)]
    assert keeps[:2] == [1.0, 1.0]  # warm-up
    assert keeps[3] == keeps[5] == keeps[7] == 1.0  # interleaved full epochs
    assert keeps[2] == pytest.approx(0.6 - 0.4 * 2 / 7) and keeps[4] == pytest.approx(0.6 - 0.4 * 4 / 7)
    # ssProp's headline recipe: constant 0.2 with interleave averages 0.6.
    headline = tp.Constant(0.2, interleave=True)
    assert np.mean([headline.keep(e, 10) for e in range(10)]) == pytest.approx(0.6)


def test_per_iteration_schedule_uses_iteration_modulo_period():
    s = tp.Cosine(1.0, 0.0, period=5)
    for i in range(12):
        assert s.keep(epoch=0, epochs=1, iteration=i) == pytest.approx(0.5 * (1 + math.cos(math.pi * (i % 5) / 4)))


def test_single_epoch_schedule_does_not_divide_by_zero():
    assert tp.Linear(0.7, 0.1).keep(0, 1) == 0.7
    assert tp.Cosine(0.7, 0.1).keep(0, 1) == pytest.approx(0.7)


# --- selection ------------------------------------------------------------------------------------------------
def _numpy_topk_mask(scores, k):
    """Reference: stable order by (-score, index), keep the first k."""
    mask = np.zeros(scores.shape, bool)
    for n, row in enumerate(scores):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        mask[n, order[: k[n]]] = True
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_topk_mask_both_paths_match_the_stable_reference(seed):
    rng = np.random.default_rng(seed)
    batch, m = 5, [1, 2, 7, 16, 33, 64][seed]
    # Small integers: many exact ties, the hard case for deterministic tie-breaking.
    scores = rng.integers(0, 4, size=(batch, m)).astype(np.float32)
    k = rng.integers(1, m + 1, size=batch).astype(np.int32)
    expected = _numpy_topk_mask(scores, k)
    for kth in (selection.kth_largest_sorted, selection.kth_largest_pairwise):
        got = selection.topk_mask(tf.constant(scores), tf.constant(k), kth_largest=kth).numpy()
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got.sum(axis=1), k)


def test_adaptive_ratio_and_k_closed_form():
    y = np.array([0.0, 1.0, 2.5, 5.0], np.float32)
    bpr = selection.adaptive_ratio(y, np.float32(5.0), 0.1, 0.9, 0.5**2).numpy()
    d = np.float32(0.9) - np.float32(0.1)
    expected = (np.float32(0.1) + y / np.float32(5.0) * d) * np.float32(0.25)  # the module's float32 order
    np.testing.assert_array_equal(bpr, expected)
    k = selection.ratio_to_k(bpr, 40, "floor").numpy()
    np.testing.assert_array_equal(k, np.clip(np.floor(40 * bpr), 1, 40))
    assert selection.ratio_to_k(np.float32([0.0]), 10).numpy()[0] == 1  # clamped up to 1
    assert selection.ratio_to_k(np.float32([0.25]), 10, "round").numpy()[0] == 2  # 2.5 -> half to even


def test_policy_specs_from_the_command_line():
    from tinyprop_tf.policies import from_spec

    assert from_spec("dense") == tp.DenseBackprop()
    assert from_spec("static:0.2") == tp.StaticTopK(0.2)
    assert from_spec("static:ratio=0.1,zeta=0.5") == tp.StaticTopK(0.1, zeta=0.5)
    assert from_spec("budget") == tp.BudgetProp()
    assert from_spec("budget:0.1,decay=0.8,min_kept=2") == tp.BudgetProp(0.1, decay=0.8, min_kept=2)
    assert from_spec("tinyprop:per_sample_max=1") == tp.TinyProp(per_sample_max=True)
    assert from_spec("tinyprop:s_min=0.05,zeta=1,rounding=round") == tp.TinyProp(0.05, 0.9, 1.0, rounding="round")
    assert from_spec("ssprop:0.3") == tp.SsProp(tp.Constant(0.3))
    for bad, message in [("foo", "unknown policy 'foo'"), ("static:abc", "'abc' is not a number"),
                         ("static:bogus=1", "bogus"), ("static:2", "ratio must be in")]:
        with pytest.raises(ValueError, match=message):
            from_spec(bad)


def test_sample_that_sets_the_running_max_gets_a_k_independent_of_its_last_bits():
    """An exported step computes y with other summation orders, so y can differ in the last bit between Keras,
    LiteRT and TFLM. For the sample that sets the running max the ratio must not care: q = y / ymax is exactly 1,
    t = s_min + d = s_max. (The former order (y * d) / ymax gave d one ulp either side for about a fifth of all y,
    so with s_max = 1 the same sample kept M - 1 units in one runtime and M in another.)"""
    rng = np.random.default_rng(0)
    y = rng.uniform(1e-3, 1e3, 2000).astype(np.float32)
    s_min, s_max, m = 0.1, 1.0, 16
    bpr = selection.adaptive_ratio(tf.constant(y), tf.constant(y), s_min, s_max, 1.0).numpy()  # ymax = y per sample
    k = selection.ratio_to_k(bpr, m, "floor").numpy()
    np.testing.assert_array_equal(bpr, np.float32(s_min) + (np.float32(s_max) - np.float32(s_min)))
    np.testing.assert_array_equal(k, m)
    # The old order really was sensitive (so this test can tell the two apart).
    d = np.float32(s_max) - np.float32(s_min)
    old = np.float32(s_min) + (y * d) / y
    assert (np.floor(np.float32(m) * old) != m).any()


def test_policies_serialise_with_their_package_whatever_was_imported_first():
    """Policies register with Keras lazily (so that parsing a spec loads no TensorFlow): a policy serialised
    by Keras straight after importing only the policies module still carries 'tinyprop_tf>' and round-trips."""
    import subprocess
    import sys

    program = (
        "import sys\n"
        "from tinyprop_tf.policies import DenseBackprop, SsProp, TinyProp\n"
        "from tinyprop_tf.schedules import Linear\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "assert repr(TinyProp()) and TinyProp() == TinyProp() and 'keras' not in sys.modules\n"
        "import keras\n"
        "for policy in (TinyProp(0.2, 0.8), DenseBackprop(), SsProp(Linear(0.5, 0.1))):\n"
        "    config = keras.saving.serialize_keras_object(policy)\n"
        "    assert config['registered_name'] == 'tinyprop_tf>' + type(policy).__name__, config\n"
        "    assert keras.saving.deserialize_keras_object(config) == policy\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr[-2000:]


def test_allot_budget_closed_forms():
    """The demo MLP's dense backward MACs per sample (fc1 dW only: 784*32; fc2 2*32*16; logits 2*16*10)."""
    from tinyprop_tf.policies import allot_budget

    costs = [784 * 32, 2 * 32 * 16, 2 * 16 * 10]
    shares = allot_budget(costs, 1 / 6, 1.0)
    # cheap layers dense, fc1 pays the rest: 25088 r + 1344 = 26432 / 6
    assert shares[1:] == [1.0, 1.0]
    assert shares[0] == pytest.approx((sum(costs) / 6 - 1344) / 25088, rel=1e-9)
    assert allot_budget(costs, 0.3, 0.0) == pytest.approx([0.3] * 3)  # exponent 0: one ratio everywhere
    # exponent 1 and every share below 1: the same MACs per layer, a / C * C = a
    even = allot_budget([100.0, 400.0], 0.1, 1.0)
    assert even[0] * 100 == pytest.approx(even[1] * 400) and even[0] * 100 + even[1] * 400 == pytest.approx(50)
    assert allot_budget([0.0, 10.0], 0.5, 1.0) == pytest.approx([1.0, 0.5])  # a layer whose backward never runs
    assert allot_budget([5.0, 7.0], 1.0, 1.0) == [1.0, 1.0]


def test_budgetprop_shares_follow_the_model_and_the_trainable_set():
    from tinyprop_tf import models

    model = models.mlp()  # 784-32-16-10, as the demo
    sparse = tp.sparsify(model, tp.BudgetProp(1 / 6), verbose=False)
    shares = {layer.name: layer.policy.layer_ratio for layer in tp.sparse_layers(sparse)}
    assert shares["fc2"] == shares["logits"] == 1.0
    assert shares["fc1"] == pytest.approx((26432 / 6 - 1344) / 25088, rel=1e-9)
    # the rule each layer hands every runtime
    rule = sparse.get_layer("fc1").policy.rule(2)
    assert (rule.s_min, rule.s_max, rule.zeta_pow, rule.reference, rule.decay) == (0.0, shares["fc1"], 1.0,
                                                                                   "mean", 0.9)
    dense_rule = sparse.get_layer("logits").policy.rule(0)
    assert (dense_rule.s_min, dense_rule.s_max) == (1.0, 1.0)
    # Train the last two only: fc1 costs nothing, fc2 loses its dx; the budget now falls on fc2 and logits.
    tp.train_last(sparse, 2)
    shares = {layer.name: layer.policy.layer_ratio for layer in tp.sparse_layers(sparse)}
    cost_fc2, cost_logits = 32 * 16, 2 * 16 * 10
    assert shares["fc1"] == 1.0
    assert cost_fc2 * shares["fc2"] + cost_logits * min(1.0, shares["logits"]) == pytest.approx(
        (cost_fc2 + cost_logits) / 6, rel=1e-9)
    # the model's policy (what export and reports name) is the user's, without a layer's share
    assert {repr(layer.policy.model_policy()) for layer in tp.sparse_layers(sparse)} == {repr(tp.BudgetProp(1 / 6))}


def test_budgetprop_auto_spends_on_whole_samples_where_the_cost_is_spread_over_a_chain():
    from tinyprop_tf import models

    # the DS-CNN trained whole: its backward cost spread over 9 layers (effective number 7) -> whole samples
    ds_cnn = tp.sparsify(models.ds_cnn(input_shape=(49, 13, 1), num_classes=10, filters=32), tp.BudgetProp(),
                         verbose=False)
    layers = tp.sparse_layers(ds_cnn)
    assert {(layer.policy.layer_mode, layer.policy.layer_ratio) for layer in layers} == {("samples", 1.0)}
    nearest = layers[-1].policy.rule(0)  # the logits: the quantile that passes a share 0.15 of the samples
    assert (nearest.reference, nearest.skip_below, nearest.quantile_share, nearest.s_min, nearest.s_max) == (
        "quantile", 1.0, 0.15, 1.0, 1.0)
    deeper = layers[0].policy.rule(3)  # what passes back-propagates densely
    assert (deeper.s_min, deeper.s_max, deeper.skip_below, deeper.reference) == (1.0, 1.0, 0.0, "mean")
    # its last two layers only: the pointwise conv holds 99.6 % of the cost -> per entry again
    tp.train_last(ds_cnn, 2)
    modes = {layer.policy.layer_mode for layer in tp.sparse_layers(ds_cnn)}
    assert modes == {"entries"}
    # a model one layer dominates: per entry, the shares of allot_budget
    mlp = tp.sparsify(models.mlp(), tp.BudgetProp(), verbose=False)
    assert {layer.policy.layer_mode for layer in tp.sparse_layers(mlp)} == {"entries"}
    # the effective number of layers, (sum C)^2 / sum C^2, against the threshold; skip_below or budget 1 keep
    # the user's per-entry form; an explicit mode is kept whatever the costs
    policy = tp.BudgetProp()
    assert policy.chosen_mode([1.0] * 4) == "samples" and policy.chosen_mode([1.0] * 3 + [0.0]) == "entries"
    assert policy.chosen_mode([5.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == "entries"  # 100 / 30 = 3.3 layers
    assert tp.BudgetProp(1.0, skip_below=1.5).chosen_mode([1.0] * 9) == "entries"
    assert tp.BudgetProp(1.0).chosen_mode([1.0] * 9) == "entries"
    assert tp.BudgetProp(mode="samples").chosen_mode([1.0]) == "samples"
    assert tp.BudgetProp(mode="entries").chosen_mode([1.0] * 9) == "entries"
    assert tp.policies.from_spec("budget:0.2,mode=samples") == tp.BudgetProp(0.2, mode="samples")
    # and says so in words (finetune prints it under the comparison)
    assert policy.choice_text([1.0] * 4).startswith("spends its budget on whole samples")
    assert "over 4.0 effective layers (auto: whole samples from 4" in policy.choice_text([1.0] * 4)
    assert tp.BudgetProp(mode="entries").choice_text([1.0] * 9).endswith("over 9.0 effective layers (mode entries)")


def test_budgetprop_samples_threshold_settles_where_the_budget_share_passes():
    """The running quantile against the closed form: errors drawn i.i.d. from an exponential distribution of mean
    1, whose level that a share s reaches is -ln(s); the share that passed, over the steps after the start."""
    rule = tp.BudgetProp(0.15, mode="samples").rule(0)
    rng = np.random.default_rng(0)
    state, passed = tf.constant(selection.YMAX_INIT), []
    for _ in range(400):
        y = tf.constant(rng.exponential(size=32).astype(np.float32))
        chosen = selection.select(tf.ones([32, 4]), y, state, rule)
        state = chosen.ymax
        passed.append(float(np.mean(chosen.active.numpy())))
    assert np.mean(passed[100:]) == pytest.approx(0.15, abs=0.02)
    assert float(state) == pytest.approx(-np.log(0.15), rel=0.15)
    assert set(chosen.k.numpy().tolist()) == {4}  # k = M: the samples that pass keep everything


def test_budgetprop_ratio_is_the_share_times_the_error_over_the_running_mean():
    rule = tp.BudgetProp(0.25, decay=0.5, layer_ratio=0.25).rule(0)
    y = tf.constant([1.0, 2.0, 3.0, 10.0])
    state, per_sample = selection.update_reference(selection.YMAX_INIT, y, rule)  # first step: the batch mean
    assert float(state) == 4.0
    chosen = selection.select(tf.ones([4, 8]) * y[:, None], y, selection.YMAX_INIT, rule)
    # bpr = 0.25 * y / 4; k = clamp(floor(8 * bpr), 1, 8): 0.5 -> 1, 1 -> 1, 1.5 -> 1, 5 -> 5
    np.testing.assert_allclose(chosen.bpr.numpy(), [0.0625, 0.125, 0.1875, 0.625])
    assert chosen.k.numpy().tolist() == [1, 1, 1, 5]
    state, _ = selection.update_reference(state, tf.constant([0.0, 0.0, 0.0, 4.0]), rule)  # then decayed
    assert float(state) == 0.5 * 4.0 + 0.5 * 1.0


def test_per_sample_max_is_the_aifes_order():
    rule = tp.TinyProp(0.0, 1.0, 1.0, per_sample_max=True).rule(0)
    state, per_sample = selection.update_reference(2.0, tf.constant([1.0, 4.0, 3.0, 8.0]), rule)
    assert per_sample.numpy().tolist() == [2.0, 4.0, 4.0, 8.0] and float(state) == 8.0
    batch_rule = tp.TinyProp(0.0, 1.0, 1.0).rule(0)
    assert float(selection.update_reference(2.0, tf.constant([1.0, 4.0, 3.0, 8.0]), batch_rule)[1]) == 8.0
