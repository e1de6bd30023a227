"""The exported train step: forward, loss, sparse selection, backward and optimizer update on tf.Variables.

The Keras model is *not* wrapped: its weights are mirrored into plain ``tf.Variable`` objects (named by
``<layer name>/<weight name>``, which is ``weight.path`` in a Functional model; a Sequential model's paths
carry the model's name scope after reloading, layer names do not) and the forward/backward of each layer is
written out in ``builtin_backward`` with builtin-lowering ops. The selection rule is not re-implemented here:
each sparse layer calls ``selection.select`` with its policy's rule and ``selection.kth_largest_pairwise`` (the
builtins-only k-th value), and applies it with ``selection.keep_entries`` and ``selection.bias_gradient``, as
``layers.SparseBackpropMixin`` does with the host's sort.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tinyprop_tf import selection
from tinyprop_tf.converters import builtin_backward, device_ops
from tinyprop_tf.converters.c_sources import safe_name
from tinyprop_tf.converters.graph import AFFINE_KINDS, ExportError

LOSSES = ("sparse_categorical_crossentropy", "mse")
OPTIMIZERS = ("sgd", "adam")


# ------------------------------------------------------------------------------------------------------------
# Optimizer configuration (Keras 3.15 update rules)
# ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class OptimizerConfig:
    name: str
    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def to_keras(self):
        if self.name == "sgd":
            return keras.optimizers.SGD(self.learning_rate, momentum=self.momentum, nesterov=self.nesterov)
        return keras.optimizers.Adam(self.learning_rate, beta_1=self.beta_1, beta_2=self.beta_2,
                                     epsilon=self.epsilon)

    def to_dict(self):
        d = {"name": self.name, "learning_rate": self.learning_rate}
        if self.name == "sgd":
            d.update(momentum=self.momentum, nesterov=self.nesterov)
        else:
            d.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, amsgrad=False)
        return d


def optimizer_config(optimizer, learning_rate=None, **kwargs) -> OptimizerConfig:
    """From "sgd"/"adam" (+ learning_rate, momentum, nesterov, beta_1, beta_2, epsilon) or a Keras SGD/Adam."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        name = type(optimizer).__name__.lower()
        if name not in OPTIMIZERS:
            raise ExportError(f"optimizer {type(optimizer).__name__} is not supported (SGD, Adam)")
        cfg = optimizer.get_config()
        for key in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor",
                    "gradient_accumulation_steps"):
            if cfg.get(key):
                raise ExportError(f"optimizer option {key}={cfg[key]!r} is not supported by the exported step")
        if cfg.get("use_ema") or cfg.get("amsgrad"):
            raise ExportError("optimizer options use_ema/amsgrad are not supported by the exported step")
        lr = cfg["learning_rate"]
        if not isinstance(lr, (int, float)):
            raise ExportError("learning-rate schedules are not supported by the exported step; pass a float")
        if learning_rate is not None:
            lr = learning_rate
        if name == "sgd":
            return OptimizerConfig("sgd", float(lr), momentum=float(cfg["momentum"]), nesterov=bool(cfg["nesterov"]))
        return OptimizerConfig("adam", float(lr), beta_1=float(cfg["beta_1"]), beta_2=float(cfg["beta_2"]),
                               epsilon=float(cfg["epsilon"]))
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ExportError(f"optimizer must be one of {OPTIMIZERS} or a keras SGD/Adam instance, got {optimizer!r}")
    name = optimizer.lower()
    allowed = {"sgd": {"momentum", "nesterov"}, "adam": {"beta_1", "beta_2", "epsilon"}}[name]
    unknown = set(kwargs) - allowed
    if unknown:
        raise ExportError(f"unknown {name} option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    lr = 0.01 if (learning_rate is None and name == "sgd") else (0.001 if learning_rate is None else learning_rate)
    if not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ExportError(f"learning_rate must be a positive float, got {lr!r}")
    cfg = OptimizerConfig(name, float(lr), **{k: (bool(v) if k == "nesterov" else float(v)) for k, v in kwargs.items()})
    if not 0.0 <= cfg.momentum <= 1.0:
        raise ExportError(f"momentum must be in [0, 1], got {cfg.momentum}")
    return cfg


def weight_key(layer_name: str, weight) -> str:
    """Stable weight name: '<layer>/<weight>' (``weight.path`` of a Functional model)."""
    return f"{layer_name}/{weight.path.rsplit('/', 1)[-1]}"


# What streaming a frozen prefix costs in TFLM per affine op and extra sample (measured: the ops are repeated per
# sample, each with its node, tensors and persistent op data; DS-CNN 49x10, 64 channels, on the TinyProp forward
# ops: ~2 KB per sample for its 9 conv ops and the slicing, pooling and gathering around them).
_STREAM_COST_PER_OP = 256


def _streaming_saves(prefix) -> bool:
    """Whether running ``prefix`` sample by sample saves arena: each extra sample would hold the prefix's largest
    pair of consecutive activations (the input is held whole either way); each costs the repeated ops' bookkeeping.
    An MLP's first layer (a [B, 32] output) is not worth it; a DS-CNN's feature maps are."""
    affine = [n for n in prefix if n.kind in AFFINE_KINDS]
    if not affine:
        return False
    sizes = [4 * int(np.prod(n.out_shape)) for n in prefix if n.kind != "input"]
    pair = max(a + b for a, b in zip(sizes, sizes[1:] + [0]))
    return pair > _STREAM_COST_PER_OP * len(affine)


# TFLM's CONCATENATION takes at most 10 inputs (kernels/concatenation.cc kMaxInputNum).
_MAX_CONCAT_INPUTS = 8


def _concat_batch(parts):
    """The per-sample values as one batch, in concatenations of at most _MAX_CONCAT_INPUTS inputs each."""
    while len(parts) > 1:
        parts = [tf.concat(parts[i:i + _MAX_CONCAT_INPUTS], axis=0) if len(parts[i:i + _MAX_CONCAT_INPUTS]) > 1
                 else parts[i] for i in range(0, len(parts), _MAX_CONCAT_INPUTS)]
    return parts[0]


def _conv_geometry(node):
    """A Conv2D / DepthwiseConv2D node's window geometry (Conv1D: lifted to H = 1 where it is used)."""
    layer = node.layer
    return builtin_backward.ConvGeometry(node.in_shapes[0][:2], tuple(layer.kernel_size), tuple(layer.strides),
                                         layer.padding)


@dataclasses.dataclass(frozen=True)
class Updated:
    """A weight's new value computed by a device op (fused SGD), standing where its gradient would be."""

    value: object


@dataclasses.dataclass(frozen=True)
class RecomputedBlock:
    """The fast graph's first trained layer when it is a Conv2D -> ReLU -> global average pooling block after a
    frozen prefix (DS-CNN's last pointwise conv, trained with the logits): the step needs none of its batch-sized
    activations. Per sample the prefix runs and the conv's forward (TINYPROP_CONV2D_POOL_FORWARD) keeps only the
    pooled values and the ReLU's mask (one bit per element); the rest of the model runs at batch size; the
    conv's selection takes the scores from the masks and the pooling's gradient; its backward runs per sample on
    the prefix recomputed, dW and db added up sample after sample. The same numbers as the batched step, bit for
    bit; the prefix's forward runs twice per training step. TrainStep(recompute=True)."""

    prefix: list
    conv: object
    act: object  # the ReLU node after a folded BatchNorm, or None (the conv's own ReLU)
    gap: object
    rest: list
    geo: object

    @property
    def channels(self) -> int:
        return int(self.conv.out_shape[-1])

    @property
    def positions(self) -> int:
        return int(np.prod(self.conv.out_shape[:-1]))

    @property
    def mask_words(self) -> int:
        return (self.positions * self.channels + 31) // 32


# ------------------------------------------------------------------------------------------------------------
# The module
# ------------------------------------------------------------------------------------------------------------
class TrainStep(tf.Module):
    """Plain tf.Variables + explicit forward/backward/update. Built from the exporter's node plan."""

    def __init__(self, nodes, input_id, output_id, policy, opt: OptimizerConfig, loss: str, batch_size: int,
                 input_shape, output_shape, fast: bool = False, dtype=tf.float32, recompute: bool = False):
        super().__init__(name="tinyprop_train_step")
        # fast: every Dense forward and the sparse layers' selection and backward call the TinyProp device ops
        # (converters/device_ops.py); such a graph is traced and converted only, never executed by TensorFlow.
        self.fast = bool(fast)
        # float64: verify's oracle, the same step in double precision. Its weights start from the float32 values
        # and its optimizer hyper-parameters are the float32 constants the exported step holds (the loss scale
        # 1/B and Adam's log(beta) are exact), so it computes the float32 runtimes' step with less rounding. It
        # runs eagerly with forced kept sets (below).
        self.dtype = tf.as_dtype(dtype)
        self._np = self.dtype.as_numpy_dtype
        if self.dtype not in (tf.float32, tf.float64) or (self.fast and self.dtype != tf.float32):
            raise ExportError(f"internal: a {'fast ' if self.fast else ''}train step in {self.dtype.name}")
        # {sparse layer name: (gate [B, M] bool or None for all kept, k_eff [B] int32)}: when set, every sparse
        # layer keeps exactly these entries instead of selecting (verify replays Keras' kept sets this way).
        self.forced_selection = None
        self._mode = None  # the fast step's mode input while it is traced (the device ops take it)
        self.device_op_shapes = {}  # filled while tracing (device_ops.call), read by device_ops.finalize
        self._nodes, self._input_id, self._output_id = nodes, input_id, output_id
        self._policy, self._opt, self._loss = policy, opt, loss
        self.batch_size = int(batch_size)
        self.input_shape, self.output_shape = tuple(input_shape), tuple(output_shape)

        # Weights: trainable ones become variables (in node order, kernel then bias), frozen ones constants.
        self.weight_paths, self.weight_shapes = [], []
        self.weight_vars = []
        self._params = {}  # node name -> {"kernel": var-or-const, "bias": ...}
        for node in nodes:
            if node.kind not in AFFINE_KINDS:
                continue
            params = {}
            for w in node.layer.weights:
                leaf = w.path.rsplit("/", 1)[-1]
                if leaf not in ("kernel", "bias"):
                    continue  # sparsity state
                value = np.asarray(w.numpy(), np.float32).astype(self._np)
                path = weight_key(node.name, w)
                if node.trainable and w.trainable:
                    var = tf.Variable(value, name=safe_name(path), trainable=True)
                    self.weight_vars.append(var)
                    self.weight_paths.append(path)
                    self.weight_shapes.append(tuple(value.shape))
                    params[leaf] = var
                else:
                    params[leaf] = tf.constant(value)
            self._params[node.name] = params

        # Running maxima of the sparse layers whose backward runs.
        self.sparse_names = [n.name for n in nodes if n.sparse]
        self._runs_backward = {n.name: (n.kind in AFFINE_KINDS and (n.trainable or n.needs_input_grad)) for n in nodes}
        self.ymax_vars = {}
        for n in nodes:
            if n.sparse and self._runs_backward[n.name]:
                init = np.float32(selection.YMAX_INIT)  # [1] in the fast graph: the select ops' state shape
                self.ymax_vars[n.name] = tf.Variable(np.array([init]) if self.fast else init,
                                                     name=f"{safe_name(n.name)}_ymax", trainable=False)
        self._ymax_list = list(self.ymax_vars.values())  # tracked

        # Optimizer slots.
        zeros = [np.zeros(s, self._np) for s in self.weight_shapes]
        self.slots_m, self.slots_v = [], []
        if opt.name == "sgd" and opt.momentum != 0.0:
            self.slots_m = [tf.Variable(z, name=f"{safe_name(p)}_momentum", trainable=False)
                            for z, p in zip(zeros, self.weight_paths)]
        if opt.name == "adam":
            self.slots_m = [tf.Variable(z, name=f"{safe_name(p)}_m", trainable=False)
                            for z, p in zip(zeros, self.weight_paths)]
            self.slots_v = [tf.Variable(z, name=f"{safe_name(p)}_v", trainable=False)
                            for z, p in zip(zeros, self.weight_paths)]
        self.iterations = tf.Variable(np.int32(0), name="iterations", trainable=False)
        # recompute: the fast graph's first trained layer runs as a recomputed block (``RecomputedBlock``).
        self._block = self._recomputed_block() if recompute else None
        self._train_only_forwards = False  # set while the block's backward traces the prefix again

    # -- specs ----------------------------------------------------------------------------------------------
    def x_spec(self):
        return tf.TensorSpec([self.batch_size, *self.input_shape], self.dtype, name="x")

    def y_spec(self):
        if self._loss == "sparse_categorical_crossentropy":
            return tf.TensorSpec([self.batch_size], tf.int32, name="y")
        return tf.TensorSpec([self.batch_size, *self.output_shape], self.dtype, name="y")

    # -- forward --------------------------------------------------------------------------------------------
    def _frozen_prefix(self) -> list:
        """The nodes from the input up to the first one whose backward runs: a frozen prefix whose values the
        backward never needs (forward only)."""
        prefix = []
        for node in self._nodes:
            if node.kind in AFFINE_KINDS and self._runs_backward[node.name]:
                break
            if node.kind not in AFFINE_KINDS and node.kind != "input" and node.needs_input_grad:
                break
            prefix.append(node)
        return prefix

    def _recomputed_block(self) -> "RecomputedBlock":
        """The step's first trained layer as a recomputed block (see ``RecomputedBlock``), or an ExportError
        saying why this model's step cannot run that way."""
        def refuse(why):
            raise ExportError(f"recompute: {why}; export without recompute")

        if not self.fast:
            refuse("only the fast TFLM step (fast=True) runs a recomputed block")
        prefix = self._frozen_prefix()
        at = len(prefix)
        conv = self._nodes[at] if at < len(self._nodes) else None
        if conv is None or conv.kind != "conv2d":
            refuse("the first trained layer must be a Conv2D"
                   + (f" (it is layer '{conv.name}', {conv.kind})" if conv is not None else ""))
        geo = _conv_geometry(conv)
        if not (self._uses_device_ops(conv) and conv.trainable and not conv.needs_input_grad
                and self._device_forward_applies(conv, geo)):
            refuse(f"layer '{conv.name}' must be trained with channel selection on the TinyProp ops, with SAME or "
                   f"VALID padding and no trained layer before it")
        act = self._fusable_relu(conv, self._nodes)
        if conv.activation != "relu" and act is None:
            refuse(f"layer '{conv.name}' must be followed by a ReLU (its own or after a folded BatchNorm)")
        block = [conv] + ([act] if act is not None else [])
        gap = None
        while at + len(block) < len(self._nodes):  # identities (inference-time Dropout) may sit before the pooling
            node = self._nodes[at + len(block)]
            readers = [n for n in self._nodes if block[-1].output in n.inputs]
            if readers != [node] or node.kind not in ("identity", "gap") or block[-1].output == self._output_id:
                break
            block.append(node)
            if node.kind == "gap":
                gap = block.pop()
                break
        if gap is None or gap.output == self._output_id:
            refuse(f"the ReLU after layer '{conv.name}' must feed a global average pooling only")
        rest = self._nodes[at + len(block) + 1:]
        inside = {n.output for n in prefix + block} | {self._input_id}
        if any(t in inside for n in rest for t in n.inputs) or self._output_id in inside:
            refuse(f"a layer after the pooling reads a value before it (a skip connection around '{conv.name}')")
        return RecomputedBlock(prefix, conv, act, gap, rest, geo)

    def _forward_recomputed(self, x, weights):
        """``_forward`` of a step with a recomputed block: per sample the frozen prefix and the block's forward
        (TINYPROP_CONV2D_POOL_FORWARD: the pooled values and the ReLU's mask), then the rest at batch size."""
        block, b = self._block, self.batch_size
        pooled, masks = [], []
        for i in range(b):
            p, m = self._block_forward(self._block_input(x, i, weights), weights)
            pooled.append(p)
            masks.append(m)
        values = {self._input_id: x,
                  block.gap.output: tf.reshape(_concat_batch(pooled), [b, *block.gap.out_shape])}
        values, saved = self._forward_nodes(values, block.rest, weights, b)
        saved[block.conv.name] = {"mask": _concat_batch(masks), "kernel": weights[block.conv.name].get("kernel"),
                                  "bias": weights[block.conv.name].get("bias")}
        return values, saved

    def _block_input(self, x, i, weights, recomputed=False):
        """Sample i's input of the recomputed block's conv: the frozen prefix's forward at batch 1; ``recomputed``
        (the backward's second pass): its conv forwards run on training invokes only."""
        self._train_only_forwards = recomputed
        try:
            values, _ = self._forward_nodes({self._input_id: x[i:i + 1]}, self._block.prefix, weights, 1)
        finally:
            self._train_only_forwards = False
        return values[self._block.conv.inputs[0]]

    def _block_forward(self, x1, weights):
        """(pooled [1, C], mask [1, words]) of one sample by TINYPROP_CONV2D_POOL_FORWARD."""
        block = self._block
        kernel, bias = weights[block.conv.name].get("kernel"), weights[block.conv.name].get("bias")
        geo = block.geo
        window = tf.constant(device_ops.conv_window((geo.sh, geo.sw), geo.padding, "relu"), tf.int32)
        return device_ops.call(device_ops.CONV2D_POOL_FORWARD, block.conv.name,
                               [x1, kernel, window] + ([bias] if bias is not None else []),
                               [(tf.float32, [1, block.channels]), (tf.int32, [1, block.mask_words])],
                               self.device_op_shapes)

    def _block_backward(self, g, saved, weights):
        """(dW, db, k) of the recomputed block's conv from the pooling's gradient ``g``: the selection from the
        masks (TINYPROP_SELECT_CHANNELS_MASKED), then per sample the prefix again and the conv's backward
        (TINYPROP_CONV2D_BACKWARD_MASKED), dW and db added up sample after sample."""
        block, b = self._block, self.batch_size
        conv, s = block.conv, saved[block.conv.name]
        # The pooling's backward divides as builtin_backward.gap_backward does, before the broadcast.
        g = tf.reshape(g, [b, block.channels]) / float(block.positions)
        params = tf.constant(device_ops.select_params(conv.layer.policy.rule(conv.depth)), tf.float32)
        state = self.ymax_vars[conv.name]
        ymax, k, kept = device_ops.call(
            device_ops.SELECT_CHANNELS_MASKED, conv.name,
            [g, s["mask"], tf.constant([block.positions], tf.int32), state.read_value(), params, self._mode],
            [(tf.float32, [1]), (tf.int32, [b]), (tf.int32, [b, block.channels])], self.device_op_shapes)
        state.assign(ymax)  # in place (device_ops.in_place_state)
        kernel, bias = s["kernel"], s["bias"]
        geo = block.geo
        window = tf.constant(device_ops.conv_window((geo.sh, geo.sw), geo.padding), tf.int32)
        wanted = tf.constant([1, 0, int(bias is not None)], tf.int32)
        d_kernel = d_bias = None
        for i in range(b):
            chain = [] if d_kernel is None else [d_kernel, d_bias]
            inputs = [self._block_input(self._x, i, weights, recomputed=True), kernel, g, s["mask"], k, kept, window,
                      tf.constant([i], tf.int32), wanted, *chain]
            d_kernel, _, d_bias = device_ops.call(
                device_ops.CONV2D_BACKWARD_MASKED, conv.name, inputs,
                [(tf.float32, kernel.shape), (tf.float32, [1]),
                 (tf.float32, [block.channels] if bias is not None else [1])], self.device_op_shapes)
        return d_kernel, (d_bias if bias is not None else None), k

    def _forward(self, x, weights):
        """Returns (values: tensor id -> value, saved: node name -> dict) for the backward pass.

        In the fast graph a frozen prefix runs sample by sample where that saves arena (``_streaming_saves``; batch 1
        each, the samples one after the other): its activations then take one sample's room instead of the batch's
        (DS-CNN 49x10, 64 channels, last layer trained, batch 4: two 32 KB activations live instead of two 128 KB);
        only the values the rest of the step reads are kept for the whole batch. The same arithmetic per element.
        """
        if self._block is not None:
            return self._forward_recomputed(x, weights)
        prefix = self._frozen_prefix() if self.fast and self.batch_size > 1 else []
        if not _streaming_saves(prefix):
            return self._forward_nodes({self._input_id: x}, self._nodes, weights, self.batch_size)
        names = {n.name for n in prefix}
        rest = [n for n in self._nodes if n.name not in names]
        produced = {n.output for n in prefix}
        needed = sorted({t for n in rest for t in n.inputs if t in produced} | ({self._output_id} & produced))
        per_sample = []
        for i in range(self.batch_size):
            values, _ = self._forward_nodes({self._input_id: x[i:i + 1]}, prefix, weights, 1)
            per_sample.append(values)
        values = {self._input_id: x}
        for t in needed:
            values[t] = _concat_batch([v[t] for v in per_sample])
        return self._forward_nodes(values, rest, weights, self.batch_size)

    def _forward_nodes(self, values, nodes, weights, b):
        """The forward of ``nodes`` (in order) at batch ``b`` from ``values``; returns (values, saved)."""
        saved = {}
        x = values[self._input_id]
        fused_into = {}  # act node name -> the conv whose device forward applied it
        for node in nodes:
            if node.name in fused_into:
                saved[node.name] = {"out": values[node.output]}
                continue
            if node.kind == "input":
                values[node.output] = values[node.inputs[0]] if node.inputs else x
                continue
            ins = [values[i] for i in node.inputs]
            h = ins[0]
            if node.kind in AFFINE_KINDS:
                kernel, bias = weights[node.name].get("kernel"), weights[node.name].get("bias")
                layer = node.layer
                if node.kind == "dense":
                    if self.fast:
                        z = self._device_dense_forward(node, h, kernel, bias)
                    else:
                        z = builtin_backward.dense_forward(h, kernel, bias)
                    extra = {}
                elif node.kind == "conv1d":
                    geo = builtin_backward.ConvGeometry((1, node.in_shapes[0][0]), (1, layer.kernel_size[0]),
                                                        (1, layer.strides[0]), layer.padding)
                    h4 = tf.reshape(h, [b, 1, *node.in_shapes[0]])
                    k4 = tf.reshape(kernel, [1, *kernel.shape])
                    extra = {"geo": geo, "x4": h4, "k4": k4}
                else:
                    geo = _conv_geometry(node)
                    h4, k4 = h, kernel
                    extra = {"geo": geo}
                if node.kind == "dense":
                    out = builtin_backward.activation_forward(node.activation, z)
                else:
                    if self._device_forward_applies(node, geo):
                        act = self._fusable_relu(node, nodes)
                        out = self._device_conv_forward(node, h4, k4, bias, geo, act.activation if act else None)
                        if act is not None:  # the act node's value; the conv's own (pre-ReLU) value never exists
                            fused_into[act.name] = node.name
                            values[act.output] = (tf.reshape(out, [b, *node.out_shape]) if node.kind == "conv1d"
                                                  else out)
                    else:
                        bias4 = None if bias is None else tf.reshape(bias, [1, 1, 1, -1])
                        fwd = (builtin_backward.depthwise_forward if node.kind == "depthwise"
                               else builtin_backward.conv2d_forward)
                        out = builtin_backward.activation_forward(node.activation, fwd(h4, k4, bias4, geo))
                    if node.kind == "conv1d":
                        out = tf.reshape(out, [b, *node.out_shape])
                saved[node.name] = {"x": h, "out": out, "kernel": kernel, "bias": bias, **extra}
            elif node.kind == "act":
                out = builtin_backward.activation_forward(node.activation, h)
                saved[node.name] = {"out": out}
            elif node.kind == "reshape":
                out = tf.reshape(h, [b, *node.out_shape])
            elif node.kind == "gap" and self._device_forward_applies(node):  # TFLM's MEAN: ~15x the instructions
                (out,) = device_ops.call(device_ops.GLOBAL_AVERAGE_POOL, node.name, [h],
                                         [(tf.float32, [b, *node.out_shape])], self.device_op_shapes)
            elif node.kind == "gap":
                out = builtin_backward.gap_forward(h, keepdims=len(node.out_shape) == len(node.in_shapes[0]))
            elif node.kind == "identity":
                out = h
            elif node.kind == "add":
                out = ins[0]
                for other in ins[1:]:
                    out = out + other
            else:  # pragma: no cover - plan() rejects others
                raise ExportError(f"layer '{node.name}': no forward for kind {node.kind}")
            values[node.output] = out
        return values, saved

    # -- loss -----------------------------------------------------------------------------------------------
    def _loss_and_grad(self, out, y, with_grad=True):
        b = self.batch_size
        if self._loss == "sparse_categorical_crossentropy":
            classes = out.shape[-1]
            # One-hot without ONE_HOT (not a TFLM builtin; the converter fuses cast(equal(y, range)) into it).
            classes_f = tf.constant(np.arange(classes, dtype=self._np))[None, :]
            y_f = tf.cast(y, self.dtype)[:, None]
            onehot = tf.cast(tf.logical_and(y_f >= classes_f, y_f <= classes_f), self.dtype)
            per_sample = -tf.reduce_sum(onehot * tf.nn.log_softmax(out), axis=1)
            loss = tf.reduce_sum(per_sample) / float(b)
            if not with_grad:
                return loss, None
            # d loss / d logits = (softmax - onehot) * (1 / B), as TF's fused xent gradient times the mean's.
            g = (tf.nn.softmax(out) - onehot) * tf.constant(self._np(1.0) / self._np(b))
            return loss, g
        # MSE: mean over the last axis, then over the batch (Keras MeanSquaredError).
        diff = y - out
        per_sample = tf.reduce_mean(tf.square(diff), axis=list(range(1, out.shape.rank)))
        loss = tf.reduce_sum(per_sample) / float(b)
        if not with_grad:
            return loss, None
        count = int(np.prod(out.shape[1:]))
        scale = self._np(self._np(1.0) / self._np(b)) / self._np(count)
        g = -(tf.constant(scale) * (2.0 * diff))
        return loss, g

    # -- sparse selection -----------------------------------------------------------------------------------
    def _select(self, node, delta):
        """(masked delta, bias gradient, k_eff [B]) as layers.SparseBackpropMixin._backward: the same selection
        functions, the builtins-only k-th value."""
        b = self.batch_size
        if not node.sparse:
            return delta, selection.bias_gradient(delta), None
        layer = node.layer
        policy = layer.policy  # the layer's own: BudgetProp's carries its share of the budget
        per_sample = delta.shape[1:]
        per_channel = layer.selection == "channel"
        num_entries = int(per_sample[-1]) if per_channel else int(np.prod(per_sample))
        _, scores, y = selection.scores_and_error(delta, num_entries, per_channel)
        state = self.ymax_vars[node.name]
        rule = policy.rule(node.depth)
        if rule is None:  # dense (graph.check_policy admits no other rule-less policy)
            ymax = selection.update_running_max(tf.reshape(state.read_value(), []), y)
            self._assign(state, tf.reshape(ymax, state.shape))
            return delta, selection.bias_gradient(delta), tf.fill([b], num_entries)
        chosen = selection.select(scores, y, tf.reshape(state.read_value(), []), rule,
                                  kth_largest=selection.kth_largest_pairwise)
        self._assign(state, tf.reshape(chosen.ymax, state.shape))
        masked = selection.kept_error(delta, chosen, per_channel, b)
        k_eff = chosen.k * tf.cast(chosen.active, tf.int32)  # samples with zero error, or skipped, cost nothing
        d_bias = selection.step_bias_gradient(delta, masked, chosen, sparse_bias=False)  # dense bias gradient
        return masked, d_bias, k_eff

    @staticmethod
    def _skips_samples(node) -> bool:
        """Whether the sparse layer's rule skips samples (``SelectionRule.skip_below``; dense has no rule)."""
        rule = node.layer.policy.rule(node.depth)
        return rule is not None and bool(rule.skip_below)

    def _forced_select(self, node, delta):
        """``_select`` with the kept set given (``forced_selection``): no scores, no running max."""
        if self._policy.sparse_bias or self._policy.batch_shared:
            # The replay has the rules of the exported policies (graph.check_policy): dense bias.
            raise ExportError(f"internal: no replay of {self._policy!r}'s kept sets")
        gate, k_eff = self.forced_selection[node.name]
        delta_kept = delta if gate is None else selection.keep_entries(
            delta, tf.constant(np.asarray(gate, self._np)), node.layer.selection == "channel", self.batch_size)
        if self._skips_samples(node):
            # the given kept sets are the rule's before skipping: a skipped sample (k_eff 0, as a zero-error one,
            # whose delta is 0) keeps nothing, bias included
            active = tf.constant((np.asarray(k_eff) > 0).astype(self._np))
            delta_kept, delta = selection.keep_samples(delta_kept, active), selection.keep_samples(delta, active)
        return delta_kept, selection.bias_gradient(delta), tf.constant(np.asarray(k_eff, np.int32))

    # -- device ops (fast variant) ----------------------------------------------------------------------------
    def _uses_device_ops(self, node) -> bool:
        # The exporter admits DenseBackprop, StaticTopK, TinyProp and BudgetProp only (graph.check_policy); the C++
        # conv kernels select whole channels and know TF's SAME/VALID padding (not Conv1D's causal padding).
        if not (self.fast and node.sparse and self._policy.selects):
            return False
        if node.kind == "dense":
            return True
        return (node.kind in ("conv2d", "depthwise", "conv1d") and node.layer.selection == "channel"
                and node.layer.padding in ("same", "valid"))

    def _device_dense_forward(self, node, x, kernel, bias):
        """z = x . kernel (+ bias) by TINYPROP_DENSE_FORWARD, which reads the [in, out] kernel as it is stored."""
        inputs = [x, kernel] + ([bias] if bias is not None else [])
        (z,) = device_ops.call(device_ops.DENSE_FORWARD, node.name, inputs,
                               [(tf.float32, [x.shape[0], kernel.shape[1]])], self.device_op_shapes)
        return z

    def _device_forward_applies(self, node, geo=None) -> bool:
        """Whether the fast graph runs this conv or pooling forward on a TinyProp op: TINYPROP_CONV2D_FORWARD /
        _DEPTHWISE_FORWARD for TF's SAME/VALID padding and an activation the op fuses, TINYPROP_GLOBAL_AVERAGE_POOL
        for every global pooling (else TFLM's builtins)."""
        if node.kind == "gap":
            return self.fast
        return self.fast and geo.tf_padding is not None and node.activation in device_ops.ACTIVATION_CODES

    def _fusable_relu(self, node, nodes):
        """The ReLU node that only reads this linear conv's output (a BatchNorm folded in between, as DS-CNN's
        conv -> BN -> ReLU), which the conv's device forward can apply itself, or None. Fused, no tensor holds the
        pre-ReLU value (TFLite's converter fuses it into CONV_2D the same way); the ReLU's backward is unchanged."""
        if node.activation != "linear" or node.output == self._output_id:
            return None
        readers = [n for n in self._nodes if node.output in n.inputs]
        if len(readers) != 1 or readers[0].kind != "act" or readers[0].activation != "relu":
            return None
        return readers[0] if any(n is readers[0] for n in nodes) else None

    def _device_conv_forward(self, node, x4, k4, bias, geo, activation=None):
        """act(conv(x4, k4) + bias) in NHWC by the TinyProp forward op (Conv1D lifted to H = 1); ``activation``
        (default: the layer's own) is the one the op applies."""
        op = device_ops.DEPTHWISE_FORWARD if node.kind == "depthwise" else device_ops.CONV2D_FORWARD
        out_c = k4.shape[2] * k4.shape[3] if node.kind == "depthwise" else k4.shape[3]
        train_only = self._train_only_forwards  # a prefix recomputed for a backward: nothing to do on inference
        window = tf.constant(device_ops.conv_window((geo.sh, geo.sw), geo.padding, activation or node.activation,
                                                    train_only), tf.int32)
        inputs = [x4, k4, window] + ([bias] if bias is not None else []) + ([self._mode] if train_only else [])
        (out,) = device_ops.call(op, node.name, inputs, [(tf.float32, [x4.shape[0], geo.Ho, geo.Wo, out_c])],
                                 self.device_op_shapes)
        return out

    def _fuses_sgd(self, node) -> bool:
        """Whether the layer's plain SGD step runs inside its device backward (TINYPROP_DENSE_BACKWARD_SGD)."""
        opt = self._opt
        return (node.kind == "dense" and node.trainable and self._uses_device_ops(node) and opt.name == "sgd"
                and opt.momentum == 0.0)

    def _device_backward(self, node, saved, delta):
        """(dW, dx, db, k) from the TinyProp device ops: the rule of ``_select``, then the sparse backward. With
        fused SGD (``_fuses_sgd``) dW and db are ``Updated`` new values instead."""
        b, n = delta.shape[0], delta.shape[-1]
        params = tf.constant(device_ops.select_params(node.layer.policy.rule(node.depth)), tf.float32)
        state = self.ymax_vars[node.name]
        select = device_ops.SELECT_UNITS if node.kind == "dense" else device_ops.SELECT_CHANNELS
        ymax, k, kept = device_ops.call(
            select, node.name, [delta, state.read_value(), params, self._mode],
            [(tf.float32, [1]), (tf.int32, [b]), (tf.int32, [b, n])], self.device_op_shapes)
        state.assign(ymax)  # in place (device_ops.in_place_state)
        if self._skips_samples(node):
            # a skipped sample has k = 0 (no dW, no dx); its error must not reach the dense bias gradient either
            # (k is 0 for a zero-error sample too, whose error is 0 anyway)
            delta = selection.keep_samples(delta, tf.cast(k > 0, delta.dtype))
        x, kernel, bias = saved["x"], saved["kernel"], saved["bias"]
        fused = self._fuses_sgd(node)
        # (dW or new kernel, dx, db or new bias): which outputs the op computes
        want = ((True, node.needs_input_grad, bias is not None) if fused
                else (node.trainable, node.needs_input_grad, node.trainable))
        wanted = tf.constant([int(v) for v in want], tf.int32)

        def outputs(*shapes):  # an output the op will not write gets one element (it would take arena space)
            return [(tf.float32, list(shape) if w else [1]) for shape, w in zip(shapes, want)]

        if fused:
            # Outputs the updated kernel and bias (same numbers as dW, db and `_apply`'s assign_sub(grad * lr)).
            inputs = [x, kernel, delta, k, kept, wanted, tf.constant([self._opt.learning_rate], tf.float32),
                      self._mode]
            new_kernel, d_x, new_bias = device_ops.call(
                device_ops.DENSE_BACKWARD_SGD, node.name, inputs + ([bias] if bias is not None else []),
                outputs(kernel.shape, x.shape, [n]), self.device_op_shapes)
            return Updated(new_kernel), d_x, Updated(new_bias) if bias is not None else None, k
        if node.kind == "dense":
            d_kernel, d_x, d_bias = device_ops.call(
                device_ops.DENSE_BACKWARD, node.name, [x, kernel, delta, k, kept, wanted],
                outputs(kernel.shape, x.shape, [n]), self.device_op_shapes)
            return d_kernel, d_x, d_bias, k
        geo = saved["geo"]
        window = tf.constant(device_ops.conv_window((geo.sh, geo.sw), geo.padding), tf.int32)
        if node.kind == "conv1d":  # lifted to H = 1, as the forward does
            x4, k4 = saved["x4"], saved["k4"]
            d4 = tf.reshape(delta, [b, 1, *delta.shape[1:]])
            d_k4, d_x4, d_bias = device_ops.call(
                device_ops.CONV2D_BACKWARD, node.name, [x4, k4, d4, k, kept, window, wanted],
                outputs(k4.shape, x4.shape, [n]), self.device_op_shapes)
            return (tf.reshape(d_k4, kernel.shape) if want[0] else None,
                    tf.reshape(d_x4, x.shape) if want[1] else None, d_bias, k)
        op = device_ops.CONV2D_BACKWARD if node.kind == "conv2d" else device_ops.DEPTHWISE_BACKWARD
        d_kernel, d_x, d_bias = device_ops.call(
            op, node.name, [x, kernel, delta, k, kept, window, wanted],
            outputs(kernel.shape, x.shape, [n]), self.device_op_shapes)
        return d_kernel, d_x, d_bias, k

    # -- backward -------------------------------------------------------------------------------------------
    def _activation_backward(self, node, g, saved):
        """dL/dz of the node's activation from dL/dout and the saved output."""
        if self.fast and node.activation == "relu":
            (d,) = device_ops.call(device_ops.RELU_BACKWARD, node.name, [g, saved["out"]],
                                   [(tf.float32, g.shape)], self.device_op_shapes)
            return d
        return builtin_backward.activation_backward(node.activation, g, saved["out"])

    def _backward(self, values, saved, g_out):
        b = self.batch_size
        grads = {self._output_id: g_out}
        weight_grads = {}
        ks = {}
        for node in reversed(self._nodes):
            g = grads.pop(node.output, None)
            if g is None or node.kind == "input":
                continue

            def give(tid, value):
                grads[tid] = value if tid not in grads else grads[tid] + value

            if self._block is not None and node is self._block.gap:  # the block's layers get no other gradient
                conv = self._block.conv
                d_kernel, d_bias, ks[conv.name] = self._block_backward(g, saved, self._weights)
                weight_grads[(conv.name, "kernel")] = d_kernel
                weight_grads[(conv.name, "bias")] = d_bias
                continue

            if node.kind in AFFINE_KINDS:
                if not self._runs_backward[node.name]:
                    continue
                s = saved[node.name]
                delta = self._activation_backward(node, g, s)
                need_dx = node.needs_input_grad
                if self._uses_device_ops(node):
                    d_kernel, d_x, d_bias, ks[node.name] = self._device_backward(node, s, delta)
                    if node.trainable:
                        weight_grads[(node.name, "kernel")] = d_kernel
                        weight_grads[(node.name, "bias")] = d_bias
                    if need_dx:
                        give(node.inputs[0], d_x)
                    continue
                select = self._forced_select if (node.sparse and self.forced_selection is not None) else self._select
                masked, d_bias, k_eff = select(node, delta)
                if k_eff is not None:
                    ks[node.name] = k_eff
                if node.kind == "dense":
                    d_kernel, d_x = builtin_backward.dense_backward(s["x"], s["kernel"], masked, need_dx)
                elif node.kind == "conv1d":
                    m4 = tf.reshape(masked, [b, 1, *node.out_shape])
                    d_k4, d_x4 = builtin_backward.conv2d_backward(s["x4"], s["k4"], m4, s["geo"], need_dx)
                    d_kernel = tf.reshape(d_k4, s["kernel"].shape)
                    d_x = None if d_x4 is None else tf.reshape(d_x4, [b, *node.in_shapes[0]])
                elif node.kind == "conv2d":
                    d_kernel, d_x = builtin_backward.conv2d_backward(s["x"], s["kernel"], masked, s["geo"], need_dx)
                else:
                    d_kernel, d_x = builtin_backward.depthwise_backward(s["x"], s["kernel"], masked, s["geo"], need_dx)
                if node.trainable:
                    weight_grads[(node.name, "kernel")] = d_kernel
                    weight_grads[(node.name, "bias")] = d_bias
                if need_dx:
                    give(node.inputs[0], d_x)
            elif not node.needs_input_grad:
                continue
            elif node.kind == "act":
                s = saved[node.name]
                give(node.inputs[0], self._activation_backward(node, g, s))
            elif node.kind == "reshape":
                give(node.inputs[0], tf.reshape(g, [b, *node.in_shapes[0]]))
            elif node.kind == "gap":
                give(node.inputs[0], builtin_backward.gap_backward(g, [b, *node.in_shapes[0]]))
            elif node.kind == "identity":
                give(node.inputs[0], g)
            elif node.kind == "add":
                for tid in node.inputs:
                    give(tid, g)
        return weight_grads, ks

    # -- optimizer ------------------------------------------------------------------------------------------
    def _apply(self, grads):
        """One optimizer step; a weight whose entry is ``Updated`` takes that value (a fused device update)."""
        opt = self._opt
        hyper = self._hyper
        lr = hyper(opt.learning_rate)
        if opt.name == "adam":
            local_step = tf.cast(self.iterations.read_value() + 1, self.dtype)
            # beta**t without POW (not a TFLM builtin): exp(t * log(beta)), the log of the float32 beta (the
            # value Keras raises to the power) taken in float64 at export time. Within a few ulp of TF's pow.
            log_beta_1 = math.log(float(np.float32(opt.beta_1)))
            log_beta_2 = math.log(float(np.float32(opt.beta_2)))
            beta_1_power = tf.exp(local_step * tf.constant(self._np(log_beta_1)))
            beta_2_power = tf.exp(local_step * tf.constant(self._np(log_beta_2)))
            alpha = lr * tf.sqrt(1.0 - beta_2_power) / (1.0 - beta_1_power)
        for i, (var, grad) in enumerate(zip(self.weight_vars, grads)):
            if isinstance(grad, Updated):
                var.assign(grad.value)
            elif self.fast:
                self._device_apply(i, var, grad, (beta_1_power, beta_2_power) if opt.name == "adam" else None)
            elif opt.name == "sgd":
                if opt.momentum != 0.0:
                    m = self.slots_m[i]
                    momentum = hyper(opt.momentum)
                    m.assign(m.read_value() * momentum - grad * lr)
                    if opt.nesterov:
                        var.assign_add(m.read_value() * momentum - grad * lr)
                    else:
                        var.assign_add(m.read_value())
                else:
                    var.assign_sub(grad * lr)
            else:
                m, v = self.slots_m[i], self.slots_v[i]
                m.assign_add((grad - m.read_value()) * hyper(1 - opt.beta_1))
                v.assign_add((tf.square(grad) - v.read_value()) * hyper(1 - opt.beta_2))
                var.assign_sub((m.read_value() * alpha) / (tf.sqrt(v.read_value()) + hyper(opt.epsilon)))
        if self.fast:
            (count,) = device_ops.call(device_ops.COUNT_STEP, "iterations", [self.iterations.read_value(), self._mode],
                                       [(tf.int32, [])], self.device_op_shapes)
            self.iterations.assign(count)
        else:
            self.iterations.assign_add(1)

    def _device_apply(self, i, var, grad, powers):
        """The optimizer step of weight i by TINYPROP_APPLY_GRADIENT, in place (the rules of ``_apply``)."""
        opt = self._opt
        if opt.name == "adam":
            rule, second = "adam", opt.beta_1
        else:
            rule = "sgd" if opt.momentum == 0.0 else ("nesterov" if opt.nesterov else "momentum")
            second = opt.momentum
        # float32 of the double 1 - beta, as Keras computes it (and _apply's hyper)
        one_minus = [float(np.float32(1 - opt.beta_1)), float(np.float32(1 - opt.beta_2))] if rule == "adam" else [0, 0]
        hyper = tf.constant([device_ops.APPLY_RULES[rule], opt.learning_rate, second,
                             opt.beta_2 if rule == "adam" else 0.0, opt.epsilon if rule == "adam" else 0.0,
                             *one_minus], tf.float32)
        slots = [self.slots_m[i]] if self.slots_m else []
        slots += [self.slots_v[i]] if self.slots_v else []
        inputs = [var.read_value(), grad, self._mode, hyper] + [s.read_value() for s in slots]
        if powers is not None:
            inputs.append(tf.stack([powers[0], powers[1]]))
        results = device_ops.call(device_ops.APPLY_GRADIENT, safe_name(self.weight_paths[i]), inputs,
                                  [(tf.float32, var.shape)] * (1 + len(slots)), self.device_op_shapes)
        for target, value in zip([var] + slots, results):
            target.assign(value)  # in place (device_ops.in_place_state)

    def _assign(self, var, value):
        """var = value; in the fast graph by TINYPROP_ASSIGN, on training invokes only."""
        if not self.fast:
            var.assign(value)
            return
        (new,) = device_ops.call(device_ops.ASSIGN, safe_name(var.name), [var.read_value(), value, self._mode],
                                 [(var.dtype, var.shape)], self.device_op_shapes)
        var.assign(new)

    def _hyper(self, value):
        """A hyper-parameter as the exported step holds it: a float32 constant (widened in the float64 oracle)."""
        return tf.constant(np.float32(value).astype(self._np))

    # -- step functions -------------------------------------------------------------------------------------
    def _read_weights(self):
        weights = {}
        for name, params in self._params.items():
            weights[name] = {k: (v.read_value() if isinstance(v, tf.Variable) else v) for k, v in params.items()}
        return weights

    def _k_matrix(self, ks):
        rows = [ks.get(name, tf.zeros([self.batch_size], tf.int32)) for name in self.sparse_names]
        return tf.stack(rows, axis=0)

    def train_impl(self, x, y):
        weights = self._read_weights()
        self._x, self._weights = x, weights  # a recomputed block's backward runs the prefix again
        values, saved = self._forward(x, weights)
        out = values[self._output_id]
        loss, g_out = self._loss_and_grad(out, y)
        weight_grads, ks = self._backward(values, saved, g_out)
        ordered = []
        for node in self._nodes:
            if node.kind not in AFFINE_KINDS:
                continue
            for leaf, param in self._params[node.name].items():
                if isinstance(param, tf.Variable):
                    ordered.append(weight_grads[(node.name, leaf)])
        self._apply(ordered)
        return loss, out, self._k_matrix(ks)

    def infer_impl(self, x, y=None):
        values, _ = self._forward(x, self._read_weights())
        out = values[self._output_id]
        loss = self._loss_and_grad(out, y, with_grad=False)[0] if y is not None else None
        return loss, out

    # -- exported signatures --------------------------------------------------------------------------------
    def make_functions(self):
        """tf.functions: ``step`` (TFLM entry: x, y, mode) and the LiteRT signatures."""
        b, n_sparse = self.batch_size, len(self.sparse_names)

        mode_spec = tf.TensorSpec([], tf.int32, name="mode")

        if self.fast:
            # No IF (TFLM copies every operand of an IF into the branch: x, frozen layers' constants): the ops
            # take the mode. On an inference invoke selection keeps nothing (the sparse backward does no work)
            # and no state changes; the loss and output are the same as the builtins graph's.
            @tf.function(autograph=False, input_signature=[self.x_spec(), self.y_spec(), mode_spec])
            def fast_step(x, y, mode):
                self._mode = mode
                loss, out, k = self.train_impl(x, y)
                return {"loss": loss, "output": out, "k": k * tf.cast(tf.equal(mode, 1), tf.int32)}

            return {"step": fast_step}

        @tf.function(autograph=False, input_signature=[self.x_spec(), self.y_spec(), mode_spec])
        def step(x, y, mode):
            def train_branch():
                return self.train_impl(x, y)

            def infer_branch():
                loss, out = self.infer_impl(x, y)
                return loss, out, tf.zeros([n_sparse, b], tf.int32)

            loss, out, k = tf.cond(tf.equal(mode, 1), train_branch, infer_branch)
            return {"loss": loss, "output": out, "k": k}

        @tf.function(autograph=False, input_signature=[self.x_spec(), self.y_spec()])
        def train(x, y):
            loss, out, k = self.train_impl(x, y)
            return {"loss": loss, "output": out, "k": k}

        @tf.function(autograph=False, input_signature=[self.x_spec()])
        def infer(x):
            return {"output": self.infer_impl(x)[1]}

        @tf.function(autograph=False, input_signature=[])
        def save():
            return {safe_name(p): v.read_value() for p, v in zip(self.weight_paths, self.weight_vars)}

        restore_specs = [tf.TensorSpec(s, tf.float32, name=safe_name(p))
                         for p, s in zip(self.weight_paths, self.weight_shapes)]

        @tf.function(autograph=False, input_signature=restore_specs)
        def restore(*values):
            for var, value in zip(self.weight_vars, values):
                var.assign(value)
            return {"restored": tf.constant(len(values), tf.int32)}

        return {"step": step, "train": train, "infer": infer, "save": save, "restore": restore}
