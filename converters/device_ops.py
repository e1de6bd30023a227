"""The TinyProp TFLM custom operators in an exported graph (the "fast" train step).

The builtins-only ``train.tflite`` computes the sparse step as masked dense algebra: right numbers, no saving
(and an O(M²) selection). ``train_fast.tflite`` calls the C++ kernels of ``micro/`` instead, registered in TFLM
as custom operators (``micro/tflm/tinyprop_tflm.h``):

- ``TINYPROP_DENSE_FORWARD``: x [B, I], w [I, O], bias [O] -> z [B, O] (every Dense forward of the fast graph:
  TFLM's BATCH_MATMUL would keep a transposed copy of each [I, O] kernel in persistent arena memory, one per op
  and per branch of the train/infer IF, and the converter folds an explicit transpose back into the matmul);
- ``TINYPROP_RELU_BACKWARD``: g, out (ReLU's output) -> g where out > 0, else +0 (TF's ReluGrad, a select, as
  one op). The builtins graph's ``g * cast(out > 0)`` leaves a mask the converter schedules right after the
  forward, alive next to each activation until the backward (and gives -0 for a negative g, NaN for an
  infinite one, where the unit is off);
- ``TINYPROP_SELECT_UNITS``: delta [B, N], ymax [1], params [4] = (s_min, s_max, zeta_pow, rounding 0|1)
  -> ymax_out [1], k [B] int32, kept [B, N] int32 (the same rule as ``tinyprop_tf.selection``);
- ``TINYPROP_SELECT_CHANNELS``: the same for a conv error delta [B, positions..., C] (score per channel = sum of
  |delta| over the positions) -> ymax_out, k [B], kept [B, C];
- ``TINYPROP_DENSE_BACKWARD``: x [B, I], w [I, O], delta [B, O], k, kept, outputs wanted [3] int32 (dW, dx,
  db: 0 skips that computation, e.g. dx of the first layer) -> dW [I, O], dx [B, I], db [O] (dW and dx from the
  kept units only; dense bias gradient, TinyProp's rule);
- ``TINYPROP_DENSE_BACKWARD_SGD``: the same inputs plus lr [1] and the bias [O] (if the layer has one) ->
  w_new = w - dW * lr [I, O], dx, b_new = bias - db * lr [O]: plain SGD fused into the sparse backward (the graph
  assigns w_new; no dW tensor lives next to w and w_new), used when the optimizer is SGD without momentum;
- ``TINYPROP_CONV2D_BACKWARD`` / ``TINYPROP_DEPTHWISE_BACKWARD``: x, w, delta (NHWC, Keras kernel layouts), k,
  kept, window [7] int32 (stride_h, stride_w, dilation_h, dilation_w, padding 0 VALID / 1 SAME, 0, 0), wanted
  -> dW, dx, db, from the kept channels only (Conv1D runs as Conv2D with H = 1).

How they get into the flatbuffer: TensorFlow's converter has no way to declare a custom op with a fixed
signature, so the train step calls a placeholder ``tf.py_function`` named ``<OP>__<tag>`` (never executed: the
graph is only traced) whose outputs pass through ``tf.ensure_shape`` (so the converter keeps static shapes
downstream). With ``allow_custom_ops`` both arrive as custom ops ``EagerPyFunc`` / ``EnsureShape``;
``finalize`` then renames each ``EagerPyFunc`` to the TinyProp op its output tensors are named after, gives its
outputs their static shapes and removes the ``EnsureShape`` pass-throughs. Anything left that is neither a TFLM
builtin nor a TinyProp op makes the export fail.
"""

from __future__ import annotations

import re

import numpy as np

from tinyprop_tf.converters import flatbuffer
from tinyprop_tf.converters.flatbuffer import fb

DENSE_FORWARD = "TINYPROP_DENSE_FORWARD"
RELU_BACKWARD = "TINYPROP_RELU_BACKWARD"
SELECT_UNITS = "TINYPROP_SELECT_UNITS"
SELECT_CHANNELS = "TINYPROP_SELECT_CHANNELS"
DENSE_BACKWARD = "TINYPROP_DENSE_BACKWARD"
DENSE_BACKWARD_SGD = "TINYPROP_DENSE_BACKWARD_SGD"
CONV2D_BACKWARD = "TINYPROP_CONV2D_BACKWARD"
DEPTHWISE_BACKWARD = "TINYPROP_DEPTHWISE_BACKWARD"
DEVICE_OPS = frozenset({DENSE_FORWARD, RELU_BACKWARD, SELECT_UNITS, SELECT_CHANNELS, DENSE_BACKWARD,
                        DENSE_BACKWARD_SGD, CONV2D_BACKWARD, DEPTHWISE_BACKWARD})

_PLACEHOLDER = "EagerPyFunc"
_SHAPE_PASS = "EnsureShape"
_TAG = re.compile(r"(TINYPROP_[A-Z0-9_]+?)__")  # the op name in a placeholder's name "<OP>__<tag>"


def _never_executed(*_):
    raise RuntimeError("TinyProp device op placeholder: this graph is for conversion only")


def call(op: str, tag: str, inputs, outputs, shapes: dict):
    """Placeholder for ``op`` in a traced train step; ``outputs`` = [(dtype, static shape), ...].

    ``shapes`` (one dict per exported step) records the output shapes under the placeholder's name for
    ``finalize``: the converter drops the shape of an output nothing consumes (e.g. dx of the first layer).
    """
    import tensorflow as tf  # here, not at module load: board projects read this module's op names without TF

    if op not in DEVICE_OPS:
        raise ValueError(f"unknown device op {op!r}")
    # A serial number keeps every placeholder's name unique even where one graph calls the same op for the same
    # layer twice (the Dense forward: the step's output and its loss); TensorFlow would otherwise uniquify the
    # name itself, in a way finalize could not undo.
    name = f"{op}__{re.sub(r'[^A-Za-z0-9]', '_', tag)}_{len(shapes)}"
    shapes[name] = [[int(d) for d in shape] for _, shape in outputs]
    results = tf.py_function(_never_executed, list(inputs), [dtype for dtype, _ in outputs], name=name)
    return [tf.ensure_shape(r, shape) for r, (_, shape) in zip(results, outputs)]


def _custom_code(model, name: str) -> int:
    for i, oc in enumerate(model.operatorCodes):
        if flatbuffer.builtin_code(oc) == fb.BuiltinOperator.CUSTOM and oc.customCode in (name, name.encode()):
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode = oc.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    oc.customCode = name.encode()
    oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def finalize(data: bytes, shapes: dict) -> tuple[bytes, dict[str, int]]:
    """Placeholders -> TinyProp custom ops (see module doc); ``shapes`` as filled by ``call``.
    Returns (bytes, {op: count})."""
    model = flatbuffer.load(data, "converted fast model")
    counts: dict[str, int] = {}
    codes = model.operatorCodes
    aliases = []
    for sg in model.subgraphs:
        # EnsureShape: out = in (with out's static shape). Rewire every use of out to in, then drop the op.
        alias = {}
        kept_ops = []
        for op in sg.operators or []:
            name = flatbuffer.op_name(codes[op.opcodeIndex])
            if name == "CUSTOM:" + _SHAPE_PASS:
                src, dst = int(op.inputs[0]), int(op.outputs[0])
                target = sg.tensors[dst]
                sg.tensors[src].shape = None if target.shape is None else np.array(target.shape, np.int32)
                sg.tensors[src].shapeSignature = None
                alias[dst] = src
            else:
                kept_ops.append(op)

        def resolve(t):
            while t in alias:
                t = alias[t]
            return t

        for op in kept_ops:
            if op.inputs is not None:
                op.inputs = np.array([resolve(int(t)) if t >= 0 else int(t) for t in op.inputs], np.int32)
        if sg.outputs is not None:
            sg.outputs = np.array([resolve(int(t)) for t in sg.outputs], np.int32)
        sg.operators = kept_ops
        aliases.append(resolve)
        # EagerPyFunc -> the TinyProp op named by its outputs.
        for op in kept_ops:
            if flatbuffer.op_name(codes[op.opcodeIndex]) != "CUSTOM:" + _PLACEHOLDER:
                continue
            # Output 0 carries the placeholder's name ("cond/TINYPROP_SELECT_UNITS__fc1_3"); the others add a suffix.
            first = flatbuffer.tensor_name(sg.tensors[int(op.outputs[0])])
            match = _TAG.search(first + "__")
            key = first[match.start():] if match else None
            if key not in shapes or match.group(1) not in DEVICE_OPS or len(shapes[key]) != len(op.outputs):
                raise flatbuffer.InvalidModelError(f"unrecognised placeholder op (first output {first!r})")
            device_op = match.group(1)
            for t, shape in zip(op.outputs, shapes[key]):
                sg.tensors[int(t)].shape = np.array(shape, np.int32)
                sg.tensors[int(t)].shapeSignature = None
            op.opcodeIndex = _custom_code(model, device_op)
            op.customOptions = None
            op.builtinOptionsType = 0
            op.builtinOptions = None
            counts[device_op] = counts.get(device_op, 0) + 1
            codes = model.operatorCodes
    for sig in model.signatureDefs or []:
        for t in sig.outputs or []:
            t.tensorIndex = aliases[sig.subgraphIndex](int(t.tensorIndex))
    leftovers = [n for n in flatbuffer.ops_used(model) if n.startswith("CUSTOM:") and n[7:] not in DEVICE_OPS]
    if leftovers:
        raise flatbuffer.InvalidModelError(f"fast graph: custom ops other than the TinyProp ones: {leftovers}")
    return flatbuffer.serialize(model), counts
