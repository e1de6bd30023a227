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
- ``TINYPROP_SELECT_UNITS``: delta [B, N], ymax [1], params [11] (``SELECT_PARAMS``: a layer's
  ``selection.SelectionRule``) -> ymax_out [1], k [B] int32, kept [B, N] int32 (the same rule as
  ``tinyprop_tf.selection``; a sample the rule skips gets k = 0, and the graph zeroes its error for the bias);
- ``TINYPROP_SELECT_CHANNELS``: the same for a conv error delta [B, positions..., C] (score per channel = sum of
  |delta| over the positions) -> ymax_out, k [B], kept [B, C];
- ``TINYPROP_DENSE_BACKWARD``: x [B, I], w [I, O], delta [B, O], k, kept, outputs wanted [3] int32 (dW, dx,
  db: 0 skips that computation, e.g. dx of the first layer) -> dW [I, O], dx [B, I], db [O] (dW and dx from the
  kept units only; dense bias gradient, TinyProp's rule);
- ``TINYPROP_DENSE_BACKWARD_SGD``: the same inputs plus lr [1], mode and the bias [O] (if the layer has one) ->
  w, dx, bias: plain SGD fused into the sparse backward and applied in place (w -= dW * lr, bias -= db * lr;
  outputs 0 and 2 are inputs 1 and 8 themselves; dx from the weights before the update; no dW tensor and no
  second weight copy exists), used when the optimizer is SGD without momentum;
- ``TINYPROP_CONV2D_FORWARD`` / ``TINYPROP_DEPTHWISE_FORWARD``: x, w (NHWC, Keras kernel layouts), window [7]
  int32 (``WINDOW_PARAMS``), bias [O], then the mode if the window says train_only -> act(conv(x, w) + bias),
  the activation (linear or ReLU) fused (every
  conv forward of the fast graph that has TF's SAME/VALID padding: TFLM's CONV_2D and DEPTHWISE_CONV_2D keep 2 x 4
  bytes per channel of quantization arrays in persistent arena memory per op, which a frozen prefix streamed
  sample by sample repeats per sample, and a separate RELU would hold a second activation-sized tensor);
- ``TINYPROP_GLOBAL_AVERAGE_POOL``: x [B, positions..., C] -> the mean over the positions, [B, C] or keepdims
  [B, 1.., C] (every GlobalAveragePooling of the fast graph: TFLM's MEAN costs ~15x the instructions);
- ``TINYPROP_CONV2D_BACKWARD`` / ``TINYPROP_DEPTHWISE_BACKWARD``: x, w, delta, k, kept, window [7] int32
  (activation 0), wanted -> dW, dx, db, from the kept channels only (Conv1D runs as Conv2D with H = 1);
- ``TINYPROP_CONV2D_POOL_FORWARD``, ``TINYPROP_SELECT_CHANNELS_MASKED``, ``TINYPROP_CONV2D_BACKWARD_MASKED``: a
  trained Conv2D -> ReLU -> global average pooling block run sample by sample with its input recomputed for the
  backward (``step.RecomputedBlock``): the forward gives the pooled values and the ReLU's mask (one bit per
  element, int32 words) instead of the activation; the selection and the per-sample backward rebuild the error
  from mask and pooling gradient; the backward adds this sample's dW, db to the previous samples' (inputs);
- ``TINYPROP_APPLY_GRADIENT``: w, g, mode, hyper [7], then velocity or Adam's m, v and (beta_1^t, beta_2^t) -> w
  and the slots, in place (Keras' SGD / momentum / Nesterov / Adam rules, micro/ ``SgdUpdate``/``AdamUpdate``);
- ``TINYPROP_COUNT_STEP``: the step counter + 1, in place; ``TINYPROP_ASSIGN``: state = value, in place (the
  running max of a layer on the builtins path).
The selection ops and these take the step's ``mode``: on an inference invoke nothing is kept and no state
changes, so the fast graph needs no IF (``TrainStep.make_functions``). Its training state is in place
(``in_place_state``).

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

# The selection ops' params tensor, in order (micro/tflm/tinyprop_tflm.h names the same layout: SelectParam).
SELECT_PARAMS = ("s_min", "s_max", "zeta_pow", "rounding", "reference", "decay", "per_sample_max", "min_kept",
                 "skip_below", "quantile_share", "quantile_rate")
ROUNDING_CODES = {"floor": 0.0, "round": 1.0}
REFERENCE_CODES = {"max": 0.0, "mean": 1.0, "quantile": 2.0}


def select_params(rule) -> list[float]:
    """A ``selection.SelectionRule`` as the selection ops' params tensor (``SELECT_PARAMS``; codes, flags and
    min_kept are exact small integers in float32)."""
    values = {**vars(rule), "rounding": ROUNDING_CODES[rule.rounding], "reference": REFERENCE_CODES[rule.reference]}
    return [float(values[name]) for name in SELECT_PARAMS]


# The conv ops' window tensor, in order (micro/tflm/tinyprop_tflm.h: WindowParam). train_only (the forward ops):
# the op's last input is the step's mode and on an inference invoke it does nothing (a recomputed prefix).
WINDOW_PARAMS = ("stride_h", "stride_w", "dilation_h", "dilation_w", "padding", "activation", "train_only")
PADDING_CODES = {"valid": 0, "same": 1}
ACTIVATION_CODES = {"linear": 0, "relu": 1}  # what the forward ops fuse (micro/ tinyprop::Activation)


def conv_window(strides, padding: str, activation: str = "linear", train_only: bool = False) -> list[int]:
    """A conv layer's window tensor (``WINDOW_PARAMS``): strides (h, w), TF padding ("same"/"valid"), the
    activation a forward op applies (the backward ops take "linear"), whether a forward op runs on training
    invokes only (then its last input is the mode); dilation 1 (what the exporter admits)."""
    values = {"stride_h": strides[0], "stride_w": strides[1], "dilation_h": 1, "dilation_w": 1,
              "padding": PADDING_CODES[padding], "activation": ACTIVATION_CODES[activation],
              "train_only": int(train_only)}
    return [int(values[name]) for name in WINDOW_PARAMS]


DENSE_FORWARD = "TINYPROP_DENSE_FORWARD"
RELU_BACKWARD = "TINYPROP_RELU_BACKWARD"
SELECT_UNITS = "TINYPROP_SELECT_UNITS"
SELECT_CHANNELS = "TINYPROP_SELECT_CHANNELS"
DENSE_BACKWARD = "TINYPROP_DENSE_BACKWARD"
DENSE_BACKWARD_SGD = "TINYPROP_DENSE_BACKWARD_SGD"
CONV2D_FORWARD = "TINYPROP_CONV2D_FORWARD"
DEPTHWISE_FORWARD = "TINYPROP_DEPTHWISE_FORWARD"
GLOBAL_AVERAGE_POOL = "TINYPROP_GLOBAL_AVERAGE_POOL"
CONV2D_BACKWARD = "TINYPROP_CONV2D_BACKWARD"
DEPTHWISE_BACKWARD = "TINYPROP_DEPTHWISE_BACKWARD"
APPLY_GRADIENT = "TINYPROP_APPLY_GRADIENT"
COUNT_STEP = "TINYPROP_COUNT_STEP"
ASSIGN = "TINYPROP_ASSIGN"
CONV2D_POOL_FORWARD = "TINYPROP_CONV2D_POOL_FORWARD"
SELECT_CHANNELS_MASKED = "TINYPROP_SELECT_CHANNELS_MASKED"
CONV2D_BACKWARD_MASKED = "TINYPROP_CONV2D_BACKWARD_MASKED"
DEVICE_OPS = frozenset({DENSE_FORWARD, RELU_BACKWARD, SELECT_UNITS, SELECT_CHANNELS, DENSE_BACKWARD,
                        DENSE_BACKWARD_SGD, CONV2D_FORWARD, DEPTHWISE_FORWARD, GLOBAL_AVERAGE_POOL, CONV2D_BACKWARD,
                        DEPTHWISE_BACKWARD, APPLY_GRADIENT, COUNT_STEP, ASSIGN, CONV2D_POOL_FORWARD,
                        SELECT_CHANNELS_MASKED, CONV2D_BACKWARD_MASKED})

# The ops that update training state in place: output position -> the input position it is (micro/tflm/
# tinyprop_tflm.h). In the converted graph such an output is assigned to a variable the op read at that input;
# ``in_place_state`` makes both the variable's tensor.
IN_PLACE = {
    SELECT_UNITS: {0: 1}, SELECT_CHANNELS: {0: 1}, SELECT_CHANNELS_MASKED: {0: 3},
    DENSE_BACKWARD_SGD: {0: 1, 2: 8},
    APPLY_GRADIENT: {0: 0, 1: 4, 2: 5},
    COUNT_STEP: {0: 0}, ASSIGN: {0: 0},
}
# TINYPROP_APPLY_GRADIENT's hyper [0]: the update rule.
APPLY_RULES = {"sgd": 0, "momentum": 1, "nesterov": 2, "adam": 3}

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

        def resolve(t, alias=alias):  # bound now: one alias map per subgraph
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


_STATE_OPS = {"READ_VARIABLE", "ASSIGN_VARIABLE", "VAR_HANDLE", "CALL_ONCE"}


def in_place_state(data: bytes, first: list[str]) -> tuple[bytes, list[dict]]:
    """The fast graph with its training state in place: every resource variable becomes one TFLM *variable
    tensor* (persistent, never planned, zeroed by AllocateTensors) that the ops read directly and the
    ``IN_PLACE`` ops update where it lives, and that is also a model output, so the application sets its initial
    value and saves/restores it through ``interpreter.output(i)``.

    TFLM's resource variables cost a copy per READ_VARIABLE and an op output per new value before
    ASSIGN_VARIABLE copies it back (for the demo MLP's first layer: 3 x 100 KB at the step's peak), and the
    initialiser subgraph keeps the initial values as a second copy in flash. Here: READ_VARIABLE outputs become
    the variable's tensor; ASSIGN_VARIABLE(v, value) requires ``value`` to be an ``IN_PLACE`` output of an op that
    read ``v`` at the matching input, which then writes the variable's tensor itself; VAR_HANDLE, CALL_ONCE and
    the initialiser subgraph go. An op whose outputs are all state moves to just after the last other reader of
    that state (the converter orders independent ops freely), and every reader must then precede the writer:
    otherwise the export fails rather than compute with an updated value.

    ``first``: variable names that come first in the state (the weights, in manifest order); the others follow
    by name. Returns (bytes, [{name, output, dtype, shape}] in state order).
    """
    model = flatbuffer.load(data, "converted fast model")
    codes = model.operatorCodes
    sg = model.subgraphs[0]
    name_of = lambda op: flatbuffer.op_name(codes[op.opcodeIndex])  # noqa: E731
    handles = flatbuffer.var_handles(model, sg)
    for op in sg.operators:
        if name_of(op) in ("IF", "WHILE"):
            raise flatbuffer.InvalidModelError(f"in-place state: the entry subgraph has a {name_of(op)}")
    state = {}  # variable name -> its tensor
    alias = {}  # READ_VARIABLE output -> variable tensor
    for op in sg.operators:
        if name_of(op) != "READ_VARIABLE":
            continue
        name = handles[int(op.inputs[0])]
        read = sg.tensors[int(op.outputs[0])]
        if name not in state:
            t = fb.TensorT()
            t.shape = None if read.shape is None else np.array(read.shape, np.int32)
            t.type, t.isVariable, t.name = read.type, True, name.encode()
            model.buffers.append(fb.BufferT())
            t.buffer = len(model.buffers) - 1
            sg.tensors.append(t)
            state[name] = len(sg.tensors) - 1
        alias[int(op.outputs[0])] = state[name]
    for op in sg.operators:
        if op.inputs is not None:
            op.inputs = np.array([alias.get(int(t), int(t)) for t in op.inputs], np.int32)
    producer = {int(t): (op, pos) for op in sg.operators for pos, t in enumerate(op.outputs if op.outputs is not None
                                                                                  else [])}
    written = {}
    for op in sg.operators:
        if name_of(op) != "ASSIGN_VARIABLE":
            continue
        name = handles[int(op.inputs[0])]
        value = int(op.inputs[1])
        writer, pos = producer.get(value, (None, None))
        device = name_of(writer)[len("CUSTOM:"):] if writer is not None else None
        pairs = IN_PLACE.get(device, {})
        var = state.get(name)
        if pos not in pairs or var is None or len(writer.inputs) <= pairs[pos] or int(writer.inputs[pairs[pos]]) != var:
            raise flatbuffer.InvalidModelError(
                f"in-place state: variable {name!r} is assigned a value that no TinyProp op computed in place "
                f"(from {name_of(writer) if writer is not None else 'a constant or input'})")
        if name in written:
            raise flatbuffer.InvalidModelError(f"in-place state: variable {name!r} is written twice")
        outputs = [int(t) for t in writer.outputs]
        outputs[pos] = var
        writer.outputs = np.array(outputs, np.int32)
        written[name] = writer
        for other in sg.operators:  # anything else that used the new value reads the variable instead
            if other is not writer and other.inputs is not None:
                other.inputs = np.array([var if int(t) == value else int(t) for t in other.inputs], np.int32)
    ops = [op for op in sg.operators if name_of(op) not in _STATE_OPS]
    state_tensors = set(state.values())

    def readers(var, ops):
        return [i for i, o in enumerate(ops) if var in [int(t) for t in o.inputs] and o is not written_by[var]]

    written_by = {state[n]: w for n, w in written.items()}
    for name, writer in written.items():
        if not all(int(t) in state_tensors for t in writer.outputs):
            continue  # it computes more than state (dx, k ...): stays where the converter put it
        var_set = [int(t) for t in writer.outputs]
        last = max((i for v in var_set for i in readers(v, ops)), default=-1)
        at = ops.index(writer)
        if last > at:
            ops.pop(at)
            ops.insert(last, writer)
    for var, writer in written_by.items():
        late = [i for i in readers(var, ops) if i > ops.index(writer)]
        if late:
            raise flatbuffer.InvalidModelError(
                f"in-place state: {flatbuffer.tensor_name(sg.tensors[var])} is read by op {late[0]} "
                f"({name_of(ops[late[0]])}) after {name_of(writer)} updated it")
    sg.operators = ops
    order = [n for n in first if n in state] + sorted(n for n in state if n not in set(first))
    missing = [n for n in first if n not in state]
    if missing:
        raise flatbuffer.InvalidModelError(f"in-place state: weights {missing} are not variables of the step")
    n_out = len(sg.outputs)
    sg.outputs = np.array([int(t) for t in sg.outputs] + [state[n] for n in order], np.int32)
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == 0:
            for n in order:
                tm = fb.TensorMapT()
                tm.name, tm.tensorIndex = n.encode(), state[n]
                sig.outputs.append(tm)
    model.subgraphs = [sg]  # the initialiser subgraph: the application sets the initial state
    flatbuffer.prune_unused_tensors(model, sg)
    rows = []
    for i, n in enumerate(order):
        t = sg.tensors[int(sg.outputs[n_out + i])]
        rows.append({"name": n, "output": n_out + i, "dtype": flatbuffer.type_name(t.type),
                     "shape": [int(d) for d in (t.shape if t.shape is not None else [])]})
    return flatbuffer.serialize(model), rows


def initial_state(rows: list[dict], weights: dict) -> dict[int, np.ndarray]:
    """{output index: initial value} of the in-place state ``rows`` (manifest ``tflm_fast.state``): ``weights``
    {name: array} (``artifacts.exported_weights``) for the weights, else the row's ``fill`` (optimizer slots and
    the step counter 0, running maxima selection.YMAX_INIT)."""
    values = {}
    for r in rows:
        dtype = flatbuffer.numpy_dtype(getattr(fb.TensorType, r["dtype"].upper()))
        if "fill" in r:
            values[r["output"]] = np.full(r["shape"], r["fill"], dtype)
        else:
            values[r["output"]] = np.asarray(weights[r["name"]], dtype).reshape(r["shape"])
    return values
