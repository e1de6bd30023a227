"""train_fast.tflite: the exported step with the TinyProp TFLM custom operators.

Always (CI): the graph's structure — the placeholders became exactly the TinyProp ops with static shapes, every
other op is a TFLM builtin, one selection and one backward op per sparse Dense layer, dx skipped where nothing
needs it — and the refusals. With a TFLM tree (``TINYPROP_TFLM_DIR``, e.g. the ESP-IDF component
esp-tflite-micro) or a built runner (``TINYPROP_TFLM_RUNNER``): the fast step runs in that TFLM for 10 steps and
matches Keras (loss, weights, inference output, per-sample k). ``make test`` builds the runner from
``../shared/tflm/esp-tflite-micro`` when it is beside the checkout, as in CI, where a missing runner then fails
these tests instead of skipping them; without a tree they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from _build import runner_or_skip

import tinyprop_tf as tp
from tinyprop_tf import models
from tinyprop_tf.converters import (artifacts, device_ops, export_training_model, flatbuffer, tflm_host_runner,
                                    verification)
from tinyprop_tf.converters.graph import ExportError
from tinyprop_tf.converters.verification import verify

CASES = {
    "mlp_tinyprop_sgd": (lambda: models.mlp(input_shape=(20,), num_classes=5, hidden=(16, 12)),
                         lambda: tp.TinyProp(0.1, 0.9, 0.5), "sgd", "sparse_categorical_crossentropy"),
    "mlp_static_adam": (lambda: models.mlp(input_shape=(20,), num_classes=5, hidden=(16,)),
                        lambda: tp.StaticTopK(0.3), "adam", "sparse_categorical_crossentropy"),
    "autoencoder_tinyprop_mse": (lambda: models.autoencoder(input_dim=24, hidden=(12, 4)),
                                 lambda: tp.TinyProp(0.2, 0.8, 0.7, rounding="round"), "sgd", "mse"),
    "cnn_tinyprop_sgd": (lambda: models.small_cnn(input_shape=(12, 12, 1), num_classes=4, filters=(6, 8)),
                         lambda: tp.TinyProp(0.1, 0.9, 0.5), "sgd", "sparse_categorical_crossentropy"),
    "ds_cnn_tinyprop_adam": (lambda: models.ds_cnn(input_shape=(16, 8, 1), num_classes=4, filters=8, blocks=2),
                             lambda: tp.TinyProp(0.1, 0.9, 0.5), "adam", "sparse_categorical_crossentropy"),
    "conv1d_static_sgd": (lambda: models.conv1d_net(input_shape=(16, 5), num_classes=3, filters=(6, 8)),
                          lambda: tp.StaticTopK(0.4), "sgd", "sparse_categorical_crossentropy"),
    # the project's own policy: a share per layer, a decaying max and a floor on k, all in the select ops' params
    "mlp_budget_adam": (lambda: models.mlp(input_shape=(40,), num_classes=5, hidden=(16, 12)),
                        lambda: tp.BudgetProp(0.25, decay=0.5, min_kept=2), "adam",
                        "sparse_categorical_crossentropy"),
    "conv1d_budget_sgd": (lambda: models.conv1d_net(input_shape=(16, 5), num_classes=3, filters=(6, 8)),
                          lambda: tp.BudgetProp(0.3, decay=0.7), "sgd", "sparse_categorical_crossentropy"),
    # dense back-propagation of the samples whose output error is at least the running mean only
    "mlp_budget_skip_sgd": (lambda: models.mlp(input_shape=(40,), num_classes=5, hidden=(16, 12)),
                            lambda: tp.BudgetProp(1.0, skip_below=1.0), "sgd", "sparse_categorical_crossentropy"),
    "conv1d_budget_skip_adam": (lambda: models.conv1d_net(input_shape=(16, 5), num_classes=3, filters=(6, 8)),
                                lambda: tp.BudgetProp(0.3, decay=0.7, skip_below=0.8), "adam",
                                "sparse_categorical_crossentropy"),
    # whole samples (the running quantile at the logits), the DS-CNN's choice
    "ds_cnn_budget_samples_adam": (lambda: models.ds_cnn(input_shape=(16, 8, 1), num_classes=4, filters=8, blocks=2),
                                   lambda: tp.BudgetProp(0.4, mode="samples"), "adam",
                                   "sparse_categorical_crossentropy"),
    # a frozen prefix (all but the logits): its forward runs sample by sample
    "ds_cnn_last1_tinyprop_sgd": (lambda: _last(models.ds_cnn(input_shape=(24, 10, 1), num_classes=4, filters=16,
                                                              blocks=1), 1),
                                  lambda: tp.TinyProp(0.1, 0.9, 0.5), "sgd", "sparse_categorical_crossentropy"),
}


def _last(model, n):
    tp.train_last(model, n)
    return model
SELECT_OPS = (device_ops.SELECT_UNITS, device_ops.SELECT_CHANNELS)
BACKWARD_OPS = {"dense": device_ops.DENSE_BACKWARD, "conv2d": device_ops.CONV2D_BACKWARD,
                "conv1d": device_ops.CONV2D_BACKWARD, "depthwise": device_ops.DEPTHWISE_BACKWARD}


def backward_op(kind, optimizer):
    """Plain SGD (what every "sgd" case uses) runs fused into the Dense backward."""
    return device_ops.DENSE_BACKWARD_SGD if (kind, optimizer) == ("dense", "sgd") else BACKWARD_OPS[kind]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            build, policy, opt, loss = CASES[name]
            keras.utils.set_random_seed(0)  # the same initial weights whatever ran before in this worker
            out = tmp_path_factory.mktemp(name)
            manifest = export_training_model(build(), policy(), opt, 0.05, loss=loss, batch_size=4, out_dir=str(out),
                                             measure_arena=False, fast=True)
            cache[name] = (str(out), manifest)
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_graph_has_the_tinyprop_ops_with_static_shapes_and_tflm_builtins_otherwise(exported, name):
    out, manifest = exported(name)
    with open(os.path.join(out, "train_fast.tflite"), "rb") as f:
        model = flatbuffer.load(f.read())
    ops = flatbuffer.ops_used(model)
    all_sparse = [layer for layer in manifest["layers"] if layer.get("sparse")]
    assert len(all_sparse) == len(manifest["sparse_layers"]) > 0
    # the sparse layers whose backward runs (a frozen prefix has none: no selection, no backward op)
    sparse = [layer for layer in all_sparse if layer.get("trainable", True) or layer.get("needs_input_grad")]
    n_units = sum(layer["kind"] == "dense" for layer in sparse)
    assert ops.get("CUSTOM:" + device_ops.SELECT_UNITS, 0) == n_units
    assert ops.get("CUSTOM:" + device_ops.SELECT_CHANNELS, 0) == len(sparse) - n_units
    expected = [backward_op(layer["kind"], CASES[name][2]) for layer in sparse]
    for op in set(BACKWARD_OPS.values()) | {device_ops.DENSE_BACKWARD_SGD}:
        assert ops.get("CUSTOM:" + op, 0) == expected.count(op), op
    others = [op for op in ops if op.startswith("CUSTOM:") and op[7:] not in device_ops.DEVICE_OPS]
    assert not others  # no EagerPyFunc / EnsureShape left
    assert not [op for op in flatbuffer.non_tflm_ops(model) if not op.startswith("CUSTOM:TINYPROP_")]
    assert ops == manifest["tflm_fast"]["ops"]
    # The training state in place: one subgraph, no IF (it would copy x and frozen constants into the branch),
    # no resource variables, no initialiser.
    assert len(model.subgraphs) == 1
    assert not set(ops) & {"IF", "CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}
    sg = model.subgraphs[0]
    # Same entry as train.tflite (inputs and the first outputs by name and shape), then one output per state
    # tensor: a TFLM variable tensor without data, in the manifest's state order (weights first, as weights.bin).
    with open(os.path.join(out, "train.tflite"), "rb") as f:
        plain = flatbuffer.load(f.read())
    fast_in, fast_out = flatbuffer.io_details(model, 0)
    plain_in, plain_out = flatbuffer.io_details(plain, 0)
    by_name = lambda rows: sorted((r["name"], r["shape"], r["dtype"]) for r in rows)  # noqa: E731
    assert by_name(fast_in) == by_name(plain_in)
    assert by_name(fast_out[:len(plain_out)]) == by_name(plain_out)
    state = manifest["tflm_fast"]["state"]
    assert [r["output"] for r in state] == list(range(len(plain_out), len(fast_out)))
    assert [r["name"] for r in state][:len(manifest["weights"])] == [e["name"] for e in manifest["weights"]]
    state_tensors = {int(sg.outputs[r["output"]]) for r in state}
    for t in state_tensors:
        assert sg.tensors[t].isVariable and not model.buffers[sg.tensors[t].buffer].data
    assert {sg.tensors[t].isVariable for t in range(len(sg.tensors))} == {True, False}
    # Every TinyProp op: fully static shapes, as its C++ Prepare/Eval expect; an in-place output is its input.
    batch = manifest["batch_size"]
    widths, params_held = [], []
    forwards = conv_forwards = pools = 0
    writers = {}
    for sg in model.subgraphs:
        for position, op in enumerate(sg.operators):
            name_ = flatbuffer.op_name(model.operatorCodes[op.opcodeIndex])[len("CUSTOM:"):]
            if not name_.startswith("TINYPROP_"):
                for t in op.outputs:
                    assert int(t) not in state_tensors, name_  # only TinyProp ops write state
                continue
            for out_pos, in_pos in device_ops.IN_PLACE.get(name_, {}).items():
                if out_pos < len(op.outputs) and int(op.outputs[out_pos]) in state_tensors:
                    assert int(op.inputs[in_pos]) == int(op.outputs[out_pos])
                    assert int(op.outputs[out_pos]) not in writers
                    writers[int(op.outputs[out_pos])] = position
            shapes = [list(sg.tensors[t].shape) for t in list(op.inputs) + list(op.outputs)]
            mode_inputs = [i for i, t in enumerate(op.inputs) if int(t) == int(sg.inputs[_input(fast_in, "mode")])]
            assert all(len(s) > 0 for i, s in enumerate(shapes) if i not in mode_inputs
                       and name_ != device_ops.COUNT_STEP), shapes  # no unknown (empty) shape left

            def wanted_flags(index, op=op, sg=sg):  # the constant "wanted" input: an unwanted output is [1]
                t = sg.tensors[op.inputs[index]]
                return np.frombuffer(bytes(model.buffers[t.buffer].data), np.int32).tolist()

            if name_ in SELECT_OPS:
                delta, ymax, params, mode, ymax_out, k, kept = shapes
                assert mode_inputs == [3]
                widths.append(delta[-1])
                assert delta[0] == batch and ymax == ymax_out == [1] and params == [len(device_ops.SELECT_PARAMS)]
                held = sg.tensors[op.inputs[2]]
                params_held.append(np.frombuffer(bytes(model.buffers[held.buffer].data), np.float32).tolist())
                assert k == [batch] and kept == [batch, delta[-1]]
                assert len(delta) == (2 if name_ == device_ops.SELECT_UNITS else len(delta)) >= 2
            elif name_ == device_ops.RELU_BACKWARD:
                g, out, d = shapes
                assert g == out == d and g[0] == batch
            elif name_ == device_ops.DENSE_FORWARD:
                x, w, *bias, z = shapes
                assert x[0] == batch and len(x) == len(w) == 2 and x[1] == w[0] and z == [batch, w[1]]
                assert bias in ([], [[w[1]]])
                forwards += 1
            elif name_ == device_ops.DENSE_BACKWARD:
                x, w, delta, k, kept, wanted, dw, dx, db = shapes
                want = wanted_flags(5)
                assert [dw, dx, db] == [full if f else [1] for full, f in zip((w, x, [w[1]]), want)]
                assert delta == [batch, w[1]] and kept == delta and wanted == [3]
            elif name_ == device_ops.DENSE_BACKWARD_SGD:
                x, w, delta, k, kept, wanted, lr, mode, *bias, w_new, dx, b_new = shapes
                assert mode_inputs == [7] and int(op.outputs[0]) in state_tensors
                want = wanted_flags(5)
                assert want[0] == 1 and want[2] == int(bool(bias)) and wanted == [3] and lr == [1]
                assert [w_new, dx, b_new] == [full if f else [1] for full, f in zip((w, x, [w[1]]), want)]
                assert delta == [batch, w[1]] and kept == delta and bias in ([], [[w[1]]])
            elif name_ == device_ops.APPLY_GRADIENT:
                w, g, mode, hyper, *rest = shapes
                assert mode_inputs == [2] and hyper == [7] and w == g and int(op.outputs[0]) in state_tensors
                assert len(op.outputs) == {"sgd": 1, "adam": 3}[CASES[name][2]]
            elif name_ == device_ops.COUNT_STEP:
                assert mode_inputs == [1] and int(op.outputs[0]) in state_tensors
            elif name_ == device_ops.GLOBAL_AVERAGE_POOL:
                x, out = shapes
                assert len(x) >= 3 and out[0] == x[0] in (1, batch) and out[-1] == x[-1]
                assert int(np.prod(out)) == x[0] * x[-1]
                pools += 1
            elif name_ in (device_ops.CONV2D_FORWARD, device_ops.DEPTHWISE_FORWARD):
                x, w, window, *bias, z = shapes
                out_c = w[3] if name_ == device_ops.CONV2D_FORWARD else w[2] * w[3]
                # batch 1 where a frozen prefix runs sample by sample
                assert len(x) == len(w) == len(z) == 4 and x[0] == z[0] in (1, batch) and x[3] == w[2]
                assert z[3] == out_c and window == [len(device_ops.WINDOW_PARAMS)] and bias in ([], [[out_c]])
                conv_forwards += 1
            else:
                x, w, delta, k, kept, window, wanted, dw, dx, db = shapes
                want = wanted_flags(6)
                assert [dw, dx, db] == [full if f else [1] for full, f in zip((w, x, [delta[-1]]), want)]
                assert len(x) == len(w) == len(delta) == 4
                assert kept == [batch, delta[-1]] and window == [7] and wanted == [3]
                assert w[3] == delta[3] if name_ == device_ops.CONV2D_BACKWARD else w[2] * w[3] == delta[3]
    assert set(writers) == state_tensors  # every state tensor has exactly one writer
    # Every reader of a state tensor runs before its writer (no op sees a half-updated step).
    for position, op in enumerate(model.subgraphs[0].operators):
        for t in op.inputs:
            if int(t) in writers and writers[int(t)] != position:
                assert position < writers[int(t)]
    assert sorted(widths) == sorted(layer["entries"] for layer in sparse)
    # Each select op holds its own layer's rule (BudgetProp's differ per layer), as the manifest records it.
    expected_params = [[np.float32(layer["select_params"][p]) for p in device_ops.SELECT_PARAMS] for layer in sparse]
    assert sorted(params_held) == sorted(expected_params)
    # Every Dense forward runs on TINYPROP_DENSE_FORWARD (BATCH_MATMUL would keep a persistent transposed copy of
    # each kernel): one per Dense layer.
    n_dense = sum(layer["kind"] == "dense" for layer in manifest["layers"])
    assert forwards == ops.get("CUSTOM:" + device_ops.DENSE_FORWARD, 0) == n_dense
    assert "BATCH_MATMUL" not in ops
    # And every conv forward on TINYPROP_CONV2D_FORWARD / _DEPTHWISE_FORWARD, its ReLU fused (TFLM's CONV_2D would
    # keep per-channel arrays per op; a separate RELU, an activation-sized tensor): RELU only after a Dense.
    convs = [layer for layer in manifest["layers"] if layer["kind"] in ("conv2d", "depthwise", "conv1d")]
    streamed = batch if ops.get("CONCATENATION") else 1
    assert streamed * len(convs) >= conv_forwards >= len(convs) and not {"CONV_2D", "DEPTHWISE_CONV_2D"} & set(ops)
    dense_relus = sum(layer["kind"] == "dense" and layer["activation"] == "relu" for layer in manifest["layers"])
    assert ops.get("RELU", 0) == dense_relus
    assert (pools > 0) == bool(convs)  # global pooling on TINYPROP_GLOBAL_AVERAGE_POOL, not TFLM's MEAN
    if pools and manifest["loss"] == "sparse_categorical_crossentropy":
        assert "MEAN" not in ops


def _input(details, name):
    return next(d["index"] for d in details if d["name"] == name)


def test_first_layer_skips_dx_and_params_carry_the_policy(exported):
    out, manifest = exported("mlp_tinyprop_sgd")
    with open(os.path.join(out, "train_fast.tflite"), "rb") as f:
        model = flatbuffer.load(f.read())
    wanted, params = {}, []
    for sg in model.subgraphs:
        for op in sg.operators:
            name_ = flatbuffer.op_name(model.operatorCodes[op.opcodeIndex])
            const = lambda t: np.frombuffer(bytes(model.buffers[sg.tensors[t].buffer].data),  # noqa: E731
                                            flatbuffer.numpy_dtype(sg.tensors[t].type))
            if name_[len("CUSTOM:"):] in (device_ops.DENSE_BACKWARD, device_ops.DENSE_BACKWARD_SGD):
                wanted[int(sg.tensors[op.inputs[1]].shape[0])] = const(op.inputs[5]).tolist()
            elif name_.endswith(device_ops.SELECT_UNITS):
                params.append(const(op.inputs[2]).tolist())
    assert wanted == {20: [1, 0, 1], 16: [1, 1, 1], 12: [1, 1, 1]}  # fan-in 20 = the first layer: no dx
    # (s_min, s_max, zeta**depth, rounding floor, running max, no decay, the batch's max first, k >= 1, no
    # skipping, no quantile share or rate): depths 0, 1, 2 from the output.
    assert sorted(params, key=lambda p: -p[2]) == [
        [np.float32(0.1), np.float32(0.9), np.float32(0.5**d), 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        for d in range(3)]


def test_fast_export_refuses_a_policy_without_selection(tmp_path):
    with pytest.raises(ExportError, match="no sparse layer"):
        export_training_model(models.mlp(input_shape=(6,), num_classes=3, hidden=(4,)), tp.DenseBackprop(), "sgd",
                              0.1, batch_size=2, out_dir=str(tmp_path / "d"), measure_arena=False, fast=True)
    assert not (tmp_path / "d").exists()


def test_verify_says_when_the_fast_graph_cannot_run(exported, monkeypatch):
    monkeypatch.delenv("TINYPROP_TFLM_DIR", raising=False)
    monkeypatch.delenv("TINYPROP_TFLM_RUNNER", raising=False)
    out, _ = exported("mlp_static_adam")
    result = verify(out, steps=3, backends=("litert",))
    assert result.ok and "tflm_fast" not in result.losses
    assert any("train_fast.tflite not run" in n and "TINYPROP_TFLM_DIR" in n for n in result.notes)


@pytest.mark.parametrize("variable, value, message", [
    ("TINYPROP_TFLM_RUNNER", "/no/such/runner", "TINYPROP_TFLM_RUNNER=/no/such/runner is not an executable file"),
    ("TINYPROP_TFLM_DIR", "/tmp", "TINYPROP_TFLM_DIR=/tmp is not a TFLM tree"),
])
def test_verify_cli_names_a_bad_runner_setting_in_one_line(exported, variable, value, message):
    out, _ = exported("mlp_static_adam")
    env = {k: v for k, v in os.environ.items() if k not in ("TINYPROP_TFLM_RUNNER", "TINYPROP_TFLM_DIR")}
    proc = subprocess.run([sys.executable, "-m", "tinyprop_tf.cli", "verify", out, "--steps", "2"],
                          capture_output=True, text=True, timeout=600, env={**env, variable: value})
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]




@pytest.mark.slow
@pytest.mark.tflm_runner
@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_step_runs_in_tflm_with_the_tinyprop_ops_and_matches_keras(exported, name):
    runner_or_skip()
    out, manifest = exported(name)
    result = verify(out, steps=10, check=False)
    assert "tflm_fast" in result.losses, result.notes
    assert result.ok, result.summary()
    assert result.worst_share("tflm_fast") <= 1.0  # within float32's own error of the float64 steps
    assert set(result.errors["tflm_fast"]["weights"]) == {e["path"] for e in manifest["weights"]}
    k = result.k["tflm_fast"]  # [steps, layers, batch]: per-sample k of the C++ selection == Keras'
    np.testing.assert_array_equal(k, result.k["keras"])
    if "skip" in name or "samples" in name:  # the layer nearest the output skips some samples (k = 0), not all
        assert (k[:, -1, :] == 0).any() and (k[:, -1, :] > 0).any(), k[:, -1, :]
    else:
        assert k.max() < max(layer["entries"] for layer in manifest["layers"] if layer.get("sparse"))
    json.dumps(manifest["tflm_fast"])  # serialisable as written


def test_a_frozen_prefix_runs_sample_by_sample_where_that_saves_memory(exported, tmp_path):
    """The frozen DS-CNN prefix appears once per sample at batch 1, the samples one after the other (so the
    planner holds one sample's activations, not the batch's), and only its output is gathered for the batch. An
    MLP's frozen first layer (small activations) is not streamed: repeating its ops would cost more than it saves."""
    out, manifest = exported("ds_cnn_last1_tinyprop_sgd")
    with open(os.path.join(out, "train_fast.tflite"), "rb") as f:
        model = flatbuffer.load(f.read())
    sg = model.subgraphs[0]
    batch = manifest["batch_size"]
    convs = []
    for position, op in enumerate(sg.operators):
        name_ = flatbuffer.op_name(model.operatorCodes[op.opcodeIndex])
        if name_ in ("CUSTOM:" + device_ops.CONV2D_FORWARD, "CUSTOM:" + device_ops.DEPTHWISE_FORWARD):
            convs.append((position, int(sg.tensors[op.outputs[0]].shape[0])))
    frozen = [layer for layer in manifest["layers"] if layer["kind"] in ("conv2d", "depthwise")]
    assert len(convs) == batch * len(frozen) and {b for _, b in convs} == {1}
    positions = [p for p, _ in convs]
    assert positions == sorted(positions) and all(  # sample i's convs all come before sample i + 1's
        max(positions[i * len(frozen):(i + 1) * len(frozen)]) < min(positions[(i + 1) * len(frozen):] or [10**9])
        for i in range(batch))
    # and its pooling too (run late, every sample's last feature map would stay alive until it)
    pools = [p for p, op in enumerate(sg.operators)
             if flatbuffer.op_name(model.operatorCodes[op.opcodeIndex]) == "CUSTOM:" + device_ops.GLOBAL_AVERAGE_POOL]
    assert len(pools) == batch and all(positions[(i + 1) * len(frozen) - 1] < pools[i] < positions[(i + 1) * len(
        frozen)] for i in range(batch - 1))
    ops = flatbuffer.ops_used(model)
    assert ops.get("CONCATENATION") == 1 and not any(op.endswith("CONV2D_BACKWARD") for op in ops)
    assert "CONV_2D" not in ops and "DEPTHWISE_CONV_2D" not in ops  # TFLM's would hold per-channel arrays per op
    keras.utils.set_random_seed(0)
    small = export_training_model(_last(models.mlp(input_shape=(20,), num_classes=5, hidden=(16, 12)), 2),
                                  tp.TinyProp(0.1, 0.9, 0.5), "sgd", 0.05, batch_size=4, out_dir=str(tmp_path / "m"),
                                  measure_arena=False, fast=True)
    assert "CONCATENATION" not in small["tflm_fast"]["ops"] and small["tflm_fast"]["ops"][
        "CUSTOM:" + device_ops.DENSE_FORWARD] == 3


@pytest.mark.tflm_runner
def test_a_streamed_prefix_of_a_large_batch_stays_within_tflm_concatenation(tmp_path):
    """TFLM's CONCATENATION takes at most 10 inputs: the batch of 18 per-sample results is gathered in groups
    (8 + 8 + 2, then the 3 groups), and the step runs in TFLM."""
    runner_or_skip()
    keras.utils.set_random_seed(0)
    model = _last(models.mlp(input_shape=(12,), num_classes=3, hidden=(400,)), 1)  # 1.6 KB of fc1 output per sample
    manifest = export_training_model(model, tp.TinyProp(0.1, 0.9, 0.5), "sgd", 0.05, batch_size=18,
                                     out_dir=str(tmp_path / "e"), fast=True)
    assert manifest["tflm_fast"]["ops"]["CONCATENATION"] == 4 and manifest["tflm_fast"]["arena_bytes"] > 0
    result = verify(str(tmp_path / "e"), steps=2, check=False, backends=("tflm_fast",))
    assert result.ok and "tflm_fast" in result.errors, result.summary()


# --- a recomputed block (export_training_model(recompute=True)) -----------------------------------------------------
def _ds_cnn_last2():
    """DS-CNN trained from its last pointwise conv: frozen prefix, then pw -> BatchNorm (folded) -> ReLU ->
    Dropout -> pooling -> logits."""
    return _last(models.ds_cnn(input_shape=(24, 10, 1), num_classes=4, filters=16, blocks=2), 2)


def _export_ds_cnn_last2(out, optimizer="sgd", recompute=True, policy=None):
    keras.utils.set_random_seed(0)
    return export_training_model(_ds_cnn_last2(), policy or tp.TinyProp(0.1, 0.9, 0.5), optimizer, 0.05,
                                 batch_size=4, out_dir=str(out), measure_arena=False, fast=True, recompute=recompute)


def test_a_recomputed_block_has_no_batch_sized_activation_of_its_conv(tmp_path):
    """The trained conv's forward runs per sample (pooled values and a ReLU mask out), its selection reads the masks,
    its backward runs per sample on the prefix computed again, dW and db chained from sample to sample; the
    second prefix pass runs on training invokes only. No rank-4 tensor holds the batch (only the input x)."""
    manifest = _export_ds_cnn_last2(tmp_path / "e")
    assert manifest["tflm_fast"]["recompute"] is True
    with open(tmp_path / "e" / "train_fast.tflite", "rb") as f:
        model = flatbuffer.load(f.read())
    sg = model.subgraphs[0]
    batch = manifest["batch_size"]
    ops = flatbuffer.ops_used(model)
    mode = int(sg.inputs[_input(flatbuffer.io_details(model, 0)[0], "mode")])
    assert ops["CUSTOM:" + device_ops.CONV2D_POOL_FORWARD] == ops["CUSTOM:" + device_ops.CONV2D_BACKWARD_MASKED] == batch
    assert ops["CUSTOM:" + device_ops.SELECT_CHANNELS_MASKED] == 1
    assert not {device_ops.SELECT_CHANNELS, device_ops.CONV2D_BACKWARD, device_ops.RELU_BACKWARD} & {
        op[len("CUSTOM:"):] for op in ops}
    frozen = [layer for layer in manifest["layers"] if layer["kind"] in ("conv2d", "depthwise")
              and not layer["trainable"]]

    def constant(t):
        return np.frombuffer(bytes(model.buffers[sg.tensors[t].buffer].data), np.int32).tolist()

    forwards, backwards = [], []
    for position, op in enumerate(sg.operators):
        name = flatbuffer.op_name(model.operatorCodes[op.opcodeIndex])[len("CUSTOM:"):]
        if name in (device_ops.CONV2D_FORWARD, device_ops.DEPTHWISE_FORWARD):
            train_only = constant(op.inputs[2])[device_ops.WINDOW_PARAMS.index("train_only")]
            assert (int(op.inputs[-1]) == mode) == bool(train_only)
            forwards.append((position, train_only))
        elif name == device_ops.CONV2D_BACKWARD_MASKED:
            backwards.append((position, op))
    assert [t for _, t in forwards] == [0] * (batch * len(frozen)) + [1] * (batch * len(frozen))
    # sample i's backward right after its recomputed prefix, reading the previous sample's dW and db
    recomputed = [p for p, t in forwards if t]
    for i, (position, op) in enumerate(backwards):
        assert constant(op.inputs[7]) == [i]
        assert recomputed[(i + 1) * len(frozen) - 1] < position < (recomputed + [10**9])[(i + 1) * len(frozen)]
        if i == 0:
            assert len(op.inputs) == 9
        else:
            assert [int(t) for t in op.inputs[9:]] == [int(backwards[i - 1][1].outputs[0]),
                                                       int(backwards[i - 1][1].outputs[2])]
    inputs = {int(t) for t in sg.inputs}
    for t, tensor in enumerate(sg.tensors):
        if tensor.shape is not None and len(tensor.shape) == 4 and t not in inputs:
            assert tensor.shape[0] == 1 or model.buffers[tensor.buffer].data is not None, flatbuffer.tensor_name(tensor)


def test_recompute_names_what_the_model_lacks(tmp_path):
    keras.utils.set_random_seed(0)
    with pytest.raises(ExportError, match="recompute: the first trained layer must be a Conv2D .*layer 'fc1', dense"):
        export_training_model(models.mlp(input_shape=(20,), num_classes=5, hidden=(16,)), tp.TinyProp(), "sgd",
                              batch_size=4, out_dir=str(tmp_path / "a"), measure_arena=False, fast=True,
                              recompute=True)
    whole = models.ds_cnn(input_shape=(24, 10, 1), num_classes=4, filters=16, blocks=1)  # conv0 trained too
    with pytest.raises(ExportError, match="recompute: the ReLU after layer 'conv0' must feed a global average pooling"):
        export_training_model(whole, tp.TinyProp(), "sgd", batch_size=4, out_dir=str(tmp_path / "b"),
                              measure_arena=False, fast=True, recompute=True)
    with pytest.raises(ExportError, match="recompute=True needs fast=True"):
        export_training_model(_ds_cnn_last2(), tp.TinyProp(), "sgd", batch_size=4, out_dir=str(tmp_path / "c"),
                              measure_arena=False, recompute=True)
    assert not os.listdir(tmp_path)  # refused before any file


@pytest.mark.tflm_runner
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_recomputed_block_trains_bit_for_bit_as_the_batched_step(tmp_path, optimizer):
    """Six training invokes and an inference one, the same batches: every output of the recomputed step (loss,
    logits, k, the whole training state) equals the batched step's bit for bit, in less arena; and verify finds it
    within its bound of the float64 steps with Keras' k."""
    runner = runner_or_skip()
    runs = {}
    for recompute in (False, True):
        out = tmp_path / f"r{int(recompute)}"
        manifest = _export_ds_cnn_last2(out, optimizer, recompute)
        state = device_ops.initial_state(manifest["tflm_fast"]["state"], artifacts.exported_weights(str(out), manifest))
        feeds = verification.runner_feeds(manifest, *verification.make_batches(manifest, 6), fast=True)
        with open(out / "train_fast.tflite", "rb") as f:
            runs[recompute] = tflm_host_runner.run(runner, f.read(), feeds, state=state)
    (batched, batched_arena), (recomputed, recomputed_arena) = runs[False], runs[True]
    assert len(recomputed) == len(batched) == 7
    for a, b in zip(batched, recomputed):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    k_index = next(d["index"] for d in manifest["tflm_fast"]["outputs"] if d["name"] == "k")
    assert np.asarray(recomputed[0][k_index]).sum() > 0  # the block's layer kept something: a real backward ran
    assert recomputed_arena < 0.5 * batched_arena
    result = verify(str(tmp_path / "r1"), steps=6, check=False, backends=("tflm_fast",))
    assert result.ok, result.summary()
    np.testing.assert_array_equal(result.k["tflm_fast"], result.k["keras"])


def test_export_cli_recompute(tmp_path, capsys):
    from tinyprop_tf import cli

    path = tmp_path / "m.keras"
    models.ds_cnn(input_shape=(24, 10, 1), num_classes=4, filters=16, blocks=2).save(path)
    assert cli.main(["export", str(path), "--out", str(tmp_path / "o"), "--recompute"]) == 2
    assert capsys.readouterr().err == ("tinyprop export: error: --recompute is for --fast (the step on the TinyProp "
                                       "TFLM ops)\n")
    assert cli.main(["export", str(path), "--out", str(tmp_path / "o"), "--fast", "--recompute", "--train-last", "2",
                     "--batch-size", "4"]) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["tflm_fast"]["recompute"] and manifest["tflm_fast"]["device_ops"][
        device_ops.CONV2D_BACKWARD_MASKED] == 4
    assert cli.main(["export", str(path), "--out", str(tmp_path / "p"), "--fast", "--recompute"]) == 2
    assert "recompute: the ReLU after layer 'conv0' must feed a global average pooling" in capsys.readouterr().err
