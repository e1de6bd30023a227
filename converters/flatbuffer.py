"""TFLite flatbuffer utilities: validation, op lists, the TFLM builtin set and TFLM type legalisation.

Only the flatbuffer schema bundled with the ``tflite-micro`` wheel is used (no TensorFlow import), so the
verification worker can run in a light subprocess.
"""

from __future__ import annotations

import collections
import struct

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16  # the converter aligns constant buffers to 16 bytes; MCUs fault on misaligned floats

# Builtin operators with a kernel in TFLM: the ``tflite::Register_*`` symbols of the tflite-micro wheel
# (0.dev20261023182759, TFLM commit 8f6596d), minus the non-builtin (custom/signal) registrations.
# ``tests/test_export.py`` re-reads the symbols from the installed ``_runtime.so`` to keep this list honest.
TFLM_BUILTINS = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND BROADCAST_ARGS
BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD
FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS
LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN MINIMUM
MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6
RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX
SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM
SVDF TANH TRANSPOSE TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())

# Ops whose TFLM kernels reject int32 tensors (found by running the exported graph): reductions over counts
# are rerouted through float32 by ``legalize_for_tflm`` (exact while the counts stay below 2**24).
TFLM_NO_INT32 = ("SUM", "CUMSUM")

_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
_NUMPY_TYPES = {
    fb.TensorType.FLOAT32: np.float32, fb.TensorType.INT32: np.int32, fb.TensorType.BOOL: np.bool_,
    fb.TensorType.INT64: np.int64, fb.TensorType.INT8: np.int8, fb.TensorType.UINT8: np.uint8,
    fb.TensorType.INT16: np.int16, fb.TensorType.FLOAT16: np.float16,
}


class InvalidModelError(ValueError):
    """A .tflite file that is not a well-formed TFLite flatbuffer (truncated, corrupted, wrong format)."""


def type_name(t: int) -> str:
    return _TYPE_NAMES.get(t, str(t)).lower()


def numpy_dtype(t: int):
    return _NUMPY_TYPES.get(t)


def builtin_code(opcode) -> int:
    return max(opcode.builtinCode, opcode.deprecatedBuiltinCode)


def op_name(opcode) -> str:
    code = builtin_code(opcode)
    if code == fb.BuiltinOperator.CUSTOM:
        custom = opcode.customCode
        return "CUSTOM:" + (custom.decode() if isinstance(custom, bytes) else str(custom))
    return _OP_NAMES.get(code, f"UNKNOWN_{code}")


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------
def load(data, what: str = "model"):
    """Parse and validate a TFLite flatbuffer; returns ``fb.ModelT``. Raises InvalidModelError with a reason.

    Checks (so that neither interpreter is handed something it may crash on): size and file identifier,
    the root offset, a full parse of every table (bounds-checked in Python), operator-code / tensor / buffer /
    subgraph indices, constant buffer sizes against tensor shapes, and that data stays inside the file.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise InvalidModelError(f"{what}: expected bytes, got {type(data).__name__}")
    size = len(data)
    if size < 16:
        raise InvalidModelError(f"{what}: {size} bytes is too short to be a TFLite flatbuffer")
    if data[4:8] != FILE_IDENTIFIER:
        raise InvalidModelError(
            f"{what}: not a TFLite flatbuffer (file identifier {data[4:8]!r}, expected {FILE_IDENTIFIER!r})"
        )
    root = struct.unpack_from("<I", data, 0)[0]
    if root < 8 or root + 4 > size:
        raise InvalidModelError(f"{what}: root table offset {root} outside the {size}-byte file (truncated?)")
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))
    except Exception as e:  # struct.error, IndexError, UnicodeDecodeError ...
        raise InvalidModelError(f"{what}: corrupt or truncated flatbuffer ({type(e).__name__}: {e})") from None
    _check_structure(model, size, what)
    return model


def _check_structure(model, size, what):
    def bad(msg):
        raise InvalidModelError(f"{what}: {msg}")

    if not model.subgraphs:
        bad("no subgraphs")
    n_codes = len(model.operatorCodes or [])
    n_buffers = len(model.buffers or [])
    n_subgraphs = len(model.subgraphs)
    for b_i, buf in enumerate(model.buffers or []):
        if buf.offset and (buf.offset + buf.size > size):
            bad(f"buffer {b_i} points past the end of the file (truncated?)")
    for s_i, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        n_t = len(tensors)
        for t_i, t in enumerate(tensors):
            if t.buffer < 0 or t.buffer >= max(n_buffers, 1):
                bad(f"subgraph {s_i} tensor {t_i}: buffer index {t.buffer} out of range")
            if t.shape is not None and any(int(d) < 0 for d in t.shape):
                bad(f"subgraph {s_i} tensor {t_i}: negative dimension {list(t.shape)}")
            if t.buffer and n_buffers:
                buf = model.buffers[t.buffer]
                nbytes = len(buf.data) if buf.data is not None else buf.size
                dtype = numpy_dtype(t.type)
                if nbytes and dtype is not None and t.shape is not None:
                    expected = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                    if expected != nbytes:
                        bad(f"subgraph {s_i} tensor {t_i}: constant data has {nbytes} bytes, shape needs {expected}")
        for io in (sg.inputs, sg.outputs):
            for t in io if io is not None else []:
                if not 0 <= t < n_t:
                    bad(f"subgraph {s_i}: input/output tensor index {t} out of range")
        for o_i, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                bad(f"subgraph {s_i} operator {o_i}: opcode index {op.opcodeIndex} out of range")
            operands = list(op.inputs if op.inputs is not None else [])
            operands += list(op.outputs if op.outputs is not None else [])
            for t in operands:
                if t != -1 and not 0 <= t < n_t:
                    bad(f"subgraph {s_i} operator {o_i}: tensor index {t} out of range")
            opts = op.builtinOptions
            for attr in ("thenSubgraphIndex", "elseSubgraphIndex", "condSubgraphIndex", "bodySubgraphIndex",
                         "initSubgraphIndex"):
                idx = getattr(opts, attr, None)
                if idx is not None and not 0 <= idx < n_subgraphs:
                    bad(f"subgraph {s_i} operator {o_i}: {attr} {idx} out of range")


# --------------------------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------------------------
def ops_used(model) -> dict[str, int]:
    """Operator name -> count over all subgraphs."""
    counts = collections.Counter()
    for sg in model.subgraphs:
        for op in sg.operators or []:
            counts[op_name(model.operatorCodes[op.opcodeIndex])] += 1
    return dict(sorted(counts.items()))


def non_tflm_ops(model) -> list[str]:
    return sorted(name for name in ops_used(model) if name not in TFLM_BUILTINS)


def int32_problems(model) -> list[str]:
    """Ops whose TFLM kernels lack int32 that still see int32 tensors."""
    out = []
    for s_i, sg in enumerate(model.subgraphs):
        for op in sg.operators or []:
            name = op_name(model.operatorCodes[op.opcodeIndex])
            if name in TFLM_NO_INT32 and sg.tensors[op.inputs[0]].type == fb.TensorType.INT32:
                out.append(f"{name} on int32 in subgraph {s_i} ({sg.tensors[op.outputs[0]].name.decode()})")
    return out


def tensor_name(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def io_details(model, subgraph=0, signature=None):
    """Inputs/outputs of a subgraph: [{name, index, tensor, shape, dtype}] in subgraph order; names from the
    signature def when there is one (the converted subgraph's order is not the signature's)."""
    sg = model.subgraphs[subgraph]
    by_tensor_in, by_tensor_out = {}, {}
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == subgraph and (signature is None or sig.signatureKey.decode() == signature):
            by_tensor_in = {tm.tensorIndex: tm.name.decode() for tm in sig.inputs or []}
            by_tensor_out = {tm.tensorIndex: tm.name.decode() for tm in sig.outputs or []}

    def rows(indices, names):
        out = []
        for i, t_idx in enumerate(indices if indices is not None else []):
            t = sg.tensors[t_idx]
            out.append({
                "name": names.get(t_idx, tensor_name(t)),
                "index": i,
                "shape": [int(d) for d in (t.shape if t.shape is not None else [])],
                "dtype": type_name(t.type),
            })
        return out

    return rows(sg.inputs, by_tensor_in), rows(sg.outputs, by_tensor_out)


# --------------------------------------------------------------------------------------------------------------
# Serialisation with aligned buffers
# --------------------------------------------------------------------------------------------------------------
class _AlignedBufferT(fb.BufferT):
    """BufferT whose data vector starts on a 16-byte boundary (the generated Pack aligns to 1)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head: builder.head + len(payload)] = payload
            data = builder.EndVector(len(payload))
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        fb.BufferAddOffset(builder, self.offset)
        fb.BufferAddSize(builder, self.size)
        return fb.BufferEnd(builder)


def serialize(model) -> bytes:
    for i, buf in enumerate(model.buffers or []):
        if type(buf) is fb.BufferT:
            aligned = _AlignedBufferT()
            aligned.data, aligned.offset, aligned.size = buf.data, buf.offset, buf.size
            model.buffers[i] = aligned
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# --------------------------------------------------------------------------------------------------------------
# TFLM legalisation
# --------------------------------------------------------------------------------------------------------------
def _opcode_index(model, builtin):
    for i, oc in enumerate(model.operatorCodes):
        if builtin_code(oc) == builtin:
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode = builtin
    oc.deprecatedBuiltinCode = min(builtin, 127)
    oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _new_tensor(model, sg, like, ttype, suffix):
    t = fb.TensorT()
    t.shape = None if like.shape is None else np.array(like.shape, np.int32)
    t.shapeSignature = None if like.shapeSignature is None else np.array(like.shapeSignature, np.int32)
    t.type = ttype
    empty = fb.BufferT()
    model.buffers.append(empty)
    t.buffer = len(model.buffers) - 1
    t.name = (tensor_name(like) + suffix).encode()
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def prune_unused_tensors(model, sg) -> None:
    """Drops the tensors no operator, subgraph input/output or signature of ``sg`` refers to (TFLM keeps
    bookkeeping, and may plan a buffer, for every tensor of a subgraph), renumbering the references."""
    index = model.subgraphs.index(sg)
    used = set()
    for op in sg.operators or []:
        used.update(int(t) for t in (op.inputs if op.inputs is not None else []) if t >= 0)
        used.update(int(t) for t in (op.outputs if op.outputs is not None else []) if t >= 0)
    used.update(int(t) for t in (sg.inputs if sg.inputs is not None else []))
    used.update(int(t) for t in (sg.outputs if sg.outputs is not None else []))
    sigs = [s for s in model.signatureDefs or [] if s.subgraphIndex == index]
    for sig in sigs:
        used.update(int(tm.tensorIndex) for tm in list(sig.inputs or []) + list(sig.outputs or []))
    keep = sorted(used)
    new = {old: i for i, old in enumerate(keep)}
    sg.tensors = [sg.tensors[i] for i in keep]

    def remap(values):
        return None if values is None else np.array([new[int(t)] if t >= 0 else int(t) for t in values], np.int32)

    for op in sg.operators or []:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
    sg.inputs, sg.outputs = remap(sg.inputs), remap(sg.outputs)
    for sig in sigs:
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            tm.tensorIndex = new[int(tm.tensorIndex)]


def _cast_op(model, src, dst, in_type, out_type):
    op = fb.OperatorT()
    op.opcodeIndex = _opcode_index(model, fb.BuiltinOperator.CAST)
    op.inputs = np.array([src], np.int32)
    op.outputs = np.array([dst], np.int32)
    op.builtinOptionsType = fb.BuiltinOptions.CastOptions
    opts = fb.CastOptionsT()
    opts.inDataType, opts.outDataType = in_type, out_type
    op.builtinOptions = opts
    return op


def legalize_for_tflm(data: bytes, max_count: int):
    """Reroute int32 SUM/CUMSUM through float32 (TFLM's kernels have no int32 path).

    Only rewrites reductions of *counts* (the input is a CAST from BOOL, as the selection's tie and rank
    counting produces), which float32 represents exactly while ``max_count < 2**24``; anything else is left
    for the op check to refuse. When the CAST from BOOL feeds only the reduction it is turned into a
    BOOL->FLOAT32 cast in place (no extra tensor). Returns (new bytes, notes, parsed model).
    """
    model = load(data, "converted model")
    if max_count >= 2**24:
        return data, [], model
    notes = []
    cast_code = fb.BuiltinOperator.CAST
    for s_i, sg in enumerate(model.subgraphs):
        ops = list(sg.operators or [])
        producers = {}
        consumers = collections.Counter()
        for op in ops:
            for t in op.outputs if op.outputs is not None else []:
                producers[int(t)] = op
            for t in op.inputs if op.inputs is not None else []:
                consumers[int(t)] += 1
        new_ops = []
        for op in ops:
            name = op_name(model.operatorCodes[op.opcodeIndex])
            src = int(op.inputs[0]) if op.inputs is not None and len(op.inputs) else -1
            if name not in TFLM_NO_INT32 or src < 0 or sg.tensors[src].type != fb.TensorType.INT32:
                new_ops.append(op)
                continue
            prod = producers.get(src)
            from_bool = (
                prod is not None
                and builtin_code(model.operatorCodes[prod.opcodeIndex]) == cast_code
                and sg.tensors[int(prod.inputs[0])].type == fb.TensorType.BOOL
            )
            is_output = src in set(int(t) for t in (sg.outputs if sg.outputs is not None else []))
            if not from_bool:
                new_ops.append(op)  # not a count: leave it, the int32 check refuses the model
                continue
            out = int(op.outputs[0])
            if consumers[src] == 1 and not is_output:
                # CAST(bool -> int32) becomes CAST(bool -> float32).
                sg.tensors[src].type = fb.TensorType.FLOAT32
                if prod.builtinOptions is not None and hasattr(prod.builtinOptions, "outDataType"):
                    prod.builtinOptions.outDataType = fb.TensorType.FLOAT32
                f_in = src
            else:
                f_in = _new_tensor(model, sg, sg.tensors[src], fb.TensorType.FLOAT32, "/tflm_f32")
                new_ops.append(_cast_op(model, src, f_in, fb.TensorType.INT32, fb.TensorType.FLOAT32))
            f_out = _new_tensor(model, sg, sg.tensors[out], fb.TensorType.FLOAT32, "/tflm_f32")
            op.inputs = np.array([f_in] + [int(t) for t in op.inputs[1:]], np.int32)
            op.outputs = np.array([f_out], np.int32)
            new_ops.append(op)
            new_ops.append(_cast_op(model, f_out, out, fb.TensorType.FLOAT32, fb.TensorType.INT32))
            notes.append(f"subgraph {s_i}: {name} over int32 counts ({tensor_name(sg.tensors[out])}) "
                         "computed in float32 (exact below 2**24)")
        sg.operators = new_ops
    if not notes:
        return data, [], model
    return serialize(model), notes, model


# --------------------------------------------------------------------------------------------------------------
# Resource variables
# --------------------------------------------------------------------------------------------------------------
def var_handles(model, sg):
    """tensor index -> shared name of the VAR_HANDLE producing it, in one subgraph."""
    out = {}
    for op in sg.operators or []:
        if builtin_code(model.operatorCodes[op.opcodeIndex]) == fb.BuiltinOperator.VAR_HANDLE:
            name = op.builtinOptions.sharedName
            out[int(op.outputs[0])] = name.decode() if isinstance(name, bytes) else str(name)
    return out


def variable_names(model) -> list[str]:
    """Shared names of all resource variables."""
    names = set()
    for sg in model.subgraphs:
        names.update(var_handles(model, sg).values())
    return sorted(names)


def _branch_read_map(model, branch_index, sg0_handles, if_inputs):
    """variable shared name -> first READ_VARIABLE output tensor in a branch subgraph."""
    bsg = model.subgraphs[branch_index]
    handles_b = var_handles(model, bsg)
    branch_inputs = [int(t) for t in bsg.inputs]
    reads = {}
    for rop in bsg.operators or []:
        if builtin_code(model.operatorCodes[rop.opcodeIndex]) != fb.BuiltinOperator.READ_VARIABLE:
            continue
        res = int(rop.inputs[0])
        name = handles_b.get(res)
        if name is None and res in branch_inputs:
            name = sg0_handles.get(if_inputs[branch_inputs.index(res)])
        if name is not None and name not in reads:
            reads[name] = int(rop.outputs[0])
    return reads


def with_variable_outputs(data: bytes, names: list[str]) -> bytes:
    """A *probe* copy of a TFLM train model whose entry subgraph also outputs the named variables.

    TFLM has no API to read resource variables, and its preserve-all-tensors mode caps the tensor count
    (1024), so verification reads the weights through extra outputs: each branch of the entry IF returns the
    tensor its first READ_VARIABLE of that variable produces (in the inference branch: the current weights).
    Only input/output lists change; every operator, kernel and tensor of the computation stays as it is.
    The extra outputs follow the original ones, in ``names`` order.
    """
    model = load(data, "train.tflite")
    sg0 = model.subgraphs[0]
    handles0 = var_handles(model, sg0)
    ifs = [op for op in sg0.operators or []
           if builtin_code(model.operatorCodes[op.opcodeIndex]) == fb.BuiltinOperator.IF]
    if len(ifs) != 1:
        raise InvalidModelError(f"expected one IF in the entry subgraph, found {len(ifs)}")
    op = ifs[0]
    if_inputs = [int(t) for t in op.inputs[1:]]
    branches = (op.builtinOptions.thenSubgraphIndex, op.builtinOptions.elseSubgraphIndex)
    reads = [_branch_read_map(model, b, handles0, if_inputs) for b in branches]
    new_if_outputs = [int(t) for t in op.outputs]
    new_sg0_outputs = [int(t) for t in sg0.outputs]
    branch_outputs = [[int(t) for t in model.subgraphs[b].outputs] for b in branches]
    for name in names:
        if any(name not in r for r in reads):
            raise InvalidModelError(f"variable {name!r} is not read in both branches of the entry IF")
        like = model.subgraphs[branches[1]].tensors[reads[1][name]]
        t = _new_tensor(model, sg0, like, like.type, "")
        sg0.tensors[t].name = f"probe/{name}".encode()
        new_if_outputs.append(t)
        new_sg0_outputs.append(t)
        for i in range(2):
            branch_outputs[i].append(reads[i][name])
    op.outputs = np.array(new_if_outputs, np.int32)
    sg0.outputs = np.array(new_sg0_outputs, np.int32)
    for i, b in enumerate(branches):
        model.subgraphs[b].outputs = np.array(branch_outputs[i], np.int32)
    return serialize(model)
