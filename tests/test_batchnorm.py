"""BatchNorm modes of fine-tuning (``tinyprop_tf.batchnorm``): folded as the exported step trains it, statistics
re-estimated on the fine-tuning data (checked against a NumPy float64 forward pass), or left to Keras."""

import keras
import numpy as np
import pytest

import tinyprop_tf as tp
from tinyprop_tf import batchnorm, experiment, models


def _mlp_with_bn(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((5,))
    h = keras.layers.Dense(4, name="fc1")(x)
    h = keras.layers.BatchNormalization(name="bn1", epsilon=1e-3)(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Dense(3, name="fc2")(h)
    h = keras.layers.BatchNormalization(name="bn2", epsilon=1e-3)(h)
    model = keras.Model(x, h)
    rng = np.random.default_rng(seed)
    for bn in ("bn1", "bn2"):  # statistics and affine parameters far from the initial ones
        layer = model.get_layer(bn)
        n = layer.moving_mean.shape[0]
        layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 3, n)])
    return model


def _inputs(n=37, seed=1):
    return (np.random.default_rng(seed).normal(size=(n, 5)) * 2 + 1).astype("float32")


def test_adapted_statistics_are_those_of_the_data_one_layer_after_the_other():
    model, x = _mlp_with_bn(), _inputs()
    adapted = batchnorm.adapt_statistics(model, x, batch_size=8)  # several batches, one short
    w = {layer.name: [np.asarray(v, np.float64) for v in layer.get_weights()] for layer in model.layers}

    h1 = x.astype(np.float64) @ w["fc1"][0] + w["fc1"][1]
    mean1, var1 = h1.mean(0), h1.var(0)
    gamma1, beta1 = w["bn1"][0], w["bn1"][1]
    h = np.maximum(gamma1 * (h1 - mean1) / np.sqrt(var1 + 1e-3) + beta1, 0)  # bn1 already adapted
    h2 = h @ w["fc2"][0] + w["fc2"][1]
    got = {layer.name: layer.get_weights() for layer in adapted.layers if "bn" in layer.name}
    np.testing.assert_allclose(got["bn1"][2], mean1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["bn1"][3], var1, rtol=1e-5)
    np.testing.assert_allclose(got["bn2"][2], h2.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["bn2"][3], h2.var(0), rtol=1e-5)
    np.testing.assert_allclose(got["bn1"][0], gamma1)  # gamma, beta untouched
    assert np.array_equal(model.get_layer("bn1").get_weights()[2], w["bn1"][2].astype("float32"))  # copy only


def test_fold_keeps_the_inference_output_and_leaves_no_batchnorm():
    model, x = _mlp_with_bn(), _inputs()
    folded = batchnorm.for_finetuning(model, "fold")
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    adapted = batchnorm.for_finetuning(model, "adapt", x)
    reference = batchnorm.adapt_statistics(model, x)
    np.testing.assert_allclose(adapted.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-4,
                               atol=1e-4)
    # adapted statistics normalise the data: the last BN's output has beta's mean and gamma's spread
    gamma, beta = model.get_layer("bn2").get_weights()[:2]
    out = adapted.predict(x, verbose=0)
    np.testing.assert_allclose(out.mean(0), beta, atol=1e-3)
    np.testing.assert_allclose(out.std(0), np.abs(gamma), rtol=1e-2)


def test_train_mode_and_models_without_batchnorm_are_left_as_they_are():
    model = _mlp_with_bn()
    assert batchnorm.for_finetuning(model, "train") is model
    plain = models.mlp(input_shape=(5,), hidden=(4,), num_classes=3)
    assert batchnorm.for_finetuning(plain, "adapt", _inputs()) is plain


@pytest.mark.parametrize("call, message", [
    (lambda m: batchnorm.for_finetuning(m, "freeze"), "batchnorm must be one of ['train', 'fold', 'adapt'], got 'freeze'"),
    (lambda m: batchnorm.for_finetuning(m, "adapt"), "batchnorm='adapt' needs the fine-tuning inputs"),
    (lambda m: batchnorm.adapt_statistics(m, np.zeros((0, 5), "float32")), "needs at least one fine-tuning sample"),
])
def test_bad_requests_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(_mlp_with_bn())


def test_finetune_trains_the_folded_network_by_default(tmp_path):
    model = models.ds_cnn(input_shape=(12, 8, 1), num_classes=3, filters=4, blocks=1)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 12, 8, 1)).astype("float32"), rng.integers(0, 3, 16)
    evaluate = experiment.accuracy_evaluator(x, y)
    saved = {}
    for mode in ("fold", "train"):
        path = str(tmp_path / f"{mode}.keras")
        experiment.finetune(model, tp.DenseBackprop(), (x, y), evaluate, epochs=1, batch_size=8, batchnorm=mode,
                            save_path=path)
        saved[mode] = keras.models.load_model(path)
    kinds = {mode: {type(layer).__name__ for layer in m.layers} for mode, m in saved.items()}
    assert "BatchNormalization" not in kinds["fold"] and "BatchNormalization" in kinds["train"]
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)  # caller's untouched


@pytest.mark.parametrize("mode, has_batchnorm", [("train", True), ("fold", False), ("adapt", False)])
def test_a_comparison_runs_every_policy_in_its_batchnorm_mode(tmp_path, mode, has_batchnorm):
    model = models.ds_cnn(input_shape=(12, 8, 1), num_classes=3, filters=4, blocks=1)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 12, 8, 1)).astype("float32"), rng.integers(0, 3, 16)
    report = experiment.compare(model, {"dense": tp.DenseBackprop()}, (x, y), experiment.accuracy_evaluator(x, y),
                                str(tmp_path / mode), epochs=1, batch_size=8, batchnorm=mode, boards=[],
                                save_pretrained=True, print_fn=lambda *a: None)
    assert report["batchnorm"] == mode
    for name in ("finetuned-dense.keras", "pretrained.keras"):
        saved = keras.models.load_model(str(tmp_path / mode / name))
        found = any(isinstance(layer, keras.layers.BatchNormalization) for layer in saved.layers)
        assert found == has_batchnorm, name
