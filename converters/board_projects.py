"""Ready-to-build board projects (ESP-IDF, Zephyr / nRF Connect SDK) from an ``export_training_model`` directory.

    from tinyprop_tf.converters import write_board_project
    project = write_board_project("export/", "esp32s3", "export/esp32s3_project")
    print(project.budget_text)

Boards: ``esp32s3`` and ``esp32c3`` (ESP-IDF application with the ``espressif/esp-tflite-micro`` component),
``nrf52840dk`` and ``nrf5340dk`` (Zephyr application; TFLM is Zephyr's optional ``tflite-micro`` west project).

When the export has ``train_fast.tflite`` (``export_training_model(fast=True)``), the project runs it (``fast=None``
default; ``fast=False`` keeps ``train.tflite``): it embeds that model, copies the micro/ kernels and their TFLM glue
(``tinyprop_kernels/``, built with ``-ffp-contract=off``) and registers the TinyProp custom operators with
``AddCustom`` next to the builtins, so the sparse layers' backward really skips unselected rows and filters.

**What is generated and what is copied.** The application is the on-device training app of ``micro/app``, the same
compiled and host-tested C++ in every project, copied unchanged (micro/README.md, "The on-device training app"):
the entry ``main/main.cc`` (ESP-IDF) or ``src/main.cpp`` (Zephyr) with the platform's flash adapter, the training
loop, state walk and persistence glue (``micro/persist``), and a thin TFLM part. This module emits only data --
``tinyprop_app_config.h`` (steps, shapes, state sizes, model id, state partition, the op registration list as
X-macros), ``samples.cc``, ``tinyprop_state.cc`` (the state layout table), the model arrays -- and the build files,
manifests and README, rendered from ``converters/templates/`` with ``string.Template``.

What the application does, per boot:

1. registers exactly the operators of the model (``manifest["tflm"]["ops"]``, or ``["tflm_fast"]``) in a
   ``MicroMutableOpResolver``, creates the interpreter on a static arena of ``TINYPROP_ARENA_BYTES`` with a
   ``MicroResourceVariables`` for the model's resource variables;
2. runs one inference invoke first: it runs the initialiser subgraph (``CALL_ONCE``), which assigns the exported
   weights to the resource variables;
3. loads the newest valid training state from flash (two-slot CRC32 persistence, ``micro/persist``) and, when its
   model id and size match, writes it into the state tensors;
4. trains ``steps`` steps over the samples of ``samples.cc`` (printing loss and k per step), runs inference mode
   and prints the predictions;
5. reads every state tensor back and saves the state with ``SaveWeights`` (the slot holding the previous state is
   never touched).

**How the state is reached.** The app reads and writes state tensor *i* of the layout table through one interface
(``tinyprop::app::StateAccess``); only ``micro/app/tflm/resource_variable_state.cc`` knows the tensors are TFLM
resource variables. The Python tflite-micro interpreter cannot read resource variables, and ``train.tflite`` has
no weight outputs (``verify`` uses a *probe* copy with extra outputs). On the device no model change is needed:
the application owns the ``tflite::MicroResourceVariables`` object it passes to the interpreter, whose public
``CreateIdIfNoneFound(container, shared_name)`` finds a variable by its shared name (after ``AllocateTensors``;
``container == nullptr`` matches any container), ``Read(id, eval_tensor)`` copies it out and ``Assign(id, bytes,
data)`` copies it in (TFLM >= early 2025: Zephyr v4.1+'s tflite-micro, esp-tflite-micro 1.4). The shared names,
dtypes and shapes are read from the initialiser subgraph of the model at generation time (``_state_layout``). The
*training state* saved is every resource variable: the trainable weights first, in the manifest's order (so the
first ``weights.bin``-size bytes of the payload are exactly ``weights.bin``), then the optimizer slots, TinyProp's
running maxima ``ymax`` and the step counter, so training resumes where it stopped. Restoring must happen after the
first invoke (the initialiser would overwrite it).

**Writing a project again** keeps the user's work: ``tinyprop_project.json`` holds the SHA-256 of every generated
file; a user-editable main file (``outdir.USER_FILES``) that no longer matches is kept and the new one is written
beside it as ``.new``; for the same board, files that were not generated are carried over (``outdir.previous_project``).

Nothing here builds with a vendor SDK (none is available where this was written): the tests compile the SDK-free
sources with host and cross compilers, the entry and the TFLM part against stub headers of the TFLM / ESP-IDF /
Zephyr functions they call, and validate ``idf_component.yml`` (``compote manifest lint``) and ``west.yml``
(``west manifest --validate``) offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from string import Template

import numpy as np

from tinyprop_tf import estimates, outdir
from tinyprop_tf.converters import artifacts, c_sources, device_ops, flatbuffer

__all__ = ["BOARDS", "BoardProject", "BoardProjectError", "BoardTarget", "TFLM_RESOLVER_METHODS",
           "check_board", "resolver_methods", "write_board_project"]


class BoardProjectError(ValueError):
    """A board project cannot be generated (unknown board, incomplete export, unsupported op ...)."""


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BoardTarget:
    key: str
    platform: str          # "esp-idf" or "zephyr"
    profile: str           # key in tinyprop_tf.mcu_profiles.PROFILES
    description: str
    idf_target: str = ""   # ESP-IDF
    cpu_mhz: int = 0       # ESP-IDF default CPU frequency
    flash_mb: int = 0      # ESP-IDF flash size setting
    west_board: str = ""   # Zephyr board target
    overlay: str = ""      # Zephyr board overlay file name (boards/<name>.overlay)
    flash_end: int = 0     # Zephyr: end of the internal flash
    # Zephyr: the board's default partitions next to the end of flash, (label, start, size), highest first; the
    # generated overlay deletes those the state partition would overlap.
    tail_partitions: tuple = ()


BOARDS: dict[str, BoardTarget] = {
    "esp32s3": BoardTarget("esp32s3", "esp-idf", "esp32s3", "ESP32-S3 (e.g. ESP32-S3-DevKitC-1 N8)",
                           idf_target="esp32s3", cpu_mhz=240, flash_mb=8),
    "esp32c3": BoardTarget("esp32c3", "esp-idf", "esp32c3", "ESP32-C3 (e.g. ESP32-C3-DevKitM-1, 4 MB flash)",
                           idf_target="esp32c3", cpu_mhz=160, flash_mb=4),
    "nrf52840dk": BoardTarget(
        "nrf52840dk", "zephyr", "nrf52840", "Nordic nRF52840 DK", west_board="nrf52840dk/nrf52840",
        overlay="nrf52840dk_nrf52840.overlay", flash_end=0x100000,
        # boards/nordic/nrf52840dk/nrf52840dk_nrf52840.dts
        tail_partitions=(("storage_partition", 0xF8000, 0x8000), ("slot1_partition", 0x82000, 0x76000))),
    "nrf5340dk": BoardTarget(
        "nrf5340dk", "zephyr", "nrf5340", "Nordic nRF5340 DK (application core)",
        west_board="nrf5340dk/nrf5340/cpuapp", overlay="nrf5340dk_nrf5340_cpuapp.overlay", flash_end=0x100000,
        # dts/vendor/nordic/nrf5340_cpuapp_partition.dtsi
        tail_partitions=(("storage_partition", 0xF8000, 0x8000), ("tfm_otp_partition", 0xF6000, 0x2000),
                         ("tfm_its_partition", 0xF4000, 0x2000), ("tfm_ps_partition", 0xF0000, 0x4000),
                         ("slot1_partition", 0x80000, 0x70000))),
}

# Builtin operator -> tflite::MicroMutableOpResolver method (TFLM micro_mutable_op_resolver.h at commit 90b983c,
# Aug 2026; the same methods in esp-tflite-micro 1.4.0 and in Zephyr's tflite-micro branch zephyr-v4.4.0).
TFLM_RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "ELU": "AddElu",
    "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather", "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D", "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad",
    "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu",
    "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}

# Resolver methods missing from older tflite-micro revisions that Zephyr pins (branch zephyr-v4.1.0, Feb 2025);
# the zephyr-v4.4.0 branch (commit fcc760a, Mar 2026) has all of TFLM_RESOLVER_METHODS.
ZEPHYR_V41_MISSING = frozenset({"DYNAMIC_UPDATE_SLICE", "REDUCE_ALL", "REDUCE_MIN", "REVERSE_V2"})
ZEPHYR_TFLM_REVISION = "fcc760af130f3a595b5802cdebcc77461e54f382"  # tflite-micro branch zephyr-v4.4.0
ESP_TFLM_VERSION = "^1.4.0"  # espressif/esp-tflite-micro (1.4.x needs ESP-IDF >= 5.1)

_DTYPES = {  # manifest / flatbuffer dtype -> (tinyprop::app::StateDtype enumerator, bytes per element)
    "float32": ("kFloat32", 4), "int32": ("kInt32", 4), "int64": ("kInt64", 8),
}
_SECTOR = 4096          # erase unit on every supported board (ESP32 SPI flash sector, nRF52/53 page)
_MAX_WRITE_BLOCK = 16   # slot sizing assumes a program unit of at most this (ESP32 4 with encryption 16, nRF 4)
_PERSIST_HEADER = 32    # tinyprop::kHeaderSize
_STACK_BYTES = 16384
_REPO_MICRO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "micro")


def check_board(board) -> BoardTarget:
    """The target for a board name; a clear error listing the valid boards otherwise."""
    if isinstance(board, str) and board.strip().lower() in BOARDS:
        return BOARDS[board.strip().lower()]
    raise BoardProjectError(f"unknown board {board!r}; valid boards: {', '.join(BOARDS)}")


def resolver_methods(ops) -> list[tuple[str, str]]:
    """(op, MicroMutableOpResolver method) for each op, sorted by op; a clear error when one has no method."""
    names = sorted(ops)
    missing = [op for op in names if op not in TFLM_RESOLVER_METHODS]
    if missing:
        raise BoardProjectError(
            f"op(s) {', '.join(missing)} of train.tflite have no known tflite::MicroMutableOpResolver Add method "
            f"(custom or unsupported builtin ops): a board project cannot register them")
    return [(op, TFLM_RESOLVER_METHODS[op]) for op in names]


# ----------------------------------------------------------------------------------------------------------------
# The export
# ----------------------------------------------------------------------------------------------------------------
_EXPORT_FILES = ("manifest.json", "train.tflite", "model_data.h", "model_data.cc", "weights.h")


def _load_export(export_dir):
    if not isinstance(export_dir, (str, os.PathLike)):
        raise BoardProjectError(f"export_dir must be a path, got {export_dir!r}")
    export_dir = os.fspath(export_dir)
    if not os.path.isdir(export_dir):
        raise BoardProjectError(f"export directory {export_dir!r} does not exist (run tinyprop export first)")
    missing = [f for f in _EXPORT_FILES if not os.path.isfile(os.path.join(export_dir, f))]
    if missing:
        raise BoardProjectError(f"{export_dir!r} is not a complete export: missing {', '.join(missing)} "
                                f"(written by tinyprop_tf.converters.export_training_model)")
    try:
        with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise BoardProjectError(f"{export_dir}/manifest.json is unreadable: {e}") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != "tinyprop-train/1":
        raise BoardProjectError(f"{export_dir}/manifest.json: format {found!r}, expected 'tinyprop-train/1'")
    model_bytes, sha = _read_model(export_dir, manifest, "train.tflite")
    tflm = manifest.get("tflm") or {}
    names = sorted(d.get("name") for d in tflm.get("inputs", []))
    if names != ["mode", "x", "y"] or sorted(d.get("name") for d in tflm.get("outputs", [])) != ["k", "loss", "output"]:
        raise BoardProjectError(f"{export_dir}/manifest.json: unexpected TFLM inputs/outputs")
    if not tflm.get("ops"):
        raise BoardProjectError(f"{export_dir}/manifest.json has no tflm.ops list")
    return export_dir, manifest, model_bytes, sha


def _read_model(export_dir, manifest, name) -> tuple[bytes, str]:
    """(bytes, SHA-256) of the export's model ``name``, refused when the manifest records another SHA-256."""
    with open(os.path.join(export_dir, name), "rb") as f:
        model_bytes = f.read()
    expected = manifest.get("files", {}).get(name, {}).get("sha256")
    sha = hashlib.sha256(model_bytes).hexdigest()
    if expected and expected != sha:
        raise BoardProjectError(f"{export_dir}/{name} does not match manifest.json (SHA-256 {sha[:12]}... "
                                f"vs {expected[:12]}...): re-export")
    return model_bytes, sha


def _state_layout(model_bytes: bytes, manifest: dict, fast: bool = False) -> list[dict]:
    """The training state, weights first in manifest order (contiguous float32, = weights.bin), then the others by
    name; byte offsets. train.tflite: every resource variable (shared name, dtype, shape) from the ASSIGN_VARIABLEs
    of the initialiser. train_fast.tflite: its in-place state outputs (manifest ``tflm_fast.state``, checked
    against the model's outputs), each row with its ``output`` index and its initial ``fill`` (else weights.bin)."""
    try:
        model = flatbuffer.load(model_bytes, _FAST_MODEL if fast else "train.tflite")
    except flatbuffer.InvalidModelError as e:
        raise BoardProjectError(str(e)) from None
    if fast:
        outputs = flatbuffer.io_details(model, 0)[1]
        rows = manifest["tflm_fast"].get("state") or []
        for r in rows:
            o = r["output"]
            if o >= len(outputs) or (outputs[o]["name"], outputs[o]["dtype"], outputs[o]["shape"]) != (
                    r["name"], r["dtype"], r["shape"]):
                raise BoardProjectError(f"{_FAST_MODEL}: state output {o} is not {r['name']} {r['dtype']}{r['shape']} "
                                        "as manifest.json says: re-export")
        found = {r["name"]: (r["dtype"], r["shape"]) for r in rows}
        extra = {r["name"]: {"output": r["output"], **({"fill": r["fill"]} if "fill" in r else {})} for r in rows}
        order = [r["name"] for r in rows]
        names = [e["name"] for e in manifest.get("weights", [])]
        if order[:len(names)] != names:
            raise BoardProjectError(f"{_FAST_MODEL}: the state does not start with the weights in manifest order")
        layout = _offsets(order, found, len(names))
        for v in layout:
            v.update(extra[v["name"]])
        return layout
    found = {}
    for sg in model.subgraphs:
        handles = flatbuffer.var_handles(model, sg)
        for op in sg.operators or []:
            if flatbuffer.op_name(model.operatorCodes[op.opcodeIndex]) != "ASSIGN_VARIABLE":
                continue
            name = handles.get(int(op.inputs[0]))
            if name is None:  # handle passed in from another subgraph; the initialiser holds its own handles
                continue
            t = sg.tensors[int(op.inputs[1])]
            shape = [int(d) for d in (t.shape if t.shape is not None else [])]
            found.setdefault(name, (flatbuffer.type_name(t.type), shape))
    expected = set(manifest["tflm"].get("variables", []))
    if set(found) != expected:
        raise BoardProjectError(f"resource variables of train.tflite {sorted(found)} do not match the manifest's "
                                f"{sorted(expected)}")
    weights = manifest.get("weights", [])
    order = [e["name"] for e in weights]
    for e in weights:
        if e["name"] not in found:
            raise BoardProjectError(f"weight {e['path']} is not a resource variable of train.tflite")
        dtype, shape = found[e["name"]]
        if dtype != "float32" or int(np.prod(shape, dtype=np.int64)) != int(e["size"]):
            raise BoardProjectError(f"weight {e['path']}: train.tflite has {dtype}{shape}, manifest {e['shape']}")
    rest = sorted(n for n in found if n not in set(order))
    return _offsets(order + rest, found, len(order))


def _offsets(order, found, n_weights) -> list[dict]:
    layout, offset = [], 0
    for i, name in enumerate(order):
        dtype, shape = found[name]
        if dtype not in _DTYPES:
            raise BoardProjectError(f"resource variable {name} has dtype {dtype}; only {sorted(_DTYPES)} can be saved")
        enum, item = _DTYPES[dtype]
        offset = -(-offset // item) * item
        elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
        layout.append({"name": name, "dtype": dtype, "enum": enum, "shape": shape,
                       "elements": elements, "bytes": elements * item, "offset": offset, "is_weight": i < n_weights})
        offset += elements * item
    return layout


def _state_bytes(layout) -> int:
    end = max((v["offset"] + v["bytes"] for v in layout), default=0)
    return -(-end // 8) * 8


def _model_id(sha: str, layout) -> int:
    """32-bit id of the model and state layout, stored with every record: a different export is rejected."""
    text = sha + ";" + ";".join(f"{v['name']}:{v['dtype']}:{v['offset']}:{v['bytes']}" for v in layout)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _slot_bytes(payload: int) -> int:
    header = max(_PERSIST_HEADER, _MAX_WRITE_BLOCK)
    data = -(-payload // _MAX_WRITE_BLOCK) * _MAX_WRITE_BLOCK
    return -(-(header + data) // _SECTOR) * _SECTOR


# ----------------------------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------------------------
def _samples(manifest, samples, labels, seed):
    batch = int(manifest["batch_size"])
    in_shape = tuple(manifest["input"]["shape"][1:])
    out_shape = tuple(manifest["output_shape"][1:])
    is_label = manifest["target"]["dtype"] == "int32"
    classes = int(out_shape[-1]) if is_label else 0
    if samples is None:
        if labels is not None:
            raise BoardProjectError("labels given without samples")
        n = max(2 * batch, 4)
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, *in_shape)).astype(np.float32)
        y = (np.arange(n) % classes).astype(np.int32) if is_label else \
            rng.normal(size=(n, *out_shape)).astype(np.float32)
        note = (f"Placeholder data: {n} random N(0, 1) samples (seed {seed}) with "
                + ("labels i % classes." if is_label else "random N(0, 1) targets."))
        return x, y, note, is_label
    x = np.asarray(samples)
    if x.shape[1:] != in_shape or x.shape[0] < 1:
        raise BoardProjectError(f"samples must have shape [N, {', '.join(map(str, in_shape))}] (the model input), "
                                f"got {list(np.shape(samples))}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise BoardProjectError("samples must be finite numbers")
    x = x.astype(np.float32)
    if labels is None:
        raise BoardProjectError("samples given without labels/targets")
    y = np.asarray(labels)
    if is_label:
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise BoardProjectError(f"labels must be {x.shape[0]} integers (one per sample), got {y.dtype} "
                                    f"{list(y.shape)}")
        if y.min() < 0 or y.max() >= classes:
            raise BoardProjectError(f"labels must be in [0, {classes}), got {int(y.min())}..{int(y.max())}")
        y = y.astype(np.int32)
    else:
        if y.shape != (x.shape[0], *out_shape) or not np.all(np.isfinite(y)):
            raise BoardProjectError(f"targets must be finite, shape [{x.shape[0]}, "
                                    f"{', '.join(map(str, out_shape))}], got {list(y.shape)}")
        y = y.astype(np.float32)
    return x, y, f"{x.shape[0]} samples given to write_board_project.", is_label


# ----------------------------------------------------------------------------------------------------------------
# Memory budget
# ----------------------------------------------------------------------------------------------------------------
def _budget(target: BoardTarget, manifest, model_len, samples_bytes, state_bytes, partition_bytes, in_place=False,
            max_variable=0):
    arena = int(manifest["tflm"]["arena_bytes_recommended"])
    weights = int(manifest.get("weights_bin", {}).get("bytes", 0))
    held = "the training state in place" if in_place else "the resource variables"
    ram = [
        (f"TFLM arena (TINYPROP_ARENA_BYTES; holds {held}: weights {weights:,} B, optimizer slots, ymax, step)",
         arena),
        *([] if in_place else [("state scratch for save/load (the largest resource variable)", max_variable)]),
        ("main task stack (configured)", _STACK_BYTES),
    ]
    flash = [
        (f"model ({_FAST_MODEL} as a C array)" if in_place else
         "model (train.tflite as a C array; includes the initial weights)", model_len),
        *([("initial training state (g_tinyprop_initial_state)", state_bytes)] if in_place else []),
        ("sample data (samples.cc)", samples_bytes),
        ("state partition (two slots)", partition_bytes),
    ]
    return estimates.project_budget(target.profile, ram, flash)


# ----------------------------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BoardProject:
    """What ``write_board_project`` wrote."""

    board: str
    platform: str
    out_dir: str
    files: list[str]
    ops: list[tuple[str, str]]
    state_variables: list[dict]
    state_bytes: int
    partition_bytes: int
    train_steps: int
    budget: dict
    custom_ops: list = dataclasses.field(default_factory=list)  # TinyProp TFLM ops (fast projects)
    kept_user_files: list = dataclasses.field(default_factory=list)  # user-edited files kept (new one: <file>.new)

    @property
    def fits(self) -> bool:
        return self.budget["fits"]

    @property
    def budget_text(self) -> str:
        return self.budget["verdict"]

    @property
    def data_dir(self) -> str:
        """The project folder of the generated data: model arrays, samples, state table, config header (what the
        emulated board's build of the app takes: ``m4_app``)."""
        return os.path.join(self.out_dir, _PROJECT_PATHS[self.platform].data)



# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------
def write_board_project(export_dir, board, out_dir, samples=None, labels=None, steps=None, seed=0,
                        arena_bytes=None, fast=None, overwrite=False, previous_dir=None,
                        print_fn=print) -> BoardProject:
    """Write a complete ESP-IDF or Zephyr project for ``board`` from an export directory into ``out_dir``.

    Args:
      export_dir: a directory written by ``export_training_model`` (manifest.json, train.tflite, C arrays).
      board: ``esp32s3``, ``esp32c3`` (ESP-IDF), ``nrf52840dk``, ``nrf5340dk`` (Zephyr / nRF Connect SDK).
      out_dir: the project directory. Written as a whole (staged beside it, then swapped in), so no file of an
        earlier project survives unless listed here. A free folder is written; the same board's project (its
        ``tinyprop_project.json`` says so) is regenerated: a user-editable main file (``main/main.cc``,
        ``src/main.cpp``) that differs from what was generated is kept and the new one is written beside it as
        ``main.cc.new`` (a one-line notice through ``print_fn``), and the files the generator did not write
        (``build/``, ``sdkconfig``, your own sources) are carried over. Any other non-empty folder needs
        ``overwrite=True`` (an edited main file is kept then too; refused if the new project has no such file).
      samples, labels: optional training data compiled into ``samples.cc``: samples [N, *input shape] and integer
        labels [N] (cross-entropy) or float targets [N, *output shape] (MSE). Default: a few random samples.
      steps: training steps the application runs per boot (default: two passes over the samples).
      seed: seed of the default random samples.
      arena_bytes: arena override (default: the manifest's recommended, measured size).
      fast: run ``train_fast.tflite`` (the sparse step on the TinyProp TFLM custom operators; the project then
        carries the micro/ kernels and their TFLM glue and registers them). Default: when the export has it.
      overwrite: replace a non-empty ``out_dir`` that is not this board's project (see ``out_dir``).
      previous_dir: the project this one replaces, when ``out_dir`` is a staging folder (``tinyprop export
        --board``: the export and its project are swapped in together); default ``out_dir``.
      print_fn: where the notice about a kept user file goes.

    Returns a ``BoardProject`` (files, op registration, state layout, memory budget: ``.fits``, ``.budget_text``).

    Raises:
      BoardProjectError (a ValueError) before anything is written: unknown board, incomplete or inconsistent export,
      an op without a resolver method, bad samples, a state too large for the board's flash layout, an ``out_dir``
      that may not be replaced (see above).
    """
    target = check_board(board)
    export_dir, manifest, model_bytes, sha = _load_export(export_dir)
    fast_path = os.path.join(export_dir, _FAST_MODEL)
    has_fast = "tflm_fast" in manifest and os.path.isfile(fast_path)
    fast = has_fast if fast is None else bool(fast)
    custom_ops = []
    if fast:
        if not has_fast:
            raise BoardProjectError(f"{export_dir} has no {_FAST_MODEL}: export with fast=True (tinyprop export "
                                    "--fast), or write the project without fast")
        model_bytes, sha = _read_model(export_dir, manifest, _FAST_MODEL)
        op_counts = manifest["tflm_fast"]["ops"]
        custom_ops = sorted(op[len("CUSTOM:"):] for op in op_counts if op.startswith("CUSTOM:"))
        unknown = [op for op in custom_ops if op not in _DEVICE_OPS]
        if unknown:
            raise BoardProjectError(f"{_FAST_MODEL} uses custom op(s) {unknown} that micro/tflm does not provide")
        ops = resolver_methods({op: n for op, n in op_counts.items() if not op.startswith("CUSTOM:")})
    else:
        ops = resolver_methods(manifest["tflm"]["ops"])
    fast_arena = (manifest.get("tflm_fast") or {}).get("arena_bytes_recommended") if fast else None
    arena = arena_bytes if arena_bytes is not None else (
        fast_arena or manifest["tflm"].get("arena_bytes_recommended"))
    arena_note = None  # where a fast project's arena comes from (None: given by the caller, or not fast)
    if fast and arena_bytes is None:
        arena_note = ("train_fast.tflite's arena measured in tinyprop_tflm_runner" if fast_arena else
                      "train.tflite's measured arena (train_fast.tflite was not measured: export it with "
                      "TINYPROP_TFLM_RUNNER set, or pass arena_bytes)")
    if isinstance(arena, bool) or not isinstance(arena, (int, np.integer)) or arena < 1024:
        raise BoardProjectError("the export has no measured arena (exported with measure_arena=False): re-export "
                                "with measure_arena=True or pass arena_bytes")
    manifest = json.loads(json.dumps(manifest))
    manifest["tflm"]["arena_bytes_recommended"] = int(arena)
    if steps is None:
        pass
    elif isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise BoardProjectError(f"steps must be a positive integer, got {steps!r}")
    layout = _state_layout(model_bytes, manifest, fast)
    state_bytes = _state_bytes(layout)
    x, y, data_note, is_label = _samples(manifest, samples, labels, seed)
    batch = int(manifest["batch_size"])
    train_steps = int(steps) if steps is not None else max(2, 2 * -(-x.shape[0] // batch))
    slot = _slot_bytes(state_bytes)
    partition = 2 * slot
    paths = _PROJECT_PATHS[target.platform]
    sources = _copied_sources(paths, fast)
    if out_dir is None:
        raise BoardProjectError("out_dir is required")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BoardProjectError(f"out_dir {out_dir!r} exists and is not a directory")

    ctx = _Context(target=target, paths=paths, manifest=manifest, export_dir=export_dir, sha=sha,
                   model_len=len(model_bytes), ops=ops, layout=layout, state_bytes=state_bytes,
                   model_id=_model_id(sha, layout), x=x, y=y, is_label=is_label, data_note=data_note,
                   train_steps=train_steps, slot_bytes=slot, partition_bytes=partition, sources=sources,
                   custom_ops=custom_ops, model_bytes=model_bytes if fast else None, arena_note=arena_note)
    samples_bytes = x.nbytes + y.nbytes
    ctx.budget = _budget(target, manifest, len(model_bytes), samples_bytes, state_bytes, partition,
                         in_place=_state_in_outputs(layout), max_variable=_max_variable_bytes(layout))
    if target.platform == "esp-idf":
        ctx.partition_name = "tinyprop"
        files = _esp_files(ctx)
    else:
        ctx.partition_name, overlay = _zephyr_partition(target, state_bytes, slot, partition)
        files = _zephyr_files(ctx, overlay)

    previous = out_dir if previous_dir is None else os.fspath(previous_dir)
    try:
        carry = outdir.previous_project(previous, target.key, set(files), overwrite)
        outdir.check(out_dir, True, regenerate=(".",), inputs=[export_dir])
    except outdir.OutDirError as error:
        raise BoardProjectError(str(error)) from None
    with outdir.replacing(out_dir, True, regenerate=(".",), inputs=[export_dir]) as folder:
        for rel, content in files.items():
            path = os.path.join(folder.path, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if isinstance(content, _Copy):
                shutil.copyfile(content.source, path)
            else:
                with open(path, "w", encoding="utf-8", newline="\n") as f:
                    f.write(content)
        hashes = {rel: outdir.sha256_file(os.path.join(folder.path, rel)) for rel in sorted(files)}
        kept = carry.apply(folder.path, set(files), print_fn) if carry is not None else {}
        outdir.write_json(os.path.join(folder.path, outdir.PROJECT_RECORD), {
            "format": outdir.PROJECT_FORMAT, "board": target.key,
            "note": "written by tinyprop_tf.converters.board_projects: SHA-256 of every file it generated. When the "
                    "project is generated again, a main file that no longer matches is kept (the new one is "
                    "written beside it as .new) and files not listed here are carried over.",
            "files": hashes, "kept": kept})
    return BoardProject(board=target.key, platform=target.platform, out_dir=out_dir,
                        files=sorted([*files, outdir.PROJECT_RECORD]), ops=ops, custom_ops=custom_ops,
                        kept_user_files=sorted(kept),
                        state_variables=layout, state_bytes=state_bytes, partition_bytes=partition,
                        train_steps=train_steps, budget=ctx.budget)


# ----------------------------------------------------------------------------------------------------------------
# Where things go in a project, and the sources it copies
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _ProjectPaths:
    """A platform's project layout (project-relative folders) and its part of micro/app."""

    data: str           # the main file and the generated data
    main: str           # the user-editable entry (one of outdir.USER_FILES)
    app: str            # micro/app's include/, src/, tflm/ and the platform folder
    persist: str        # micro/persist
    kernels: str        # micro/ kernels + TFLM glue (fast projects)
    platform_dir: str   # micro/app/<platform_dir>: flash adapter, console, entry
    size_command: str   # how the SDK reports code size


_PROJECT_PATHS = {
    "esp-idf": _ProjectPaths("main", "main/main.cc", "main/tinyprop_app", "components/tinyprop_persist",
                             "main/tinyprop_kernels", "esp_idf", "idf.py size"),
    "zephyr": _ProjectPaths("src", "src/main.cpp", "lib/tinyprop_app", "lib/tinyprop_persist",
                            "lib/tinyprop_kernels", "zephyr", "west build -t rom_report / ram_report"),
}
assert {p.main for p in _PROJECT_PATHS.values()} == set(outdir.USER_FILES)

_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
_APP_SOURCE_DIRS = ("include", "src", "tflm")  # micro/app folders every project copies (tests/ is host-only)
_FAST_MODEL = "train_fast.tflite"
# micro/tflm/tinyprop_tflm.h: op name -> registration function (Register_<op name>)
_DEVICE_OPS = {name: f"Register_{name}" for name in sorted(device_ops.DEVICE_OPS)}


@dataclasses.dataclass(frozen=True)
class _Copy:
    """A project file copied unchanged from the source tree."""

    source: str


def _render(template: str, **values) -> str:
    """converters/templates/<template>.tpl with ``string.Template`` placeholders filled (all of them: a missing
    value is a KeyError, not a silent ``$name`` in a build file)."""
    with open(os.path.join(_TEMPLATES, template + ".tpl"), encoding="utf-8") as f:
        return Template(f.read()).substitute(values)


def _require_micro(folder, what):
    if not os.path.isdir(folder):
        raise BoardProjectError(f"{folder} is missing; board projects need {what} from the tinyprop-tf source tree "
                                "(an installed wheel does not ship micro/)")


def _files_under(folder, suffixes=(".h", ".cc", ".cpp")) -> list[str]:
    """Paths relative to `folder` of its source files, sorted."""
    out = []
    for root, _, names in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, n), folder) for n in names if n.endswith(suffixes)]
    return sorted(out)


def _copied_sources(paths: _ProjectPaths, fast: bool) -> dict:
    """project-relative path -> _Copy of every source a project takes from micro/: the app (micro/app), the
    persistence library (micro/persist without its simulated flash) and, for fast projects, the kernel library
    and its TFLM glue (micro/include, micro/src, micro/tflm without the host runner)."""
    app = os.path.join(_REPO_MICRO, "app")
    _require_micro(app, "micro/app")
    out = {paths.main: _Copy(os.path.join(app, paths.platform_dir, os.path.basename(paths.main)))}
    for sub in (*_APP_SOURCE_DIRS, paths.platform_dir):
        for rel in _files_under(os.path.join(app, sub)):
            if os.path.join(sub, rel) != os.path.join(paths.platform_dir, os.path.basename(paths.main)):
                out[f"{paths.app}/{sub}/{rel}"] = _Copy(os.path.join(app, sub, rel))
    persist = os.path.join(_REPO_MICRO, "persist")
    _require_micro(persist, "micro/persist")
    out[f"{paths.persist}/include/tinyprop/persist.h"] = _Copy(os.path.join(persist, "include/tinyprop/persist.h"))
    out[f"{paths.persist}/src/persist.cc"] = _Copy(os.path.join(persist, "src/persist.cc"))
    if fast:
        for sub, rel_dir in (("include/tinyprop", "include/tinyprop"), ("src", "src"), ("tflm", "src")):
            _require_micro(os.path.join(_REPO_MICRO, sub), "micro/ (kernels and TFLM glue)")
            for rel in _files_under(os.path.join(_REPO_MICRO, sub)):
                if rel != "host_runner.cc":
                    out[f"{paths.kernels}/{rel_dir}/{rel}"] = _Copy(os.path.join(_REPO_MICRO, sub, rel))
    return out


@dataclasses.dataclass
class _Context:
    target: BoardTarget
    paths: _ProjectPaths
    manifest: dict
    export_dir: str
    sha: str
    model_len: int
    ops: list
    layout: list
    state_bytes: int
    model_id: int
    x: np.ndarray
    y: np.ndarray
    is_label: bool
    data_note: str
    train_steps: int
    slot_bytes: int
    partition_bytes: int
    sources: dict                # project-relative -> _Copy (micro/ sources)
    custom_ops: list = dataclasses.field(default_factory=list)  # TinyProp TFLM ops of train_fast.tflite
    model_bytes: bytes = None    # the model to embed when it is not the export's train.tflite (fast)
    arena_note: str = None
    budget: dict = None
    partition_name: str = None   # partitions.csv name / devicetree label of the state partition

    @property
    def model_file(self) -> str:
        return _FAST_MODEL if self.custom_ops else "train.tflite"


# ----------------------------------------------------------------------------------------------------------------
# Generated data: model arrays, samples, state table, the app's config header
# ----------------------------------------------------------------------------------------------------------------
def _describe(ctx) -> dict:
    """The values every generated text names the export by."""
    m = ctx.manifest
    return {"board": ctx.target.key, "platform": ctx.target.platform, "description": ctx.target.description,
            "model_name": m.get("model_name"), "model_file": ctx.model_file, "sha_prefix": ctx.sha[:16],
            "batch": m["batch_size"], "loss": m["loss"], "optimizer": m["optimizer"].get("name", "?"),
            "policy": m.get("policy_repr", "?"), "data_note": ctx.data_note}


def _config_header(ctx) -> str:
    m = ctx.manifest
    uses = m["tflm_fast" if ctx.custom_ops else "tflm"]["ops"]
    builtin = [f"  X({method}) /* {op} x{uses[op]} */ \\" for op, method in ctx.ops]
    custom = [f'  X("{op}", {_DEVICE_OPS[op]}) /* x{uses["CUSTOM:" + op]} */ \\' for op in ctx.custom_ops]
    return _render(
        "app/tinyprop_app_config.h", **_describe(ctx), train_steps=ctx.train_steps,
        input_shape=m["input"]["shape"][1:], num_samples=ctx.x.shape[0],
        sample_elements=int(np.prod(m["input"]["shape"][1:])),
        target_elements=1 if ctx.is_label else int(np.prod(m["output_shape"][1:])),
        target_is_label=int(ctx.is_label), output_elements=int(np.prod(m["output_shape"][1:])),
        model_id=f"0x{ctx.model_id:08x}u", num_state_variables=len(ctx.layout), state_bytes=ctx.state_bytes,
        weight_bytes=_weight_bytes(ctx.layout), slot_bytes=ctx.slot_bytes, partition_bytes=ctx.partition_bytes,
        max_variable_bytes=_max_variable_bytes(ctx.layout),
        state_partition=ctx.partition_name, ops_key="tflm_fast" if ctx.custom_ops else "tflm",
        state_in_outputs=int(_state_in_outputs(ctx.layout)),
        first_state_output=_first_state_output(ctx.layout),
        num_ops=len(ctx.ops) + len(ctx.custom_ops), has_custom_ops=int(bool(ctx.custom_ops)),
        builtin_ops="\n".join(builtin), custom_ops="\n".join(custom))


def _state_in_outputs(layout) -> bool:
    """The model keeps its training state in place, as outputs (train_fast.tflite), not in resource variables."""
    return bool(layout) and all("output" in v for v in layout)


def _initial_state(ctx) -> bytes:
    """The state image an in-place model starts from (``device_ops.initial_state`` at the layout's offsets:
    weights.bin's values, the fills elsewhere), little-endian as the boards are."""
    image = bytearray(ctx.state_bytes)
    values = device_ops.initial_state(ctx.layout, artifacts.exported_weights(ctx.export_dir, ctx.manifest))
    for v in ctx.layout:
        value = values[v["output"]]
        image[v["offset"]:v["offset"] + v["bytes"]] = value.astype(value.dtype.newbyteorder("<")).tobytes()
    return bytes(image)


def _first_state_output(layout) -> int:
    """The first of an in-place model's state outputs (they follow in layout order); -1 for resource variables."""
    return min(v["output"] for v in layout) if _state_in_outputs(layout) else -1


def _max_variable_bytes(layout) -> int:
    return max((v["bytes"] for v in layout), default=0)


def _weight_bytes(layout) -> int:
    return sum(v["bytes"] for v in layout if v["is_weight"])


def _samples_source(ctx) -> str:
    targets = c_sources.c_int_lines(ctx.y) if ctx.is_label else c_sources.c_float_lines(ctx.y)
    return _render("app/samples.cc", **_describe(ctx), sample_values=c_sources.c_float_lines(ctx.x),
                   target_values=targets)


def _state_source(ctx) -> str:
    rows = [f'  {{"{v["name"]}", {v["offset"]}u, {v["bytes"]}u, {v["elements"]}u, StateDtype::{v["enum"]}, '
            f'{"true" if v["is_weight"] else "false"}}},  // {v["dtype"]}{v["shape"]}' for v in ctx.layout]
    checks = []
    for e in ctx.manifest.get("weights", []):
        v = next(v for v in ctx.layout if v["name"] == e["name"])
        macro = c_sources.weight_macro(e["path"])
        checks.append(f"static_assert({macro}_OFFSET * 4 == {v['offset']} && {macro}_SIZE == "
                      f"{v['elements']}, \"{e['path']}: state layout != weights.h\");")
    if _state_in_outputs(ctx.layout):
        initial = _render("app/initial_state.cc", image_values=c_sources.c_byte_lines(_initial_state(ctx)))
    else:
        initial = "// The model's initialiser subgraph sets the initial state (its first invoke)."
    return _render("app/tinyprop_state.cc", **_describe(ctx), rows="\n".join(rows), weight_checks="\n".join(checks),
                   initial_state=initial)


def _data_files(ctx) -> dict:
    """model arrays, samples, state table and config header in the project's data folder."""
    src = ctx.paths.data
    files = {f"{src}/{name}": _Copy(os.path.join(ctx.export_dir, name))
             for name in ("model_data.h", "model_data.cc", "weights.h")}
    if ctx.model_bytes is not None:  # train_fast.tflite: same inputs/outputs/variables, its own bytes and arena
        m = json.loads(json.dumps(ctx.manifest))
        fast_arena = m["tflm_fast"].get("arena_bytes")
        m["tflm"]["arena_bytes"] = fast_arena if fast_arena else m["tflm"]["arena_bytes"]
        m["tflm"]["inputs"], m["tflm"]["outputs"] = m["tflm_fast"]["inputs"], m["tflm_fast"]["outputs"]
        m["tflm"]["resource_variables"] = 0  # its state is in place (variable tensors that are outputs)
        header, source = c_sources.model_data_files(ctx.model_bytes, m)
        note = f"// {_FAST_MODEL} (TinyProp custom operators). Arena: {ctx.arena_note or 'given by the caller'}.\n"
        files[f"{src}/model_data.h"], files[f"{src}/model_data.cc"] = note + header, note + source
    files[f"{src}/tinyprop_app_config.h"] = _config_header(ctx)
    files[f"{src}/samples.cc"] = _samples_source(ctx)
    files[f"{src}/tinyprop_state.cc"] = _state_source(ctx)
    return files


def _build_lists(ctx, prefix: str) -> tuple[list[str], list[str]]:
    """(sources, include dirs) of the application, relative to `prefix` (the folder of the build file), from
    the files the project holds: its data, the app, the kernels (the persistence library is separate on ESP-IDF,
    a component of its own)."""
    paths = ctx.paths
    own = [paths.data, paths.app, paths.kernels] + ([paths.persist] if ctx.target.platform == "zephyr" else [])
    compiled = [f"{paths.data}/{n}" for n in ("model_data.cc", "samples.cc", "tinyprop_state.cc")] + [
        f for f in ctx.sources if f.endswith((".cc", ".cpp"))]
    sources = sorted(f for f in compiled if f.startswith(tuple(p + "/" for p in own)))
    includes = [paths.data, f"{paths.app}/include", f"{paths.app}/tflm", f"{paths.app}/{paths.platform_dir}"]
    if ctx.custom_ops:
        includes += [f"{paths.kernels}/include", f"{paths.kernels}/src"]
    if ctx.target.platform == "zephyr":
        includes.append(f"{paths.persist}/include")

    def rel(path):
        return os.path.relpath(path, prefix) if prefix else path
    return [rel(f) for f in sources], [rel(d) for d in includes]


# ----------------------------------------------------------------------------------------------------------------
# ESP-IDF
# ----------------------------------------------------------------------------------------------------------------
def _esp_files(ctx) -> dict:
    t = ctx.target
    app_bytes = -(-(1024 * 1024 + ctx.model_len + ctx.x.nbytes + ctx.y.nbytes) // 0x10000) * 0x10000
    flash_bytes = t.flash_mb * 1024 * 1024
    first_app = 0x10000
    if first_app + app_bytes + ctx.partition_bytes > flash_bytes:
        raise BoardProjectError(
            f"{t.key}: the app partition ({app_bytes:,} B) and the two-slot state partition "
            f"({ctx.partition_bytes:,} B) do not fit the {t.flash_mb} MB flash (short by "
            f"{first_app + app_bytes + ctx.partition_bytes - flash_bytes:,} B)")
    files = {**ctx.sources, **_data_files(ctx)}
    sources, includes = _build_lists(ctx, "main")
    persist_sources = sorted(os.path.relpath(f, ctx.paths.persist) for f in ctx.sources
                             if f.startswith(ctx.paths.persist + "/") and f.endswith(".cc"))
    values = dict(_describe(ctx), idf_target=t.idf_target, cpu_mhz=t.cpu_mhz, flash_mb=t.flash_mb,
                  stack_bytes=_STACK_BYTES, esp_tflm_version=ESP_TFLM_VERSION, partition_bytes=f"{ctx.partition_bytes:,}")
    files["CMakeLists.txt"] = _render("esp-idf/CMakeLists.txt", **values)
    files["main/CMakeLists.txt"] = _render(
        "esp-idf/main/CMakeLists.txt", sources=" ".join(f'"{s}"' for s in sources),
        include_dirs=" ".join(f'"{d}"' for d in includes), kernels_note=_kernels_note(ctx))
    files["main/idf_component.yml"] = _render("esp-idf/main/idf_component.yml", **values)
    files[f"{ctx.paths.persist}/CMakeLists.txt"] = _render(
        "esp-idf/components/tinyprop_persist/CMakeLists.txt", sources=" ".join(f'"{s}"' for s in persist_sources))
    files["partitions.csv"] = _render(
        "esp-idf/partitions.csv", model_bytes=f"{ctx.model_len:,}", state_bytes=f"{ctx.state_bytes:,}",
        slot_bytes=f"{ctx.slot_bytes:,}", app_partition_hex=f"0x{app_bytes:x}",
        state_partition_hex=f"0x{ctx.partition_bytes:x}")
    files["sdkconfig.defaults"] = _render("esp-idf/sdkconfig.defaults", **values)
    files["README.md"] = _render("esp-idf/README.md", **values, app_section=_readme_app_section(ctx))
    return files


def _kernels_note(ctx) -> str:
    return " and the TinyProp kernels with their TFLM glue" if ctx.custom_ops else ""


# ----------------------------------------------------------------------------------------------------------------
# Zephyr
# ----------------------------------------------------------------------------------------------------------------
def _zephyr_partition(target: BoardTarget, state_bytes: int, slot_bytes: int, partition_bytes: int):
    """(devicetree node label, overlay text) for the state partition: the board's storage_partition when both
    slots fit it, else a partition at the end of the flash over the default partitions it overlaps."""
    storage = next(p for p in target.tail_partitions if p[0] == "storage_partition")
    values = {"description": target.description, "west_board": target.west_board, "state_bytes": state_bytes,
              "slot_bytes": slot_bytes, "partition_bytes": partition_bytes}
    if partition_bytes <= storage[2]:
        return "storage_partition", _render("zephyr/boards/storage_partition.overlay", **values,
                                            storage_start=f"0x{storage[1]:x}", storage_kib=storage[2] // 1024)
    start = target.flash_end - partition_bytes
    if start < 0x40000:
        raise BoardProjectError(f"{target.key}: the two-slot state partition ({partition_bytes:,} B) would leave "
                                f"less than 256 KiB of flash for the application")
    deleted = [p for p in target.tail_partitions if p[1] + p[2] > start]
    lowest = min(p[1] for p in deleted)
    return "tinyprop_partition", _render(
        "zephyr/boards/own_partition.overlay", **values, deleted_names=", ".join(p[0] for p in deleted),
        start_hex=f"0x{start:x}", delete_nodes="".join(f"/delete-node/ &{p[0]};\n" for p in deleted),
        start_bare=f"{start:x}", start_reg=f"0x{start:08x}", size_reg=f"0x{partition_bytes:08x}",
        unused_note=f"/* 0x{lowest:x}..0x{start:x} (freed) stays unused. */" if lowest < start else "")


def _zephyr_files(ctx, overlay: str) -> dict:
    t = ctx.target
    files = {**ctx.sources, **_data_files(ctx)}
    sources, includes = _build_lists(ctx, "")
    files[f"boards/{t.overlay}"] = overlay
    values = dict(_describe(ctx), stack_bytes=_STACK_BYTES, west_board=t.west_board, overlay=t.overlay,
                  partition_label=ctx.partition_name, partition_bytes=f"{ctx.partition_bytes:,}",
                  tflm_revision=ZEPHYR_TFLM_REVISION, tflm_revision_short=ZEPHYR_TFLM_REVISION[:10])
    files["CMakeLists.txt"] = _render("zephyr/CMakeLists.txt", **values, sources="\n".join("  " + s for s in sources),
                                      include_dirs=" ".join(includes), kernels_note=_kernels_note(ctx))
    files["prj.conf"] = _render("zephyr/prj.conf", **values)
    files["sysbuild.conf"] = _render("zephyr/sysbuild.conf")
    files["west.yml"] = _render("zephyr/west.yml", **values)
    old_ops = sorted(set(ctx.manifest["tflm"]["ops"]) & ZEPHYR_V41_MISSING)
    v41_note = _render("readme/zephyr_v41_ops.md", ops=", ".join(old_ops),
                       pronoun="it" if len(old_ops) == 1 else "them") if old_ops else ""
    files["README.md"] = _render("zephyr/README.md", **values, zephyr_v41_note=v41_note.rstrip("\n"),
                                 app_section=_readme_app_section(ctx))
    return files


# ----------------------------------------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------------------------------------
def _readme_app_section(ctx) -> str:
    """The platform-independent part of README.md: what the app does, the state layout, the budget, the files."""
    m, b, paths = ctx.manifest, ctx.budget, ctx.paths
    state_rows = "\n".join(
        f"| `{v['name']}` | {v['dtype']} {v['shape']} | {v['offset']} | {v['bytes']} | "
        f"{'weight' if v['is_weight'] else 'state'} |" for v in ctx.layout)
    custom = "" if not ctx.custom_ops else _render(
        "readme/fast_ops.md", count=len(ctx.custom_ops), names=", ".join(ctx.custom_ops),
        kernel_dir=paths.kernels, arena_note=ctx.arena_note or "given by the caller").rstrip("\n")
    kind = "in_place" if _state_in_outputs(ctx.layout) else "resource_variables"
    state_values = {"arena_bytes": f"{m['tflm']['arena_bytes_recommended']:,}", "model_id": f"0x{ctx.model_id:08x}",
                    "resource_variables": m["tflm"]["resource_variables"], "num_state": len(ctx.layout),
                    "first_state_output": _first_state_output(ctx.layout)}
    return _render(
        "readme/app.md", **_describe(ctx), main_file=paths.main, main_name=os.path.basename(paths.main),
        state_setup=_render(f"readme/state_setup_{kind}.md", **state_values),
        state_save=_render(f"readme/state_save_{kind}.md", **state_values),
        app_dir=paths.app, src_dir=paths.data, persist_dir=paths.persist, num_builtin_ops=len(ctx.ops),
        ops=", ".join(op for op, _ in ctx.ops), custom_ops_text=custom, num_ops=len(ctx.ops) + len(ctx.custom_ops),
        arena_bytes=f"{m['tflm']['arena_bytes_recommended']:,}", resource_variables=m["tflm"]["resource_variables"],
        model_id=f"0x{ctx.model_id:08x}", train_steps=ctx.train_steps, mode_train=m["tflm"]["modes"]["train"],
        mode_infer=m["tflm"]["modes"]["infer"], state_rows=state_rows, state_bytes=f"{ctx.state_bytes:,}",
        weight_bytes=f"{_weight_bytes(ctx.layout):,}", board_profile=b["board_profile"], budget_table=b["table"],
        verdict=b["verdict"],
        does_not_fit="" if b["fits"] else _render("readme/does_not_fit.md", verdict=b["verdict"]),
        size_command=paths.size_command, usable_ram_source=b["usable_ram_source"],
        platform_memory_note=_render("readme/esp_idf_memory.md") if ctx.target.platform == "esp-idf" else "",
        kernels_file_note=_render("readme/fast_files.md", kernel_dir=paths.kernels).rstrip("\n")
        if ctx.custom_ops else "",
        project_record=outdir.PROJECT_RECORD)
