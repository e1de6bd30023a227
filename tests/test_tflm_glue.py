"""The TFLM glue of the TinyProp operators (``micro/tflm/tinyprop_tflm.cc``): every check is in Prepare.

Each case edits one TinyProp operator of a real exported ``train_fast.tflite`` (a wrong input count, tensor type
or shape, a parameter tensor that is not a constant or holds a bad value, an in-place output that is not its
input) and runs it in ``tinyprop_tflm_runner``: AllocateTensors must fail, before any invoke, with TFLM's
"Node TINYPROP_... failed to prepare" and the check that failed. The unedited models run.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from _build import runner_or_skip

import tinyprop_tf as tp
from tinyprop_tf import models
from tinyprop_tf.converters import (artifacts, device_ops, export_training_model, flatbuffer, tflm_host_runner,
                                    verification)
from tinyprop_tf.converters.flatbuffer import fb

EXPORTS = {  # name: (model, optimizer): fused SGD, Adam's separate backward and update, conv selection
    "mlp_sgd": (lambda: models.mlp(input_shape=(20,), num_classes=5, hidden=(16, 12)), "sgd"),
    "mlp_adam": (lambda: models.mlp(input_shape=(20,), num_classes=5, hidden=(16,)), "adam"),
    "cnn_sgd": (lambda: models.small_cnn(input_shape=(12, 12, 1), num_classes=4, filters=(6, 8)), "sgd"),
    # the recomputed block's ops: DS-CNN trained from its last pointwise conv
    "ds_cnn_recompute": (lambda: _trained_last(models.ds_cnn(input_shape=(24, 10, 1), num_classes=4, filters=16,
                                                             blocks=2), 2), "sgd", {"recompute": True}),
}


def _trained_last(model, n):
    tp.train_last(model, n)
    return model


@pytest.fixture(scope="module")
def runner():
    return runner_or_skip()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (train_fast.tflite bytes, one train invoke's inputs, the initial state)."""
    cache = {}

    def get(name):
        if name not in cache:
            build, optimizer, *options = EXPORTS[name]
            keras.utils.set_random_seed(0)
            out = str(tmp_path_factory.mktemp(name))
            manifest = export_training_model(build(), tp.TinyProp(0.1, 0.9, 0.5), optimizer, 0.05, batch_size=4,
                                             out_dir=out, measure_arena=False, fast=True, **(options or [{}])[0])
            with open(f"{out}/train_fast.tflite", "rb") as f:
                data = f.read()
            feeds = verification.runner_feeds(manifest, *verification.make_batches(manifest, 1))
            state = device_ops.initial_state(manifest["tflm_fast"]["state"], artifacts.exported_weights(out, manifest))
            cache[name] = (data, feeds, state)
        return cache[name]

    return get


# ---- edits: each takes (model, subgraph, the first operator of the op it is listed with) ------------------------
def _constant(model, sg, index, values, dtype):
    """Input tensor `index` becomes a new constant holding `values` (its own buffer: constants may be shared)."""
    t = sg.tensors[index]
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(np.asarray(values, dtype).tobytes(), np.uint8)
    model.buffers.append(buffer)
    t.buffer = len(model.buffers) - 1
    t.shape = np.array([len(values)], np.int32)


def _values(model, sg, index, dtype):
    return np.frombuffer(np.asarray(model.buffers[sg.tensors[index].buffer].data, np.uint8).tobytes(), dtype)


def _new_tensor_like(model, sg, index):
    """A copy of tensor `index` with no data (not a constant, not a variable); returns its index."""
    like = sg.tensors[index]
    t = fb.TensorT()
    t.shape, t.type, t.name = np.array(like.shape, np.int32), like.type, flatbuffer.tensor_name(like).encode() + b"_c"
    model.buffers.append(fb.BufferT())
    t.buffer = len(model.buffers) - 1
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _with(array, index, value):
    """A copy of a (read-only, parsed) flatbuffer array with array[index] = value."""
    array = np.array(array)
    array[index] = value
    return array


def params_with_seven_slots(model, sg, op):
    _constant(model, sg, op.inputs[2], _values(model, sg, op.inputs[2], np.float32)[:7], np.float32)


def params_not_constant(model, sg, op):
    op.inputs = _with(op.inputs, 2, _new_tensor_like(model, sg, op.inputs[2]))


def k_as_float32(model, sg, op):
    sg.tensors[op.outputs[1]].type = fb.TensorType.FLOAT32


def kept_one_column_too_many(model, sg, op):
    kept = sg.tensors[op.outputs[2]]
    kept.shape = _with(kept.shape, 1, kept.shape[1] + 1)


def output_one_column_too_many(model, sg, op):
    z = sg.tensors[op.outputs[0]]
    z.shape = _with(z.shape, 1, z.shape[1] + 1)


def relu_shapes_differ(model, sg, op):
    d = sg.tensors[op.outputs[0]]
    d.shape = _with(d.shape, -1, d.shape[-1] + 1)


def last_two_inputs_dropped(model, sg, op):
    op.inputs = op.inputs[:-2]  # x, w, delta, k, kept, wanted, lr (no mode, no bias)


def weights_not_in_place(model, sg, op):
    op.outputs = _with(op.outputs, 0, _new_tensor_like(model, sg, op.inputs[1]))


def wanted_not_constant(model, sg, op):
    op.inputs = _with(op.inputs, 5, _new_tensor_like(model, sg, op.inputs[5]))


def rule_seven(model, sg, op):
    _constant(model, sg, op.inputs[3], _with(_values(model, sg, op.inputs[3], np.float32), 0, 7), np.float32)


def adam_state_missing(model, sg, op):
    op.inputs = op.inputs[:-1]  # w, g, mode, hyper, m, v (no powers)


def window_stride_zero(model, sg, op):
    _constant(model, sg, op.inputs[5], _with(_values(model, sg, op.inputs[5], np.int32), 0, 0), np.int32)


def forward_activation_two(model, sg, op):
    slot = device_ops.WINDOW_PARAMS.index("activation")
    _constant(model, sg, op.inputs[2], _with(_values(model, sg, op.inputs[2], np.int32), slot, 2), np.int32)


def forward_linear(model, sg, op):
    slot = device_ops.WINDOW_PARAMS.index("activation")
    _constant(model, sg, op.inputs[2], _with(_values(model, sg, op.inputs[2], np.int32), slot, 0), np.int32)


def forward_train_only_without_mode(model, sg, op):  # its bias is then read as the mode
    slot = device_ops.WINDOW_PARAMS.index("train_only")
    _constant(model, sg, op.inputs[2], _with(_values(model, sg, op.inputs[2], np.int32), slot, 1), np.int32)


def mask_one_word_short(model, sg, op):
    mask = sg.tensors[op.inputs[1]]
    mask.shape = _with(mask.shape, 1, mask.shape[1] - 1)


def masked_backward_wants_dx(model, sg, op):
    _constant(model, sg, op.inputs[8], [1, 1, 1], np.int32)


def masked_backward_sample_past_the_batch(model, sg, op):
    _constant(model, sg, op.inputs[7], [4], np.int32)


def conv_output_one_row_too_many(model, sg, op):
    z = sg.tensors[op.outputs[0]]
    z.shape = _with(z.shape, 1, z.shape[1] + 1)


def output_one_channel_too_many(model, sg, op):
    out = sg.tensors[op.outputs[0]]
    out.shape = _with(out.shape, -1, out.shape[-1] + 1)


def counter_as_float32(model, sg, op):
    sg.tensors[op.inputs[0]].type = fb.TensorType.FLOAT32


CASES = {  # id: (export, op, edit, what the error says besides "Node <op> ... failed to prepare")
    "select params with 7 slots": ("mlp_sgd", device_ops.SELECT_UNITS, params_with_seven_slots,
                                   f"(7 != {len(device_ops.SELECT_PARAMS)})"),
    "select params not constant": ("mlp_sgd", device_ops.SELECT_UNITS, params_not_constant,
                                   "the params input is not a constant tensor"),
    "select k float32": ("mlp_sgd", device_ops.SELECT_UNITS, k_as_float32, "(FLOAT32 != INT32)"),
    "select kept too wide": ("mlp_sgd", device_ops.SELECT_UNITS, kept_one_column_too_many, "(6 != 5)"),
    "channels params not constant": ("cnn_sgd", device_ops.SELECT_CHANNELS, params_not_constant,
                                     "the params input is not a constant tensor"),
    "forward output too wide": ("mlp_sgd", device_ops.DENSE_FORWARD, output_one_column_too_many, "(17 != 16)"),
    "relu shapes differ": ("mlp_sgd", device_ops.RELU_BACKWARD, relu_shapes_differ, "HaveSameShapes"),
    "fused SGD with 7 inputs": ("mlp_sgd", device_ops.DENSE_BACKWARD_SGD, last_two_inputs_dropped, "inputs->size"),
    "fused SGD not in place": ("mlp_sgd", device_ops.DENSE_BACKWARD_SGD, weights_not_in_place,
                               "outputs 0 and 2 must be inputs 1 and 8"),
    "backward wanted not constant": ("mlp_adam", device_ops.DENSE_BACKWARD, wanted_not_constant,
                                     "the wanted input is not a constant tensor"),
    "apply rule 7": ("mlp_adam", device_ops.APPLY_GRADIENT, rule_seven, "the rule"),
    "adam without powers": ("mlp_adam", device_ops.APPLY_GRADIENT, adam_state_missing, "(6 != 7)"),
    "conv stride 0": ("cnn_sgd", device_ops.CONV2D_BACKWARD, window_stride_zero,
                      "TINYPROP_CONV2D_BACKWARD: kBadArgument"),
    "conv forward activation 2": ("cnn_sgd", device_ops.CONV2D_FORWARD, forward_activation_two,
                                  "activation not 0 or 1"),
    "conv forward output too tall": ("cnn_sgd", device_ops.CONV2D_FORWARD, conv_output_one_row_too_many,
                                     "g.out_h"),
    "pool output one channel too many": ("cnn_sgd", device_ops.GLOBAL_AVERAGE_POOL, output_one_channel_too_many,
                                         "== channels"),
    "counter float32": ("mlp_sgd", device_ops.COUNT_STEP, counter_as_float32, "(FLOAT32 != INT32)"),
    "train-only forward without its mode": ("cnn_sgd", device_ops.CONV2D_FORWARD, forward_train_only_without_mode,
                                            "(FLOAT32 != INT32)"),
    "pool forward linear": ("ds_cnn_recompute", device_ops.CONV2D_POOL_FORWARD, forward_linear,
                            "the activation must be ReLU"),
    "masked select mask one word short": ("ds_cnn_recompute", device_ops.SELECT_CHANNELS_MASKED,
                                          mask_one_word_short, "MaskWords(elements)"),
    "masked backward wants dx": ("ds_cnn_recompute", device_ops.CONV2D_BACKWARD_MASKED, masked_backward_wants_dx,
                                 "computes no dx"),
    "masked backward sample past the batch": ("ds_cnn_recompute", device_ops.CONV2D_BACKWARD_MASKED,
                                              masked_backward_sample_past_the_batch, "data.sample < data.batch"),
}


def _edited(data, op_name, edit):
    model = flatbuffer.load(data)
    sg = model.subgraphs[0]
    ops = [op for op in sg.operators if flatbuffer.op_name(model.operatorCodes[op.opcodeIndex]) == "CUSTOM:" + op_name]
    assert ops, f"the export has no {op_name}"
    edit(model, sg, ops[0])
    return flatbuffer.serialize(model)


@pytest.mark.slow
@pytest.mark.tflm_runner
@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_the_unedited_exports_run(runner, exported, name):
    data, feeds, state = exported(name)
    outputs, arena = tflm_host_runner.run(runner, data, feeds, state=state)
    assert arena > 0 and np.isfinite(outputs[0][0]).all()


@pytest.mark.slow
@pytest.mark.tflm_runner
@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_refuses_a_malformed_operator_before_any_invoke(runner, exported, case):
    export, op_name, edit, says = CASES[case]
    data, feeds, state = exported(export)
    with pytest.raises(tflm_host_runner.RunnerError) as error:
        tflm_host_runner.run(runner, _edited(data, op_name, edit), feeds, state=state)
    message = str(error.value)
    assert f"Node {op_name} (number" in message and "failed to prepare" in message, message
    assert "AllocateTensors failed" in message and "Invoke failed" not in message, message
    assert says in message, message


@pytest.mark.slow
@pytest.mark.tflm_runner
def test_on_the_emulated_board_a_malformed_operator_is_not_reported_as_out_of_ram(exported):
    from _build import m4_image_or_skip

    elf = m4_image_or_skip(256 * 1024)
    export, op_name, edit, says = CASES["fused SGD not in place"]
    data, feeds, state = exported(export)
    tflm_host_runner.run_m4(elf, data, feeds, state=state)  # the unedited step fits the nRF52840's RAM
    with pytest.raises(tflm_host_runner.RunnerError) as error:
        tflm_host_runner.run_m4(elf, _edited(data, op_name, edit), feeds, state=state)
    assert not isinstance(error.value, tflm_host_runner.RamError), str(error.value)
    assert "failed to prepare" in str(error.value) and says in str(error.value), str(error.value)
