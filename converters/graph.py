"""Model analysis for the exporter: the layer graph, the supported layer set, BatchNorm folding.

Everything here runs before a file is written: an unsupported layer, a dynamic shape or a configuration the
exported step cannot reproduce raises ``ExportError`` naming the layer and the reason.

Output of the analysis is a flat, topologically ordered list of ``Node`` records over the *reference model*:
the sparsified (``tinyprop_tf.sparsify``) clone of the BatchNorm-folded model. The exported train step is
written from those records, and ``verify`` trains that same reference model in Keras.
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from tinyprop_tf import cloning, model_graph
from tinyprop_tf import layers as layers_lib
from tinyprop_tf import policies as policies_lib
from tinyprop_tf.sparsity_state import sparse_layers


class ExportError(ValueError):
    """The model (or an option) cannot be exported; raised before any file is written."""


# Activations the exported step implements (forward op and its derivative written out explicitly).
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")

# Layer kinds of the exported step.
AFFINE_KINDS = ("dense", "conv2d", "conv1d", "depthwise")


@dataclasses.dataclass
class Node:
    """One layer call of the reference model."""

    name: str
    kind: str  # input, dense, conv2d, conv1d, depthwise, act, reshape, gap, identity, add
    layer: object
    inputs: list  # tensor ids
    output: int  # tensor id
    in_shapes: list  # static shapes without batch
    out_shape: tuple
    activation: str = "linear"
    sparse: bool = False  # a tinyprop sparse layer (policy applies)
    depth: int | None = None
    needs_input_grad: bool = False  # does any input depend on a trainable weight?
    trainable: bool = False  # has trainable weights updated by the step


def _activation_name(fn) -> str:
    if fn is None:
        return "linear"
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # pragma: no cover - unusual callables
        name = getattr(fn, "__name__", repr(fn))
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return str(name)


def _static(shape, what) -> tuple:
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ExportError(
            f"{what}: dynamic shape {tuple(shape)}; the exported graph needs static shapes (except batch)")
    return tuple(int(d) for d in dims)


def functional_of(model):
    """The Functional graph behind a Sequential or Functional model."""
    try:
        model_graph.check_model(model, "the exporter")
    except (TypeError, ValueError) as error:
        raise ExportError(str(error)) from None
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise ExportError(f"Sequential model '{model.name}' has no Input; build it with keras.Input(shape)")
        return fn
    return model


def layer_calls(model):
    """[(layer, input_tensors, output_tensor)] in topological order, plus the model's input and output tensor."""
    fn = functional_of(model)
    if len(fn.inputs) != 1 or len(fn.outputs) != 1:
        raise ExportError(f"model '{model.name}' must have exactly one input and one output "
                          f"(has {len(fn.inputs)} and {len(fn.outputs)})")
    calls, seen_layers = [], set()
    for depth in sorted(fn._nodes_by_depth.keys(), reverse=True):
        for node in fn._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            layer = node.operation
            if isinstance(layer, keras.Model):
                raise ExportError(f"layer '{layer.name}': nested models are not supported; flatten the model")
            if id(layer) in seen_layers:
                raise ExportError(f"layer '{layer.name}' is called more than once (shared layer); not supported")
            seen_layers.add(id(layer))
            if len(node.outputs) != 1:
                raise ExportError(f"layer '{layer.name}' has {len(node.outputs)} outputs; not supported")
            calls.append((layer, list(node.input_tensors), node.outputs[0]))
    return calls, fn.inputs[0], fn.outputs[0]


# --------------------------------------------------------------------------------------------------------------
# Supported layers
# --------------------------------------------------------------------------------------------------------------
def _common_weight_checks(layer):
    reason = model_graph.unsupported_form(layer)
    if reason:
        return reason
    for attr in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "depthwise_regularizer"):
        if getattr(layer, attr, None) is not None:
            return f"{attr} is set (regularisation losses are not part of the exported step)"
    for attr in ("kernel_constraint", "bias_constraint", "depthwise_constraint"):
        if getattr(layer, attr, None) is not None:
            return f"{attr} is set (weight constraints are not applied by the exported step)"
    if any(w.dtype != "float32" for w in layer.weights if w.path.rsplit("/", 1)[-1] in ("kernel", "bias")):
        return "weights are not float32"
    return None


def _conv_checks(layer):
    if any(int(d) != 1 for d in layer.dilation_rate):
        return f"dilation_rate={tuple(layer.dilation_rate)} (only 1 is supported)"
    if getattr(layer, "groups", 1) != 1:
        return f"groups={layer.groups} (only 1 is supported)"
    return None


def classify(layer, in_shapes, out_shape):
    """(kind, activation) for a supported layer, or raise ExportError naming the layer and the reason."""
    name = f"layer '{layer.name}' ({type(layer).__name__})"

    def fail(reason):
        raise ExportError(f"{name} cannot be exported: {reason}")

    def activation_of(layer):
        act = _activation_name(getattr(layer, "activation", None))
        if act not in ACTIVATIONS:
            fail(f"activation '{act}' (supported: {', '.join(ACTIVATIONS)}; for a softmax output train on logits)")
        return act

    if isinstance(layer, keras.layers.InputLayer):
        return "input", "linear"
    if isinstance(layer, keras.layers.BatchNormalization):
        fail("BatchNormalization is folded into the Dense/Conv layer right before it; this one does not follow "
             "a foldable layer (it must directly follow a Dense/Conv1D/Conv2D/DepthwiseConv2D with linear "
             "activation whose output feeds only the BatchNormalization, and normalise the last axis)")
    # Exact classes only: a subclass may change call().
    cls = type(layer)
    affine = {
        keras.layers.Dense: "dense", layers_lib.SparseDense: "dense",
        keras.layers.Conv2D: "conv2d", layers_lib.SparseConv2D: "conv2d",
        keras.layers.Conv1D: "conv1d", layers_lib.SparseConv1D: "conv1d",
        keras.layers.DepthwiseConv2D: "depthwise", layers_lib.SparseDepthwiseConv2D: "depthwise",
    }
    if cls in affine:
        kind = affine[cls]
        reason = _common_weight_checks(layer)
        if reason is None and kind != "dense":
            reason = _conv_checks(layer)
        if reason:
            fail(reason)
        if kind == "dense" and len(in_shapes[0]) != 1:
            fail(f"Dense on a rank-{len(in_shapes[0]) + 1} input {(None,) + in_shapes[0]} (only [batch, features]; "
                 "add a Flatten)")
        if kind == "conv1d" and layer.padding not in ("same", "valid", "causal"):
            fail(f"padding={layer.padding!r}")
        if kind in ("conv2d", "depthwise") and layer.padding not in ("same", "valid"):
            fail(f"padding={layer.padding!r}")
        return kind, activation_of(layer)
    if cls is keras.layers.ReLU:
        if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            fail("ReLU with max_value/negative_slope/threshold (only the plain ReLU is supported)")
        return "act", "relu"
    if cls is keras.layers.Activation:
        return "act", activation_of(layer)
    if cls in (keras.layers.Flatten, keras.layers.Reshape):
        return "reshape", "linear"
    if cls in (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling1D):
        if layer.data_format != "channels_last":
            fail("data_format='channels_first' (only channels_last is supported)")
        return "gap", "linear"
    if cls is keras.layers.Dropout:
        return "identity", "linear"  # the exported step is deterministic: Dropout is the identity (inference mode)
    if cls is keras.layers.Add:
        if len(in_shapes) < 2 or any(s != out_shape for s in in_shapes):
            fail(f"Add of shapes {in_shapes} (only same-shape inputs, no broadcasting)")
        return "add", "linear"
    fail("this layer type is not supported by the exporter (supported: Dense, Conv1D, Conv2D, DepthwiseConv2D, "
         "BatchNormalization folded into them, ReLU/Activation, Flatten, Reshape, GlobalAveragePooling1D/2D, "
         "Dropout (identity), Add)")


# --------------------------------------------------------------------------------------------------------------
# BatchNorm folding
# --------------------------------------------------------------------------------------------------------------
_FOLDABLE = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D, keras.layers.DepthwiseConv2D)


def _fold_bn(conv, bn):
    """Kernel and bias of ``conv`` followed by ``bn`` (inference-mode BN, moving statistics), in float64."""
    weights = {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), np.float64) for w in bn.weights}
    mean, var = weights["moving_mean"], weights["moving_variance"]
    gamma = weights.get("gamma", np.ones_like(mean))
    beta = weights.get("beta", np.zeros_like(mean))
    scale = gamma / np.sqrt(var + float(bn.epsilon))
    kernel = np.asarray(conv.kernel.numpy(), np.float64)
    bias = np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias else np.zeros_like(mean)
    if type(conv) is keras.layers.DepthwiseConv2D:
        kh, kw, c, dm = kernel.shape
        kernel = kernel * scale.reshape(1, 1, c, dm)
    else:
        kernel = kernel * scale  # last axis = output channels
    bias = (bias - mean) * scale + beta
    return kernel.astype(np.float32), bias.astype(np.float32)


def fold_batchnorm(model):
    """A Functional clone of ``model`` with every BatchNorm folded into the layer before it.

    Returns (folded_model, folded: {conv_name: bn_name}). The folded BN uses its moving statistics (inference
    mode): the exported step trains the folded kernel and bias; gamma/beta/statistics no longer exist.
    """
    calls, model_input, model_output = layer_calls(model)
    consumers = {}
    for layer, ins, _ in calls:
        for t in ins:
            consumers.setdefault(id(t), []).append(layer)
    producer = {id(out): (layer, ins) for layer, ins, out in calls}

    folds = {}  # conv layer id -> bn layer
    for layer, ins, _ in calls:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        src = producer.get(id(ins[0]))
        conv = src[0] if src else None
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(ins[0].shape)
        ok = (
            conv is not None
            and type(conv) in _FOLDABLE
            and _activation_name(conv.activation) == "linear"
            and len(consumers.get(id(ins[0]), [])) == 1
            and axis is not None and axis % rank == rank - 1
        )
        if not ok:
            classify(layer, [], ())  # raises with the folding reason
        if getattr(layer, "renorm", False) or getattr(layer, "synchronized", False):
            raise ExportError(f"layer '{layer.name}' (BatchNormalization): renorm/synchronized is not supported")
        folds[id(conv)] = layer
    if not folds:
        return model, {}

    tensors = {}
    new_input = keras.Input(shape=tuple(model_input.shape[1:]), batch_size=None, dtype=model_input.dtype,
                            name=model_input.name)
    tensors[id(model_input)] = new_input
    folded_names = {}
    pending_weights = []
    bn_ids = {id(bn) for bn in folds.values()}
    for layer, ins, out in calls:
        if id(layer) in bn_ids:
            tensors[id(out)] = tensors[id(ins[0])]  # the conv already produced the normalised output
            continue
        args = [tensors[id(t)] for t in ins]
        config = layer.get_config()
        if id(layer) in folds:
            config["use_bias"] = True
            config["bias_initializer"] = "zeros"
        clone = layer.__class__.from_config(config)
        y = clone(args[0] if len(args) == 1 else args)
        if id(layer) in folds:
            bn = folds[id(layer)]
            pending_weights.append((clone, list(_fold_bn(layer, bn))))
            folded_names[layer.name] = bn.name
        elif layer.weights:
            pending_weights.append((clone, [w.numpy() for w in layer.weights]))
        tensors[id(out)] = y
    folded = keras.Model(new_input, tensors[id(model_output)], name=model.name)
    for clone, values in pending_weights:
        if len(clone.weights) != len(values):
            raise ExportError(f"internal: folding '{clone.name}' produced {len(values)} weights for "
                              f"{len(clone.weights)} variables")
        for w, v in zip(clone.weights, values):
            w.assign(v)
    for layer, _, _ in calls:
        if not layer.trainable and not isinstance(layer, keras.layers.BatchNormalization):
            folded.get_layer(layer.name).trainable = False
    return folded, folded_names


# --------------------------------------------------------------------------------------------------------------
# Reference model and plan
# --------------------------------------------------------------------------------------------------------------
SUPPORTED_POLICIES = (policies_lib.DenseBackprop, policies_lib.StaticTopK, policies_lib.TinyProp,
                      policies_lib.TinyPropSkip, policies_lib.BudgetProp)


def check_policy(policy):
    policy = policies_lib.get(policy)
    if type(policy) not in SUPPORTED_POLICIES:
        raise ExportError(
            f"policy {policy!r} cannot be exported yet (supported: DenseBackprop, StaticTopK, TinyProp, "
            "TinyPropSkip, BudgetProp; SsProp is not in this increment)"
        )
    return policy


def reference_model(model, policy, selection="channel"):
    """(reference, folded_bn): the sparsified, BatchNorm-folded clone the exported step reproduces."""
    sparse = sparse_layers(model)
    if sparse:
        policies = {repr(layer.policy.model_policy()) for layer in sparse}
        if policy is None:
            if len(policies) != 1:
                raise ExportError(f"model '{model.name}' mixes policies {sorted(policies)}; pass policy=")
            policy = sparse[0].policy.model_policy()
        selections = {layer.selection for layer in sparse}
        if len(selections) == 1:
            selection = selections.pop()
        model = cloning.strip(model)
    if policy is None:
        raise ExportError("policy is required (e.g. tinyprop_tf.TinyProp())")
    policy = check_policy(policy)
    # Shapes and supported layers are checked on the original graph first, so errors name the user's layers.
    calls, _, _ = layer_calls(model)
    for layer, ins, out in calls:
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        classify(layer, [_static(t.shape, f"input of layer '{layer.name}'") for t in ins],
                 _static(out.shape, f"output of layer '{layer.name}'"))
    folded, folded_names = fold_batchnorm(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref = cloning.sparsify(folded, policy, selection=selection, verbose=False)
        except ValueError as e:
            raise ExportError(f"sparsify failed: {e}") from e
    return ref, policy, folded_names


def plan(ref):
    """Topologically ordered ``Node`` list of the reference model, plus input/output tensor ids."""
    calls, model_input, model_output = layer_calls(ref)
    nodes = []
    input_grads = model_graph.input_needs_gradient(ref)
    for layer, ins, out in calls:
        in_shapes = [_static(t.shape, f"input of layer '{layer.name}'") for t in ins]
        out_shape = _static(out.shape, f"output of layer '{layer.name}'")
        kind, act = classify(layer, in_shapes, out_shape)
        sparse = isinstance(layer, layers_lib.SPARSE_LAYERS)
        trainable = bool(layer.trainable_weights) and kind in AFFINE_KINDS
        if layer.trainable and kind not in AFFINE_KINDS and layer.trainable_weights:
            raise ExportError(f"layer '{layer.name}': trainable weights in a non-affine layer")
        node = Node(
            name=layer.name, kind=kind, layer=layer, inputs=[id(t) for t in ins], output=id(out),
            in_shapes=in_shapes, out_shape=out_shape, activation=act, sparse=sparse,
            depth=layer.depth if sparse else None,
            needs_input_grad=input_grads[layer.name], trainable=trainable,
        )
        nodes.append(node)
    return nodes, id(model_input), id(model_output)
