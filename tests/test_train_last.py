"""``train_last``: the last N affine layers train, the prefix is frozen (forward only, no backward), in Keras, in the
accounting, in the CLI's checks and in the exported step."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import tinyprop_tf as tp
from tinyprop_tf import layers as layers_lib
from tinyprop_tf import models, trainable


def _mlp():
    return models.mlp(input_shape=(6,), hidden=(5, 4), num_classes=3)  # fc1 6x5, fc2 5x4, logits 4x3


def _data(n=40, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), rng.integers(0, classes, n).astype("int32")


def test_affine_type_names_are_the_layer_classes_sparsify_converts():
    assert set(trainable.AFFINE_LAYER_TYPES) == {cls.__name__ for cls in layers_lib.SPARSE_COUNTERPART}


def test_last_n_affine_layers_train_with_the_batchnorm_after_each():
    model = models.ds_cnn(input_shape=(20, 10, 1), filters=8, blocks=2)
    assert [layer.name for layer in trainable.affine_layers(model)] == ["conv0", "dw1", "pw1", "dw2", "pw2", "logits"]
    assert trainable.train_last(model, 3) == ["dw2", "dw2_bn", "pw2", "pw2_bn", "logits"]
    trained = {layer.name for layer in model.layers if layer.trainable_weights}
    assert trained == {"dw2", "dw2_bn", "pw2", "pw2_bn", "logits"}
    assert not model.get_layer("pw1_bn").trainable and not model.get_layer("conv0").trainable
    trainable.train_last(model, 6)  # all again
    assert all(layer.trainable for layer in model.layers if layer.weights)


@pytest.mark.parametrize("n", [0, -1, 4, True, 1.5, "2"])
def test_a_train_last_outside_the_model_is_one_line_naming_value_and_range(n):
    with pytest.raises(ValueError) as error:
        trainable.train_last(_mlp(), n)
    assert str(error.value) == ("train_last must be an integer from 1 to 3 (the number of Dense/Conv1D/Conv2D/"
                                f"DepthwiseConv2D layers of model 'mlp'), got {n!r}")


def test_frozen_prefix_keeps_its_weights_and_runs_no_backward():
    x, y = _data()
    model = tp.sparsify(_mlp(), tp.TinyProp(), verbose=False)
    trainable.train_last(model, 2)
    assert [layer.needs_input_grad for layer in tp.sparse_layers(model)] == [False, False, True]
    before = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in model.layers}
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[tp.UpdateSparsity()])
    fc1, fc2 = model.get_layer("fc1"), model.get_layer("fc2")
    for old, new in zip(before["fc1"][:2], fc1.weights[:2], strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    assert not np.array_equal(before["fc2"][0], fc2.kernel.numpy())
    # The frozen layer's backward never ran: its running maximum and its own counters are untouched.
    assert float(fc1.sparsity_state.ymax.numpy()) == pytest.approx(1e-30)
    assert not np.any(fc1.sparsity_state.sums.numpy())
    assert fc2.sparsity_state.sums.numpy()[1] == 2 * len(x)  # samples


@pytest.mark.parametrize("policy, keep", [(tp.DenseBackprop(), {"fc2": 4, "logits": 3}),
                                          (tp.StaticTopK(0.5), {"fc2": 2, "logits": 1})])
def test_accounting_of_a_frozen_prefix_matches_the_closed_form(policy, keep):
    x, y = _data()
    samples = len(x)
    # Linear layers: no sample's error is ever exactly zero (a dead ReLU would make it cost nothing).
    linear = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="fc1"), keras.layers.Dense(4, name="fc2"),
                               keras.layers.Dense(3, name="logits")])
    model = tp.sparsify(linear, policy, verbose=False)
    trainable.train_last(model, 2)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stats = tp.BackpropStats()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[tp.UpdateSparsity(), stats])
    rows = stats.epochs[0]["layers"]
    # fc1 (6x5) frozen: forward only. fc2 (5x4) trains but needs no dx. logits (4x3): dW and dx.
    assert rows["fc1"]["frozen"] and not rows["fc2"]["frozen"]
    assert [rows[n]["fwd_macs"] for n in ("fc1", "fc2", "logits")] == [samples * 30, samples * 20, samples * 12]
    assert [rows[n]["bwd_macs_dense"] for n in ("fc1", "fc2", "logits")] == [0, samples * 4 * 5, samples * 3 * 4 * 2]
    assert [rows[n]["bwd_macs_sparse"] for n in ("fc1", "fc2", "logits")] == [
        0, samples * keep["fc2"] * 5, samples * keep["logits"] * 4 * 2]
    totals = stats.epochs[0]["totals"]
    assert totals["fwd_macs"] == samples * (30 + 20 + 12)
    assert totals["bwd_macs_dense"] == samples * (20 + 24)


def test_finetune_reports_the_frozen_layers_apart(tmp_path):
    from tinyprop_tf import experiment

    x, y = _data(n=32)
    pretrained = _mlp()
    result = experiment.finetune(pretrained, tp.TinyProp(), (x, y), experiment.accuracy_evaluator(x, y), epochs=1,
                                 batch_size=8, train_last=1)
    assert result.frozen_layers == ["fc1", "fc2"] and list(result.layers) == ["logits"]
    assert result.bwd_macs_dense == [32 * 3 * 4]  # the logits' dW only: nothing before it trains
    assert all(layer.trainable for layer in pretrained.layers)  # the caller's model is left alone
    assert result.notes == []  # TinyProp chooses nothing per model
    # BudgetProp says how it spends its budget on what trains: the logits alone are one layer, per entry
    result = experiment.finetune(pretrained, tp.BudgetProp(), (x, y), experiment.accuracy_evaluator(x, y),
                                 epochs=1, batch_size=8, train_last=1, name="budget")
    assert result.notes == ["budget: BudgetProp spends its budget per entry (shared out by layer cost); the backward "
                            "cost spreads over 1.0 effective layers (auto: whole samples from 4 effective layers)"]


@pytest.mark.slow
def test_export_of_the_last_n_has_exactly_their_weights_as_variables(tmp_path):
    from tinyprop_tf.converters import export_training_model

    model = models.ds_cnn(input_shape=(12, 8, 1), num_classes=4, filters=4, blocks=2)
    trainable.train_last(model, 2)  # pw2 (with pw2_bn folded into it) and logits
    manifest = export_training_model(model, tp.TinyProp(), batch_size=2, out_dir=str(tmp_path / "e"),
                                     measure_arena=False)
    assert [w["path"] for w in manifest["weights"]] == ["pw2/kernel", "pw2/bias", "logits/kernel", "logits/bias"]
    weight_vars = {w["name"] for w in manifest["weights"]}
    assert weight_vars <= set(manifest["tflm"]["variables"])
    others = set(manifest["tflm"]["variables"]) - weight_vars
    assert all(("ymax" in v or "iterations" in v) for v in others), others  # no frozen weight is a variable
    layers = {row["name"]: row for row in manifest["layers"]}
    assert [name for name, row in layers.items() if row["trainable"]] == ["pw2", "logits"]
    assert not layers["pw2"]["needs_input_grad"] and layers["logits"]["needs_input_grad"]


def test_cli_checks_train_last_against_a_keras_file_before_tensorflow(tmp_path, no_tensorflow):
    path = tmp_path / "m.keras"
    _mlp().save(path)
    for args, expected in [
        (["--train-last", "4"], "--train-last: train_last must be an integer from 1 to 3 (the number of "
                                f"Dense/Conv1D/Conv2D/DepthwiseConv2D layers of {path}), got 4"),
        (["--train-last", "0"], "argument --train-last: expected an integer >= 1, got 0"),
        (["--board", "arduino"], "--board: unknown board 'arduino'; valid boards: esp32s3, esp32c3, nrf52840dk"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "export", str(path), "--out",
                               str(tmp_path / "o"), *args], capture_output=True, text=True, timeout=120,
                              env=no_tensorflow)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert expected in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "finetune", "--data", str(tmp_path), "--task",
                           "mnist", "--model", str(path), "--train-last", "9", "--board", "nrf52840dk"],
                          capture_output=True, text=True, timeout=120, env=no_tensorflow)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "got 9" in proc.stderr, proc.stderr


# --- board planning (converters/planning.py) ---------------------------------------------------------------------
def test_the_plan_exports_with_the_first_selecting_policy():
    from tinyprop_tf.converters import planning

    from tinyprop_tf.policies import from_spec

    specs = lambda *names: [from_spec(name) for name in names]  # noqa: E731
    assert planning.planning_policy(specs("dense", "static:0.2", "tinyprop")) == tp.StaticTopK(0.2)
    assert planning.planning_policy(specs("dense")) == tp.DenseBackprop()
    assert planning.planning_policy(specs("ssprop:0.5")) == tp.TinyProp()  # not exportable: the default


@pytest.mark.slow
def test_export_board_plans_which_sets_and_batches_fit(tmp_path):
    path = tmp_path / "m.keras"
    models.mlp(input_shape=(16,), hidden=(8, 8), num_classes=4).save(path)
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "export", str(path), "--out", str(tmp_path / "o"),
                           "--train-last", "2", "--batch-size", "4", "--board", "nrf52840dk"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((tmp_path / "o" / "plan.json").read_text())
    assert plan["board"] == "nrf52840dk" and plan["usable_ram_bytes"] == 256 * 1024 and plan["fits"]
    assert [(row["train_last"], row["largest_batch"]) for row in plan["rows"]] == [(1, 32), (2, 32), (3, 32)]
    ram = {(m["n"], m["batch"]): m for m in plan["measured"]}
    assert plan["requested"]["n"] == 2 and plan["requested"]["batch"] == 4 and (2, 4) in ram
    fast = plan["arena_source"].startswith("train_fast.tflite measured in tinyprop_tflm_runner")
    assert fast or plan["arena_source"].startswith("train.tflite measured in the pip tflite-micro interpreter")
    for m in plan["measured"]:
        assert m["ram_bytes"] == sum(m["ram"].values()) and m["arena_bytes"] > 0
        assert m["arena_source"] == ("train_fast.tflite" if fast else "train.tflite")
    assert ram[(1, 32)]["ram_bytes"] < ram[(3, 32)]["ram_bytes"]  # a frozen prefix needs less
    # Once the last 1 fits batch 32, a larger set is tried there first: one export each.
    assert sorted(ram) == [(1, 4), (1, 16), (1, 32), (2, 4), (2, 32), (3, 32)]
    assert "Board plan for nrf52840dk" in proc.stdout and "up to the last 3 layer(s) at batch 32" in proc.stdout
    assert "plan: nrf52840dk: last 1, batch 4" in proc.stderr  # progress


def test_a_set_whose_weights_alone_exceed_the_board_is_not_exported():
    from tinyprop_tf.converters import planning

    model = models.mlp(input_shape=(4,), hidden=(8,), num_classes=10_000)  # logits kernel: 320,000 B
    plan = planning.plan_board(model, "nrf52840dk", tp.TinyProp(), optimizer="adam", progress=lambda message: None)
    assert not plan["fits"] and plan["measured"] == [] and plan["smallest_need_bytes"] is None
    assert [row["state_lower_bound_bytes"] for row in plan["rows"]] == [8 * 10_000 * 4 * 3, (4 * 8 + 8 * 10_000) * 12]
    assert "NOTHING FITS nrf52840dk: the last layer's kernel and optimizer slots alone take 960,000 B" in plan["text"]


@pytest.mark.slow
def test_a_plan_where_nothing_fits_gives_the_smallest_need_measured():
    from tinyprop_tf.converters import planning

    # The logits' kernel (250,880 B) is under the 256 KiB, its step with the stack is not; fc1's kernel alone is
    # 1 MB (a frozen layer's kernel stays in flash: it costs no RAM).
    model = models.mlp(input_shape=(784,), hidden=(320,), num_classes=196)
    plan = planning.plan_board(model, "nrf52840dk", tp.TinyProp(), progress=lambda message: None)
    assert not plan["fits"]
    assert plan["rows"][1]["largest_batch"] is None and plan["rows"][1]["state_lower_bound_bytes"] == (784 * 320 + 320 * 196) * 4
    assert {m["n"] for m in plan["measured"]} == {1}  # the last 2 was not exported
    smallest = min(m["ram_bytes"] for m in plan["measured"])
    assert plan["smallest_need_bytes"] == smallest > 256 * 1024
    assert f"NOTHING FITS nrf52840dk: the smallest step (last 1, batch 1) needs {smallest:,} B" in plan["text"]
    assert all(layer.trainable for layer in model.layers)  # flags restored


@pytest.mark.slow
def test_finetune_cli_trains_the_last_n_and_plans_the_board(tmp_path, tiny_mnist):
    data, model = tiny_mnist  # a 784-8-10 MLP: fc1, logits
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "finetune", "--data", data, "--task", "mnist",
                           "--model", model, "--policy", "dense", "--policy", "tinyprop", "--epochs", "1",
                           "--train-last", "1", "--board", "nrf52840dk", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True
    assert report["train_last"] == {"n": 1, "trained_layers": ["logits"], "frozen_layers": ["fc1"]}
    for run in report["runs"]:
        assert run["frozen_layers"] == ["fc1"] and list(run["layers"]) == ["logits"]
        assert run["bwd_macs_dense"] == [128 * 10 * 8]  # 128 samples, the logits' dW only
    plan = report["board_plan"]
    assert plan["board"] == "nrf52840dk" and [row["train_last"] for row in plan["rows"]] == [1, 2]
    assert plan["policy"].startswith("TinyProp")
    assert "Training the last 1 affine layer(s) (logits); frozen, forward only: fc1" in proc.stdout
    assert "Board plan for nrf52840dk" in proc.stdout and "--train-last 1: fits" in proc.stdout
    # --learning-rate auto (the default): each policy at each rate on the 96 samples kept, scored on the 32 held out
    from tinyprop_tf._validate import AUTO_LEARNING_RATES

    chosen = report["learning_rate"]["chosen_on_held_out_samples"]
    assert chosen["held_out"] == 32 and chosen["rates"] == list(AUTO_LEARNING_RATES)
    assert set(chosen["validation"]) == {"dense", "tinyprop"}
    means = [np.mean([scores[i] for scores in chosen["validation"].values()]) for i in range(len(chosen["rates"]))]
    best = max(means)
    assert report["learning_rate"]["value"] == chosen["rates"][means.index(best)]  # ties: the smaller (first)
    assert "Learning rate chosen on 32 held-out fine-tuning samples (accuracy, mean over 2 policies)" in proc.stdout


def test_demo_refuses_a_train_last_beyond_its_mlp_before_any_work(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "demo", "--train-last", "4", "--out",
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.endswith(
        "tinyprop demo: error: --train-last: train_last must be an integer from 1 to 3 (the number of Dense/Conv1D/Conv2D/"
        "DepthwiseConv2D layers of model 'mlp'), got 4\n"), proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_the_plan_falls_back_to_a_recomputed_block_where_the_batched_step_does_not_fit():
    """DS-CNN KWS at batch 4 on the nRF52840: the last layer fits as exported; the last 2 (pw4 trained) do not
    (over 500 KB of arena) but fit with pw4's block recomputed, and the plan says to export with --recompute; the
    last 3 (dw4 first: no such block) fit neither way."""
    from _build import runner_or_skip

    from tinyprop_tf.converters import planning

    runner_or_skip()
    keras.utils.set_random_seed(0)
    messages = []
    plan = planning.plan_board(models.ds_cnn(), "nrf52840dk", tp.TinyProp(0.1, 0.9, 0.5), batches=(4,),
                               progress=messages.append)
    rows = {row["train_last"]: row for row in plan["rows"]}
    assert rows[1]["largest_batch"] == 4 and not rows[1]["recompute"]
    assert rows[2]["largest_batch"] == 4 and rows[2]["recompute"] and rows[2]["arena_bytes"] <= 200_000
    assert rows[3]["largest_batch"] is None and rows[3]["smallest_ram_bytes"] > 256 * 1024
    assert "(export --recompute)" in plan["text"] and "last 2, batch 4: arena" in " ".join(messages)
    assert [m["recompute"] for m in plan["measured"]] == [False, True, False]
