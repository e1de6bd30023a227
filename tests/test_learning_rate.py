"""``experiment.choose_learning_rate`` (``tinyprop finetune --learning-rate auto``): the rate is chosen on held-out
fine-tuning samples, by the best mean score over the policies, and the test split is never read."""

import keras
import numpy as np
import pytest

import tinyprop_tf as tp
from tinyprop_tf import experiment


def _problem(seed=0, n=160):
    """Two well-separated Gaussian classes in 8 dimensions and a pretrained-looking model that knows nothing."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype("int32")
    x = (rng.normal(size=(n, 8)) + 2.5 * (2 * y[:, None] - 1) * rng.choice([-1, 1], 8)[None, :]).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu", name="fc1"),
                              keras.layers.Dense(2, name="logits")])
    return model, (x, y)


def test_the_held_out_split_is_a_seeded_partition():
    x = np.arange(40, dtype="float32")[:, None]
    y = np.arange(40)
    (xa, ya), (xb, yb) = experiment.held_out_split((x, y), 0.25, seed=3)
    assert len(xb) == 10 and len(xa) == 30
    assert sorted(np.concatenate([ya, yb]).tolist()) == list(range(40)) and not set(ya) & set(yb)
    assert np.array_equal(xa[:, 0], ya) and np.array_equal(xb[:, 0], yb)  # x and y stay paired
    assert not np.array_equal(experiment.held_out_split((x, y), 0.25, seed=4)[1][1], yb)
    with pytest.raises(ValueError, match=r"^validation: 0.01 of 40 fine-tuning samples holds out 0"):
        experiment.held_out_split((x, y), 0.01)


def test_the_rate_with_the_best_mean_held_out_score_is_chosen_and_the_scores_are_the_held_out_ones():
    model, train = _problem()
    policies = {"dense": tp.DenseBackprop(), "static": tp.StaticTopK(0.5)}
    lines = []
    chosen = experiment.choose_learning_rate(model, policies, train, rates=(1e-6, 0.05), epochs=3, batch_size=16,
                                             seed=1, print_fn=lines.append)
    scores = chosen["validation"]
    assert chosen["held_out"] == 40 and set(scores) == set(policies)
    means = [np.mean([scores[name][i] for name in policies]) for i in range(2)]
    assert chosen["mean"] == pytest.approx(means)
    # 1e-6 leaves the untrained model as it is; 0.05 separates two Gaussians 5 std apart
    assert chosen["learning_rate"] == 0.05 and means[1] > means[0] + 0.2
    # the recorded score is the held-out accuracy of the same run, fine-tuned on the other 120 samples only
    rest, (x_held, y_held) = experiment.held_out_split(train, 0.25, seed=1)
    run = experiment.finetune(model, tp.StaticTopK(0.5), rest, experiment.accuracy_evaluator(x_held, y_held),
                              learning_rate=0.05, epochs=3, batch_size=16, seed=1)
    assert run.final_metric == pytest.approx(scores["static"][1])
    assert lines == [f"Learning rate chosen on 40 held-out fine-tuning samples (accuracy, mean over 2 policies): "
                     f"1e-06: {means[0]:.3f}, 0.05: {means[1]:.3f} -> 0.05"]


def test_equal_scores_choose_the_smaller_rate_and_an_autoencoder_is_scored_by_its_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, use_bias=False, name="fc1")])
    chosen = experiment.choose_learning_rate(model, {"dense": tp.DenseBackprop()}, (x, x), rates=(1e-12, 2e-12),
                                             loss="mse", epochs=1, batch_size=16, print_fn=lambda line: None)
    assert chosen["metric"] == "minus mean squared error"
    # both rates move no weight by half an ulp (Adam's step is about the rate): the same score, the smaller rate
    (_, _), (held, _) = experiment.held_out_split((x, x), 0.25, seed=0)
    error = -float(np.mean((model.predict(held, verbose=0) - held) ** 2))
    assert chosen["validation"]["dense"][0] == chosen["validation"]["dense"][1] == pytest.approx(error, rel=1e-6)
    assert chosen["learning_rate"] == 1e-12
