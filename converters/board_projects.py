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

What a generated application does (``main/main.cc`` or ``src/main.cpp``):

1. registers exactly the builtin operators of ``train.tflite`` (``manifest["tflm"]["ops"]``) in a
   ``MicroMutableOpResolver``, creates the interpreter on a static arena of ``TINYPROP_ARENA_BYTES`` with a
   ``MicroResourceVariables`` for the model's resource variables;
2. runs one inference invoke first: it runs the initialiser subgraph (``CALL_ONCE``), which assigns the exported
   weights to the resource variables;
3. loads the newest valid training state from flash (two-slot CRC32 persistence, ``micro/persist``) and, when its
   model id and size match, writes it into the resource variables;
4. trains ``steps`` steps over the samples of ``samples.cc`` (printing loss and k per step), runs inference mode
   and prints the predictions;
5. reads every resource variable back and saves it with ``SaveWeights`` (the slot holding the previous state is
   never touched).

**How weights are read back from TFLM.** The Python tflite-micro interpreter cannot read resource variables, and
``train.tflite`` has no weight outputs (``verify`` uses a *probe* copy with extra outputs). On the device no
model change is needed: the application owns the ``tflite::MicroResourceVariables`` object it passes to the
interpreter, whose public ``CreateIdIfNoneFound(container, shared_name)`` finds a variable by its shared name
(after ``AllocateTensors``; ``container == nullptr`` matches any container), ``Read(id, eval_tensor)`` copies it
out and ``Assign(id, bytes, data)`` copies it in (TFLM ≥ early 2025: Zephyr v4.1+'s tflite-micro,
esp-tflite-micro 1.4). The shared names, dtypes and shapes are read from the initialiser subgraph of
``train.tflite`` at generation time. The *training state* saved is every resource variable: the trainable weights
first, in the manifest's order (so the first ``weights.bin``-size bytes of the payload are exactly
``weights.bin``), then the optimizer slots, TinyProp's running maxima ``ymax`` and the step counter, so training
resumes where it stopped. Restoring must happen after the first invoke (the initialiser would overwrite it).

**Writing a project again** keeps the user's work: ``tinyprop_project.json`` holds the SHA-256 of every generated
file; a user-editable main file (``outdir.USER_FILES``) that no longer matches is kept and the new one is written
beside it as ``.new``; for the same board, files that were not generated are carried over (``outdir.previous_project``).

Nothing here builds with a vendor SDK (none is available where this was written): the SDK-independent sources are
compiled by the tests with host and cross compilers, and ``main.cc``/``main.cpp`` are compiled against stub
headers of the TFLM / ESP-IDF / Zephyr functions they call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
from string import Template

import numpy as np

from tinyprop_tf import boards as board_profiles
from tinyprop_tf import outdir
from tinyprop_tf.converters import device_ops, flatbuffer

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
    profile: str           # key in tinyprop_tf.boards.PROFILES
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

_DTYPES = {  # manifest / flatbuffer dtype -> (code in tinyprop_state.h, bytes, TfLiteType)
    "float32": (1, 4, "kTfLiteFloat32"), "int32": (2, 4, "kTfLiteInt32"), "int64": (3, 8, "kTfLiteInt64"),
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
    with open(os.path.join(export_dir, "train.tflite"), "rb") as f:
        model_bytes = f.read()
    expected = manifest.get("files", {}).get("train.tflite", {}).get("sha256")
    sha = hashlib.sha256(model_bytes).hexdigest()
    if expected and expected != sha:
        raise BoardProjectError(f"{export_dir}/train.tflite does not match manifest.json (SHA-256 {sha[:12]}... "
                                f"vs {expected[:12]}...): re-export")
    tflm = manifest.get("tflm") or {}
    names = sorted(d.get("name") for d in tflm.get("inputs", []))
    if names != ["mode", "x", "y"] or sorted(d.get("name") for d in tflm.get("outputs", [])) != ["k", "loss", "output"]:
        raise BoardProjectError(f"{export_dir}/manifest.json: unexpected TFLM inputs/outputs")
    if not tflm.get("ops"):
        raise BoardProjectError(f"{export_dir}/manifest.json has no tflm.ops list")
    return export_dir, manifest, model_bytes, sha


def _state_layout(model_bytes: bytes, manifest: dict) -> list[dict]:
    """Every resource variable (shared name, dtype, shape) from the ASSIGN_VARIABLEs of the initialiser, weights
    first in manifest order (contiguous float32, = weights.bin), then the others by name; byte offsets."""
    try:
        model = flatbuffer.load(model_bytes, "train.tflite")
    except flatbuffer.InvalidModelError as e:
        raise BoardProjectError(str(e)) from None
    found = {}
    for sg in model.subgraphs:
        handles = flatbuffer._var_handles(model, sg)
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
    layout, offset = [], 0
    for i, name in enumerate(order + rest):
        dtype, shape = found[name]
        if dtype not in _DTYPES:
            raise BoardProjectError(f"resource variable {name} has dtype {dtype}; only {sorted(_DTYPES)} can be saved")
        code, item, tfl = _DTYPES[dtype]
        offset = -(-offset // item) * item
        elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
        layout.append({"name": name, "dtype": dtype, "code": code, "tflite_type": tfl, "shape": shape,
                       "elements": elements, "bytes": elements * item, "offset": offset, "is_weight": i < len(order)})
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


def _c_float(v) -> str:
    return np.format_float_scientific(np.float32(v), unique=True, precision=None) + "f"


def _c_floats(values, per_line=6) -> str:
    flat = np.asarray(values, np.float32).ravel()
    return "\n".join("  " + ", ".join(_c_float(v) for v in flat[i: i + per_line]) + ","
                     for i in range(0, len(flat), per_line))


def _c_ints(values, per_line=16) -> str:
    flat = np.asarray(values).ravel()
    return "\n".join("  " + ", ".join(str(int(v)) for v in flat[i: i + per_line]) + ","
                     for i in range(0, len(flat), per_line))


# ----------------------------------------------------------------------------------------------------------------
# Memory budget
# ----------------------------------------------------------------------------------------------------------------
def _budget(target: BoardTarget, manifest, model_len, samples_bytes, state_bytes, partition_bytes):
    profile = board_profiles.get_board(target.profile)
    arena = int(manifest["tflm"]["arena_bytes_recommended"])
    weights = int(manifest.get("weights_bin", {}).get("bytes", 0))
    ram = [
        ("TFLM arena (TINYPROP_ARENA_BYTES; holds the resource variables: weights "
         f"{weights:,} B, optimizer slots, ymax, step)", arena),
        ("training-state buffer for save/load (g_state_image)", state_bytes),
        ("main task stack (configured)", _STACK_BYTES),
    ]
    flash = [
        ("model (train.tflite as a C array; includes the initial weights)", model_len),
        ("sample data (samples.cc)", samples_bytes),
        ("state partition (two slots)", partition_bytes),
    ]
    ram_need = sum(v for _, v in ram)
    flash_need = sum(v for _, v in flash)
    checks = [("RAM", profile.usable_ram_bytes, ram_need), ("flash", profile.flash_bytes, flash_need)]
    short = [f"{what} short by {need - have:,} B (needs {need:,} B of {have:,} B)"
             for what, have, need in checks if need > have]
    fits = not short
    verdict = (f"FITS {profile.name}: RAM {ram_need:,} of {profile.usable_ram_bytes:,} B usable "
               f"({profile.usable_ram_bytes - ram_need:,} B left), flash {flash_need:,} of {profile.flash_bytes:,} B "
               f"({profile.flash_bytes - flash_need:,} B left before code)"
               if fits else f"DOES NOT FIT {profile.name}: " + "; ".join(short))
    lines = ["| RAM | bytes |", "|---|---:|"]
    lines += [f"| {what} | {v:,} |" for what, v in ram]
    lines += [f"| **total** | **{ram_need:,}** |",
              f"| board usable RAM ({profile.key}) | {profile.usable_ram_bytes:,} |",
              "", "| flash | bytes |", "|---|---:|"]
    lines += [f"| {what} | {v:,} |" for what, v in flash]
    lines += [f"| **total** (code not included) | **{flash_need:,}** |",
              f"| board flash ({profile.key}) | {profile.flash_bytes:,} |"]
    return {
        "board_profile": profile.key, "ram": dict(ram), "flash": dict(flash), "ram_bytes": ram_need,
        "flash_bytes": flash_need, "usable_ram_bytes": profile.usable_ram_bytes,
        "board_flash_bytes": profile.flash_bytes,
        "ram_margin": profile.usable_ram_bytes - ram_need, "flash_margin": profile.flash_bytes - flash_need,
        "fits": fits, "verdict": verdict, "table": "\n".join(lines),
        "usable_ram_source": profile.source_of("usable_ram_bytes").source,
    }


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
        with open(fast_path, "rb") as f:
            model_bytes = f.read()
        sha = hashlib.sha256(model_bytes).hexdigest()
        if sha != manifest.get("files", {}).get(_FAST_MODEL, {}).get("sha256", sha):
            raise BoardProjectError(f"{fast_path} does not match manifest.json: re-export")
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
    layout = _state_layout(model_bytes, manifest)
    state_bytes = _state_bytes(layout)
    x, y, data_note, is_label = _samples(manifest, samples, labels, seed)
    batch = int(manifest["batch_size"])
    train_steps = int(steps) if steps is not None else max(2, 2 * -(-x.shape[0] // batch))
    slot = _slot_bytes(state_bytes)
    partition = 2 * slot
    persist_files = _persist_sources()
    if out_dir is None:
        raise BoardProjectError("out_dir is required")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BoardProjectError(f"out_dir {out_dir!r} exists and is not a directory")

    ctx = _Context(target=target, manifest=manifest, export_dir=export_dir, sha=sha, model_len=len(model_bytes),
                   ops=ops, layout=layout, state_bytes=state_bytes, model_id=_model_id(sha, layout), x=x, y=y,
                   is_label=is_label, data_note=data_note, train_steps=train_steps, slot_bytes=slot,
                   partition_bytes=partition, persist_files=persist_files, custom_ops=custom_ops,
                   model_bytes=model_bytes if fast else None,
                   kernel_files=_kernel_sources() if fast else {}, arena_note=arena_note)
    samples_bytes = x.nbytes + y.nbytes
    ctx.budget = _budget(target, manifest, len(model_bytes), samples_bytes, state_bytes, partition)
    files = _esp_files(ctx) if target.platform == "esp-idf" else _zephyr_files(ctx)

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
            if isinstance(content, tuple):  # ("copy", source path)
                shutil.copyfile(content[1], path)
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


@dataclasses.dataclass
class _Context:
    target: BoardTarget
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
    persist_files: dict
    custom_ops: list = dataclasses.field(default_factory=list)  # TinyProp TFLM ops of train_fast.tflite
    model_bytes: bytes = None  # the model to embed when it is not the export's train.tflite (fast)
    kernel_files: dict = dataclasses.field(default_factory=dict)  # project-relative -> micro/ source (fast)
    arena_note: str = None
    budget: dict = None


def _persist_sources() -> dict:
    """project-relative name -> source path: micro/persist's library sources and the tinyprop headers they
    include (the sim-flash test helper is left out)."""
    root = os.path.join(_REPO_MICRO, "persist")
    header = os.path.join(root, "include", "tinyprop", "persist.h")
    if not os.path.isfile(header):
        raise BoardProjectError(f"the persistence component is missing ({header}); board projects need micro/persist "
                                "from the tinyprop-tf source tree (an installed wheel does not ship micro/)")
    out = {"include/tinyprop/persist.h": header}
    for name in sorted(os.listdir(os.path.join(root, "src"))):
        if name.endswith(".cc") and "sim" not in name:
            out[f"src/{name}"] = os.path.join(root, "src", name)
    pending = list(out.values())
    while pending:
        with open(pending.pop(), encoding="utf-8") as f:
            text = f.read()
        for inc in re.findall(r'#include\s+"(tinyprop/[^"]+)"', text):
            if f"include/{inc}" in out:
                continue
            for base in (os.path.join(root, "include"), os.path.join(_REPO_MICRO, "include")):
                if os.path.isfile(os.path.join(base, inc)):
                    out[f"include/{inc}"] = os.path.join(base, inc)
                    pending.append(os.path.join(base, inc))
                    break
            else:
                raise BoardProjectError(f"micro/persist includes {inc}, which is not in micro/persist/include or "
                                        "micro/include")
    return out


_FAST_MODEL = "train_fast.tflite"
# micro/tflm/tinyprop_tflm.h: op name -> registration function (Register_<op name>)
_DEVICE_OPS = {name: f"Register_{name}" for name in sorted(device_ops.DEVICE_OPS)}


_KERNEL_DIR = "tinyprop_kernels"
_KERNEL_FLAGS_NOTE = ("# The TinyProp kernels match the host bit for bit only without FMA contraction (micro/README.md).\n")


def _kernel_sources() -> dict:
    """project-relative name -> source path: the micro/ kernel library (include/, src/) and its TFLM glue."""
    out = {}
    for sub, rel_dir in (("include/tinyprop", "include/tinyprop"), ("src", "src"), ("tflm", "src")):
        folder = os.path.join(_REPO_MICRO, sub)
        if not os.path.isdir(folder):
            raise BoardProjectError(f"{folder} is missing; fast board projects need micro/ from the tinyprop-tf "
                                    "source tree (an installed wheel does not ship micro/)")
        for name in sorted(os.listdir(folder)):
            if name.endswith((".h", ".cc")) and name != "host_runner.cc":
                out[f"{rel_dir}/{name}"] = os.path.join(folder, name)
    return out


# ---- SDK-independent sources ----------------------------------------------------------------------------------
def _header_comment(ctx, what) -> str:
    m = ctx.manifest
    return (f"// Generated by tinyprop_tf.converters.board_projects for board {ctx.target.key} ({ctx.target.platform}):"
            f" {what}\n// Model '{m.get('model_name')}', train.tflite SHA-256 {ctx.sha[:16]}..., "
            f"batch {m['batch_size']}, loss {m['loss']}, optimizer {m['optimizer'].get('name', '?')}.\n")


def _samples_files(ctx):
    m = ctx.manifest
    n = ctx.x.shape[0]
    sample_elems = int(np.prod(m["input"]["shape"][1:]))
    target_elems = 1 if ctx.is_label else int(np.prod(m["output_shape"][1:]))
    if ctx.is_label:
        decl = "extern const int32_t g_tinyprop_labels[TINYPROP_NUM_SAMPLES];"
        body = f"const int32_t g_tinyprop_labels[TINYPROP_NUM_SAMPLES] = {{\n{_c_ints(ctx.y)}\n}};"
    else:
        decl = "extern const float g_tinyprop_targets[TINYPROP_NUM_SAMPLES * TINYPROP_TARGET_ELEMENTS];"
        body = (f"alignas(16) const float g_tinyprop_targets[TINYPROP_NUM_SAMPLES * TINYPROP_TARGET_ELEMENTS] = {{\n"
                f"{_c_floats(ctx.y)}\n}};")
    header = f"""{_header_comment(ctx, "training samples")}// {ctx.data_note} Other data: write_board_project(..., samples=x, labels=y), or
// fill the input tensors from a sensor in SetInputs() of the main source.
// Sample i is g_tinyprop_samples[i * TINYPROP_SAMPLE_ELEMENTS ...] (input shape {m['input']['shape'][1:]}, float32,
// row-major); its {"label is g_tinyprop_labels[i] (int32, 0 .. classes-1)" if ctx.is_label else
 "target is g_tinyprop_targets[i * TINYPROP_TARGET_ELEMENTS ...] (float32)"}. The training loop takes batches of
// TINYPROP_BATCH_SIZE consecutive samples, wrapping around.
#ifndef TINYPROP_SAMPLES_H_
#define TINYPROP_SAMPLES_H_

#include <stdint.h>

#define TINYPROP_NUM_SAMPLES {n}
#define TINYPROP_SAMPLE_ELEMENTS {sample_elems}
#define TINYPROP_TARGET_ELEMENTS {target_elems}
#define TINYPROP_TARGET_IS_LABEL {1 if ctx.is_label else 0}

extern const float g_tinyprop_samples[TINYPROP_NUM_SAMPLES * TINYPROP_SAMPLE_ELEMENTS];
{decl}

#endif  // TINYPROP_SAMPLES_H_
"""
    source = f"""{_header_comment(ctx, "training samples")}#include "samples.h"

alignas(16) const float g_tinyprop_samples[TINYPROP_NUM_SAMPLES * TINYPROP_SAMPLE_ELEMENTS] = {{
{_c_floats(ctx.x)}
}};

{body}
"""
    return header, source


def _state_files(ctx):
    weights_total = sum(v["elements"] for v in ctx.layout if v["is_weight"])
    rows = []
    for v in ctx.layout:
        rows.append(f'  {{"{v["name"]}", {v["offset"]}u, {v["bytes"]}u, {v["elements"]}u, {v["code"]}, '
                    f'{1 if v["is_weight"] else 0}}},  // {v["dtype"]}{v["shape"]}')
    asserts = []
    for e in ctx.manifest.get("weights", []):
        v = next(v for v in ctx.layout if v["name"] == e["name"])
        macro = re.sub(r"[^0-9A-Za-z_]", "_", e["path"]).upper()
        asserts.append(f"static_assert(TINYPROP_W_{macro}_OFFSET * 4 == {v['offset']} && TINYPROP_W_{macro}_SIZE == "
                       f"{v['elements']}, \"{e['path']}: state layout != weights.h\");")
    header = f"""{_header_comment(ctx, "training-state layout")}// The training state saved to flash is every TFLM resource variable of train.tflite, weights first (manifest
// order, contiguous float32: the first TINYPROP_STATE_WEIGHT_BYTES bytes are exactly weights.bin), then the
// optimizer slots, TinyProp's running maxima (ymax) and the step counter. Names are the variables' shared names
// (found with tflite::MicroResourceVariables::CreateIdIfNoneFound). No SDK dependency.
#ifndef TINYPROP_STATE_H_
#define TINYPROP_STATE_H_

#include <stdint.h>

// Stored in every flash record (tinyprop::RecordMeta::model_id): a record of another export is ignored.
#define TINYPROP_MODEL_ID 0x{ctx.model_id:08x}u
#define TINYPROP_NUM_STATE_VARIABLES {len(ctx.layout)}
#define TINYPROP_STATE_BYTES {ctx.state_bytes}
#define TINYPROP_STATE_WEIGHT_BYTES {4 * weights_total}
// Bytes of one flash slot for this state (header + payload, sector-aligned) and of the two-slot partition.
#define TINYPROP_STATE_SLOT_BYTES {ctx.slot_bytes}
#define TINYPROP_STATE_PARTITION_BYTES {ctx.partition_bytes}

enum TinypropStateDtype : uint8_t {{ kTinypropFloat32 = 1, kTinypropInt32 = 2, kTinypropInt64 = 3 }};

struct TinypropStateVariable {{
  const char* name;   // shared name of the resource variable
  uint32_t offset;    // bytes into the state image
  uint32_t bytes;
  uint32_t elements;
  uint8_t dtype;      // TinypropStateDtype
  uint8_t is_weight;  // 1 for trainable weights
}};

extern const TinypropStateVariable kTinypropStateVariables[TINYPROP_NUM_STATE_VARIABLES];

// Checks the table (offsets ascending, inside TINYPROP_STATE_BYTES, sizes = elements x dtype size).
bool TinypropStateLayoutOk();

#endif  // TINYPROP_STATE_H_
"""
    source = f"""{_header_comment(ctx, "training-state layout")}#include "tinyprop_state.h"

#include "weights.h"  // only for the compile-time checks below (its array is not referenced)

const TinypropStateVariable kTinypropStateVariables[TINYPROP_NUM_STATE_VARIABLES] = {{
{chr(10).join(rows)}
}};

static_assert(TINYPROP_STATE_WEIGHT_BYTES == TINYPROP_WEIGHTS_TOTAL * 4, "state weights != weights.h");
{chr(10).join(asserts)}

bool TinypropStateLayoutOk() {{
  uint32_t end = 0;
  for (int i = 0; i < TINYPROP_NUM_STATE_VARIABLES; ++i) {{
    const TinypropStateVariable& v = kTinypropStateVariables[i];
    const uint32_t item = v.dtype == kTinypropInt64 ? 8u : 4u;
    if (v.offset < end || v.bytes != v.elements * item || v.offset % item != 0 ||
        v.offset + v.bytes > TINYPROP_STATE_BYTES) {{
      return false;
    }}
    end = v.offset + v.bytes;
  }}
  return true;
}}
"""
    return header, source


# ---- main (shared by both platforms) ------------------------------------------------------------------------
_MAIN = Template(r"""${header}//
// Flow: register the model's ops -> interpreter on a static arena with resource variables -> one inference invoke
// (runs the initialiser: the exported weights) -> restore the newest valid training state from flash -> train
// ${train_steps} steps over samples.cc, printing loss and k -> inference on the first batch -> save the state to the
// other flash slot. See README.md. TFLM rules: set EVERY input before EVERY Invoke() (the planner reuses input
// buffers); never call Reset() (it zeroes the resource variables, i.e. the weights).
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/schema/schema_generated.h"
${custom_op_include}${platform_includes}
#include "model_data.h"
#include "samples.h"
#include "tinyprop/persist.h"
#include "tinyprop_state.h"

namespace {

constexpr int kTrainSteps = ${train_steps};
constexpr int kNumOps = ${num_ops};

// The arena holds every tensor plus the resource variables (weights, optimizer slots, ymax, step counter).
alignas(16) uint8_t g_tensor_arena[TINYPROP_ARENA_BYTES];
// Training state image (save/load); 8-byte alignment for int64 variables.
alignas(16) uint8_t g_state_image[TINYPROP_STATE_BYTES];

// Floats printed without %f (not every libc configuration formats floats).
void FormatFloat(float value, char* out, size_t size) {
  if (value != value) {
    snprintf(out, size, "nan");
    return;
  }
  const char* sign = value < 0.0f ? "-" : "";
  float a = value < 0.0f ? -value : value;
  if (a > 3.4e38f) {
    snprintf(out, size, "%sinf", sign);
    return;
  }
  int exponent = 0;
  if (a != 0.0f && (a >= 1.0e7f || a < 1.0e-3f)) {
    while (a >= 10.0f) {
      a /= 10.0f;
      ++exponent;
    }
    while (a < 1.0f) {
      a *= 10.0f;
      --exponent;
    }
  }
  unsigned long whole = static_cast<unsigned long>(a);
  unsigned long frac = static_cast<unsigned long>((a - static_cast<float>(whole)) * 1000000.0f + 0.5f);
  if (frac >= 1000000ul) {
    whole += 1;
    frac -= 1000000ul;
  }
  if (exponent != 0) {
    snprintf(out, size, "%s%lu.%06lue%d", sign, whole, frac, exponent);
  } else {
    snprintf(out, size, "%s%lu.%06lu", sign, whole, frac);
  }
}

// Exactly the ${num_ops} operators of ${model_file} (manifest.json "${ops_key}"/"ops"), nothing else.
TfLiteStatus RegisterOps(tflite::MicroMutableOpResolver<kNumOps>* resolver) {
${register_ops}
  return kTfLiteOk;
}

bool CheckTensor(const TfLiteTensor* tensor, TfLiteType type, size_t bytes, const char* name) {
  if (tensor == nullptr || tensor->type != type || tensor->bytes != bytes) {
    printf("tinyprop: tensor '%s' has an unexpected type or size (expected %u bytes)\n", name,
           static_cast<unsigned>(bytes));
    return false;
  }
  return true;
}

// Batch of TINYPROP_BATCH_SIZE consecutive samples from `first` (wrapping around) into x and y, and the mode.
bool SetInputs(tflite::MicroInterpreter* interpreter, int32_t first, int32_t mode) {
  TfLiteTensor* x = interpreter->input(TINYPROP_INPUT_X);
  TfLiteTensor* y = interpreter->input(TINYPROP_INPUT_Y);
  TfLiteTensor* m = interpreter->input(TINYPROP_INPUT_MODE);
  if (!CheckTensor(x, kTfLiteFloat32, sizeof(float) * TINYPROP_BATCH_SIZE * TINYPROP_SAMPLE_ELEMENTS, "x") ||
      !CheckTensor(y, ${y_type}, ${y_bytes}, "y") || !CheckTensor(m, kTfLiteInt32, sizeof(int32_t), "mode")) {
    return false;
  }
  for (int32_t b = 0; b < TINYPROP_BATCH_SIZE; ++b) {
    const int32_t s = (first + b) % TINYPROP_NUM_SAMPLES;
    memcpy(x->data.f + b * TINYPROP_SAMPLE_ELEMENTS, g_tinyprop_samples + s * TINYPROP_SAMPLE_ELEMENTS,
           sizeof(float) * TINYPROP_SAMPLE_ELEMENTS);
${set_target}
  }
  m->data.i32[0] = mode;
  return true;
}

bool RunStep(tflite::MicroInterpreter* interpreter, int32_t first, int32_t mode, float* loss) {
  if (!SetInputs(interpreter, first, mode)) return false;
  if (interpreter->Invoke() != kTfLiteOk) {
    printf("tinyprop: Invoke() failed (mode %d)\n", static_cast<int>(mode));
    return false;
  }
  const TfLiteTensor* l = interpreter->output(TINYPROP_OUTPUT_LOSS);
  if (!CheckTensor(l, kTfLiteFloat32, sizeof(float), "loss")) return false;
  *loss = l->data.f[0];
  return true;
}

void PrintKeptPerLayer(tflite::MicroInterpreter* interpreter) {
${print_k}
}

void PrintPredictions(tflite::MicroInterpreter* interpreter) {
${print_predictions}
}

// ---- training state <-> TFLM resource variables ------------------------------------------------------------
TfLiteType StateType(uint8_t dtype) {
  return dtype == kTinypropFloat32 ? kTfLiteFloat32 : dtype == kTinypropInt32 ? kTfLiteInt32 : kTfLiteInt64;
}

// Resource id of a variable by shared name. Only after AllocateTensors(): by then every variable of the model
// exists, so an unknown name returns -1 (the object was created for exactly TINYPROP_NUM_RESOURCE_VARIABLES).
int VariableId(tflite::MicroResourceVariables* variables, const char* name) {
  const int id = variables->CreateIdIfNoneFound(nullptr, name);
  if (id < 0 || id >= TINYPROP_NUM_RESOURCE_VARIABLES) {
    printf("tinyprop: resource variable '%s' not found\n", name);
    return -1;
  }
  return id;
}

bool VariablesToImage(tflite::MicroResourceVariables* variables, uint8_t* image) {
  for (int i = 0; i < TINYPROP_NUM_STATE_VARIABLES; ++i) {
    const TinypropStateVariable& v = kTinypropStateVariables[i];
    const int id = VariableId(variables, v.name);
    if (id < 0) return false;
    int dims[2] = {1, static_cast<int>(v.elements)};  // a TfLiteIntArray {size 1, data {elements}}
    TfLiteEvalTensor tensor = {};
    tensor.data.data = image + v.offset;
    tensor.dims = reinterpret_cast<TfLiteIntArray*>(dims);
    tensor.type = StateType(v.dtype);
    if (variables->Read(id, &tensor) != kTfLiteOk) return false;
  }
  return true;
}

bool ImageToVariables(tflite::MicroResourceVariables* variables, const uint8_t* image) {
  for (int i = 0; i < TINYPROP_NUM_STATE_VARIABLES; ++i) {
    const TinypropStateVariable& v = kTinypropStateVariables[i];
    const int id = VariableId(variables, v.name);
    if (id < 0 || variables->Assign(id, v.bytes, image + v.offset) != kTfLiteOk) return false;
  }
  return true;
}

// Two equal slots over the whole partition, each a whole number of erase sectors.
bool StateLayout(const tinyprop::FlashDevice& flash, tinyprop::PersistLayout* layout) {
  const uint32_t sector = flash.SectorSize();
  if (sector == 0) return false;
  const uint32_t slot = flash.Size() / 2 / sector * sector;
  layout->slot_offset[0] = 0;
  layout->slot_offset[1] = slot;
  layout->slot_size = slot;
  uint32_t max_payload = 0;
  const tinyprop::PersistStatus status = tinyprop::CheckPersistLayout(flash, *layout, &max_payload);
  if (status != tinyprop::PersistStatus::kOk || max_payload < TINYPROP_STATE_BYTES) {
    printf("tinyprop: state partition unusable (%s, %u payload bytes per slot, %u needed)\n",
           tinyprop::PersistStatusName(status), static_cast<unsigned>(max_payload),
           static_cast<unsigned>(TINYPROP_STATE_BYTES));
    return false;
  }
  return true;
}

// Restores the newest valid state of this model; false (weights stay the exported ones) when there is none.
bool LoadState(tinyprop::FlashDevice* flash, tflite::MicroResourceVariables* variables, uint32_t* steps_done) {
  tinyprop::PersistLayout layout;
  if (!StateLayout(*flash, &layout)) return false;
  tinyprop::LoadReport report = {};
  const tinyprop::PersistStatus status =
      tinyprop::LoadWeights(*flash, layout, g_state_image, sizeof(g_state_image), &report);
  if (status == tinyprop::PersistStatus::kNoValidWeights) {
    printf("tinyprop: no saved state in flash: starting from the exported weights\n");
    return false;
  }
  if (status != tinyprop::PersistStatus::kOk) {
    printf("tinyprop: loading the saved state failed: %s (device error %d)\n", tinyprop::PersistStatusName(status),
           static_cast<int>(report.device_error));
    return false;
  }
  if (report.meta.model_id != TINYPROP_MODEL_ID || report.size != TINYPROP_STATE_BYTES) {
    printf("tinyprop: saved state belongs to another model (id 0x%08x, %u bytes): ignored\n",
           static_cast<unsigned>(report.meta.model_id), static_cast<unsigned>(report.size));
    return false;
  }
  if (!ImageToVariables(variables, g_state_image)) return false;
  *steps_done = report.meta.step;
  printf("tinyprop: restored the training state from slot %d (generation %u, %u steps trained before)%s\n",
         static_cast<int>(report.slot), static_cast<unsigned>(report.generation),
         static_cast<unsigned>(report.meta.step), report.other_slot_valid ? "" : "; no older backup");
  return true;
}

bool SaveState(tinyprop::FlashDevice* flash, tflite::MicroResourceVariables* variables, uint32_t steps_done) {
  tinyprop::PersistLayout layout;
  if (!StateLayout(*flash, &layout)) return false;
  if (!VariablesToImage(variables, g_state_image)) return false;
  const tinyprop::RecordMeta meta = {TINYPROP_MODEL_ID, steps_done};
  tinyprop::SaveReport report = {};
  const tinyprop::PersistStatus status =
      tinyprop::SaveWeights(*flash, layout, g_state_image, TINYPROP_STATE_BYTES, &meta, &report);
  if (status != tinyprop::PersistStatus::kOk) {
    printf("tinyprop: saving the state failed: %s (device error %d); the previous state is kept\n",
           tinyprop::PersistStatusName(status), static_cast<int>(report.device_error));
    return false;
  }
  printf("tinyprop: saved the training state (%u bytes) to slot %d, generation %u\n",
         static_cast<unsigned>(TINYPROP_STATE_BYTES), static_cast<int>(report.slot),
         static_cast<unsigned>(report.generation));
  return true;
}

${platform_code}
int RunTraining(tinyprop::FlashDevice* flash) {
  char text[32];
  if (!TinypropStateLayoutOk()) {
    printf("tinyprop: inconsistent state layout table\n");
    return 1;
  }
  const tflite::Model* model = tflite::GetModel(g_tinyprop_train_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    printf("tinyprop: model schema %u, TFLM supports %d\n", static_cast<unsigned>(model->version()),
           TFLITE_SCHEMA_VERSION);
    return 1;
  }
  tflite::MicroMutableOpResolver<kNumOps> resolver;
  if (RegisterOps(&resolver) != kTfLiteOk) {
    printf("tinyprop: registering the ops failed\n");
    return 1;
  }
  tflite::MicroAllocator* allocator = tflite::MicroAllocator::Create(g_tensor_arena, sizeof(g_tensor_arena));
  if (allocator == nullptr) return 1;
  tflite::MicroResourceVariables* variables =
      tflite::MicroResourceVariables::Create(allocator, TINYPROP_NUM_RESOURCE_VARIABLES);
  if (variables == nullptr) return 1;
  tflite::MicroInterpreter interpreter(model, resolver, allocator, variables);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    printf("tinyprop: AllocateTensors() failed: arena of %u bytes too small?\n",
           static_cast<unsigned>(sizeof(g_tensor_arena)));
    return 1;
  }
  printf("tinyprop: arena %u of %u bytes used, %d ops, %d resource variables, batch %d, %d samples\n",
         static_cast<unsigned>(interpreter.arena_used_bytes()), static_cast<unsigned>(sizeof(g_tensor_arena)),
         kNumOps, TINYPROP_NUM_RESOURCE_VARIABLES, TINYPROP_BATCH_SIZE, TINYPROP_NUM_SAMPLES);

  // First invoke in inference mode: runs the initialiser (CALL_ONCE), which assigns the exported weights. Only
  // after it may a saved state be written into the variables (the initialiser would overwrite it).
  float loss = 0.0f;
  if (!RunStep(&interpreter, 0, TINYPROP_MODE_INFER, &loss)) return 1;
  FormatFloat(loss, text, sizeof(text));
  printf("tinyprop: loss on the first batch with the exported weights: %s\n", text);

  uint32_t steps_done = 0;
  if (LoadState(flash, variables, &steps_done)) {
    if (!RunStep(&interpreter, 0, TINYPROP_MODE_INFER, &loss)) return 1;
    FormatFloat(loss, text, sizeof(text));
    printf("tinyprop: loss on the first batch with the restored state: %s\n", text);
  }

  for (int step = 0; step < kTrainSteps; ++step) {
    const int32_t first = static_cast<int32_t>((static_cast<int64_t>(step) * TINYPROP_BATCH_SIZE) %
                                               TINYPROP_NUM_SAMPLES);
    const int64_t t0 = TinypropMillis();
    if (!RunStep(&interpreter, first, TINYPROP_MODE_TRAIN, &loss)) return 1;
    const int64_t t1 = TinypropMillis();
    FormatFloat(loss, text, sizeof(text));
    printf("step %u: loss %s (%ld ms)", static_cast<unsigned>(steps_done + step + 1), text,
           static_cast<long>(t1 - t0));
    PrintKeptPerLayer(&interpreter);
    TinypropYield();
  }

  if (!RunStep(&interpreter, 0, TINYPROP_MODE_INFER, &loss)) return 1;
  FormatFloat(loss, text, sizeof(text));
  printf("tinyprop: inference on the first batch after training: loss %s\n", text);
  PrintPredictions(&interpreter);

  return SaveState(flash, variables, steps_done + kTrainSteps) ? 0 : 1;
}

}  // namespace

${entry}
""")


def _main_source(ctx, platform_includes, platform_code, entry, what):
    m = ctx.manifest
    register = []
    uses = m["tflm_fast" if ctx.custom_ops else "tflm"]["ops"]
    for op, method in ctx.ops:
        register.append(f"  if (resolver->{method}() != kTfLiteOk) return kTfLiteError;  // {op} x{uses[op]}")
    for i, op in enumerate(ctx.custom_ops):  # AddCustom copies the registration
        register.append(f"  TFLMRegistration custom{i} = tinyprop::tflm::{_DEVICE_OPS[op]}();\n"
                        f"  if (resolver->AddCustom(\"{op}\", &custom{i}) != kTfLiteOk) return kTfLiteError;  "
                        f"// CUSTOM:{op} x{uses['CUSTOM:' + op]}")
    if ctx.is_label:
        y_type, y_bytes = "kTfLiteInt32", "sizeof(int32_t) * TINYPROP_BATCH_SIZE"
        set_target = "    y->data.i32[b] = g_tinyprop_labels[s];"
    else:
        y_type, y_bytes = "kTfLiteFloat32", "sizeof(float) * TINYPROP_BATCH_SIZE * TINYPROP_TARGET_ELEMENTS"
        set_target = ("    memcpy(y->data.f + b * TINYPROP_TARGET_ELEMENTS, g_tinyprop_targets + s * "
                      "TINYPROP_TARGET_ELEMENTS,\n           sizeof(float) * TINYPROP_TARGET_ELEMENTS);")
    n_sparse = len(m.get("sparse_layers", []))
    if n_sparse:
        names = ", ".join(m["sparse_layers"])
        print_k = f"""  // k: [TINYPROP_NUM_SPARSE_LAYERS, TINYPROP_BATCH_SIZE] int32, entries kept per sample ({names})
  const TfLiteTensor* k = interpreter->output(TINYPROP_OUTPUT_K);
  if (!CheckTensor(k, kTfLiteInt32, sizeof(int32_t) * TINYPROP_NUM_SPARSE_LAYERS * TINYPROP_BATCH_SIZE, "k")) {{
    printf("\\n");
    return;
  }}
  printf(", kept per layer:");
  for (int layer = 0; layer < TINYPROP_NUM_SPARSE_LAYERS; ++layer) {{
    long kept = 0;
    for (int b = 0; b < TINYPROP_BATCH_SIZE; ++b) kept += k->data.i32[layer * TINYPROP_BATCH_SIZE + b];
    printf(" %ld", kept);
  }}
  printf("\\n");"""
    else:
        print_k = "  (void)interpreter;  // no sparse layers (dense back-propagation): k is empty\n  printf(\"\\n\");"
    out_elems = int(np.prod(m["output_shape"][1:]))
    if ctx.is_label:
        print_pred = f"""  const TfLiteTensor* out = interpreter->output(TINYPROP_OUTPUT_OUTPUT);
  const int classes = {out_elems};
  if (!CheckTensor(out, kTfLiteFloat32, sizeof(float) * TINYPROP_BATCH_SIZE * classes, "output")) return;
  for (int b = 0; b < TINYPROP_BATCH_SIZE; ++b) {{
    int best = 0;
    for (int c = 1; c < classes; ++c) {{
      if (out->data.f[b * classes + c] > out->data.f[b * classes + best]) best = c;
    }}
    printf("  sample %d: predicted class %d, label %d\\n", static_cast<int>(b % TINYPROP_NUM_SAMPLES), best,
           static_cast<int>(g_tinyprop_labels[b % TINYPROP_NUM_SAMPLES]));
  }}"""
    else:
        print_pred = f"""  const TfLiteTensor* out = interpreter->output(TINYPROP_OUTPUT_OUTPUT);
  const int elements = {out_elems};
  if (!CheckTensor(out, kTfLiteFloat32, sizeof(float) * TINYPROP_BATCH_SIZE * elements, "output")) return;
  char text[32];
  for (int b = 0; b < TINYPROP_BATCH_SIZE; ++b) {{
    printf("  sample %d:", static_cast<int>(b % TINYPROP_NUM_SAMPLES));
    for (int e = 0; e < elements && e < 4; ++e) {{
      FormatFloat(out->data.f[b * elements + e], text, sizeof(text));
      printf(" %s", text);
    }}
    printf("%s\\n", elements > 4 ? " ..." : "");
  }}"""
    return _MAIN.substitute(
        header=_header_comment(ctx, what), train_steps=ctx.train_steps, num_ops=len(ctx.ops) + len(ctx.custom_ops),
        model_file=_FAST_MODEL if ctx.custom_ops else "train.tflite", ops_key="tflm_fast" if ctx.custom_ops else "tflm",
        custom_op_include=('#include "tinyprop_tflm.h"  // the TinyProp TFLM custom operators (micro/tflm)\n'
                           if ctx.custom_ops else ""),
        register_ops="\n".join(register), y_type=y_type, y_bytes=y_bytes, set_target=set_target, print_k=print_k,
        print_predictions=print_pred, platform_includes=platform_includes, platform_code=platform_code, entry=entry)


def _common_files(ctx, src):
    """model arrays, samples, state table and persistence sources under `src` (a project-relative folder)."""
    files = {}
    for name in ("model_data.h", "model_data.cc", "weights.h"):
        files[f"{src}/{name}"] = ("copy", os.path.join(ctx.export_dir, name))
    if ctx.model_bytes is not None:  # train_fast.tflite: same inputs/outputs/variables, its own bytes and arena
        from tinyprop_tf.converters.export import _model_data_files

        m = json.loads(json.dumps(ctx.manifest))
        fast_arena = m["tflm_fast"].get("arena_bytes")
        m["tflm"]["arena_bytes"] = fast_arena if fast_arena else m["tflm"]["arena_bytes"]
        header, source = _model_data_files(ctx.model_bytes, m)
        note = f"// {_FAST_MODEL} (TinyProp custom operators). Arena: {ctx.arena_note or 'given by the caller'}.\n"
        files[f"{src}/model_data.h"], files[f"{src}/model_data.cc"] = note + header, note + source
    files[f"{src}/samples.h"], files[f"{src}/samples.cc"] = _samples_files(ctx)
    files[f"{src}/tinyprop_state.h"], files[f"{src}/tinyprop_state.cc"] = _state_files(ctx)
    return files


# ---- ESP-IDF ---------------------------------------------------------------------------------------------------------
_ESP_PLATFORM_INCLUDES = """
#include "esp_err.h"
#include "esp_partition.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
"""

_ESP_PLATFORM_CODE = """// ---- ESP-IDF platform -------------------------------------------------------------------------------------
int64_t TinypropMillis() { return esp_timer_get_time() / 1000; }

// Lets the idle task run between steps (task watchdog).
void TinypropYield() { vTaskDelay(1); }

// The "tinyprop" data partition of partitions.csv as a tinyprop::FlashDevice.
class PartitionFlash final : public tinyprop::FlashDevice {
 public:
  explicit PartitionFlash(const esp_partition_t* partition) : partition_(partition) {}
  uint32_t Size() const override { return static_cast<uint32_t>(partition_->size); }
  uint32_t SectorSize() const override { return static_cast<uint32_t>(partition_->erase_size); }
  // Flash encryption writes 16-byte blocks; otherwise any byte can be programmed.
  uint32_t WriteBlockSize() const override { return partition_->encrypted ? 16 : 1; }
  int32_t Read(uint32_t offset, void* buffer, uint32_t n) override {
    return esp_partition_read(partition_, offset, buffer, n);
  }
  int32_t Erase(uint32_t sector) override {
    return esp_partition_erase_range(partition_, static_cast<size_t>(sector) * partition_->erase_size,
                                     partition_->erase_size);
  }
  int32_t Write(uint32_t offset, const void* data, uint32_t n) override {
    return esp_partition_write(partition_, offset, data, n);
  }

 private:
  const esp_partition_t* partition_;
};
"""

_ESP_ENTRY = """extern "C" void app_main(void) {
  const esp_partition_t* partition =
      esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_ANY, "tinyprop");
  if (partition == nullptr) {
    printf("tinyprop: no 'tinyprop' data partition: flash the partition table of partitions.csv\\n");
    return;
  }
  PartitionFlash flash(partition);
  const int status = RunTraining(&flash);
  printf("tinyprop: %s\\n", status == 0 ? "done" : "FAILED");
}"""


def _esp_files(ctx):
    t = ctx.target
    files = _common_files(ctx, "main")
    files["main/main.cc"] = _main_source(ctx, _ESP_PLATFORM_INCLUDES, _ESP_PLATFORM_CODE, _ESP_ENTRY,
                                         "ESP-IDF application")
    persist_srcs = []
    for rel, path in ctx.persist_files.items():
        files[f"components/tinyprop_persist/{rel}"] = ("copy", path)
        if rel.endswith(".cc"):
            persist_srcs.append(f'"{rel}"')
    files["components/tinyprop_persist/CMakeLists.txt"] = f"""# Two-slot CRC32 weight persistence (tinyprop-tf micro/persist, copied by the board project generator).
idf_component_register(SRCS {' '.join(persist_srcs)}
                       INCLUDE_DIRS "include")
"""
    files["CMakeLists.txt"] = f"""# Generated by tinyprop_tf.converters.board_projects: TinyProp on-device training for {t.description}.
cmake_minimum_required(VERSION 3.16)
include($ENV{{IDF_PATH}}/tools/cmake/project.cmake)
project(tinyprop_train)
"""
    kernel_srcs, kernel_dirs = [], []
    for rel, path in ctx.kernel_files.items():
        files[f"main/{_KERNEL_DIR}/{rel}"] = ("copy", path)
        if rel.endswith(".cc"):
            kernel_srcs.append(f'"{_KERNEL_DIR}/{rel}"')
    if ctx.kernel_files:
        kernel_dirs = [f'"{_KERNEL_DIR}/include"', f'"{_KERNEL_DIR}/src"']
    files["main/CMakeLists.txt"] = f"""idf_component_register(
    SRCS "main.cc" "model_data.cc" "samples.cc" "tinyprop_state.cc"{''.join(' ' + k for k in kernel_srcs)}
    INCLUDE_DIRS "."{''.join(' ' + d for d in kernel_dirs)}
    PRIV_REQUIRES esp_partition esp_timer tinyprop_persist)
""" + (_KERNEL_FLAGS_NOTE + "target_compile_options(${COMPONENT_LIB} PRIVATE -ffp-contract=off)\n"
       if ctx.kernel_files else "")
    files["main/idf_component.yml"] = f"""## TensorFlow Lite Micro for ESP-IDF (pulls espressif/esp-nn). Float32 graphs run TFLM's reference kernels.
dependencies:
  espressif/esp-tflite-micro: "{ESP_TFLM_VERSION}"
  idf: ">=5.1"
"""
    app_bytes = -(-(1024 * 1024 + ctx.model_len + ctx.x.nbytes + ctx.y.nbytes) // 0x10000) * 0x10000
    flash_bytes = t.flash_mb * 1024 * 1024
    first_app = 0x10000
    if first_app + app_bytes + ctx.partition_bytes > flash_bytes:
        raise BoardProjectError(
            f"{t.key}: the app partition ({app_bytes:,} B) and the two-slot state partition "
            f"({ctx.partition_bytes:,} B) do not fit the {t.flash_mb} MB flash (short by "
            f"{first_app + app_bytes + ctx.partition_bytes - flash_bytes:,} B)")
    files["partitions.csv"] = f"""# Name,   Type, SubType, Offset, Size, Flags
# factory app: 1 MiB for code + the model ({ctx.model_len:,} B) and samples, rounded to 64 KiB.
# tinyprop: the two slots of the training state ({ctx.state_bytes:,} B payload, {ctx.slot_bytes:,} B per slot).
nvs,      data, nvs,     ,       0x6000,
phy_init, data, phy,     ,       0x1000,
factory,  app,  factory, ,       0x{app_bytes:x},
tinyprop, data, 0x40,    ,       0x{ctx.partition_bytes:x},
"""
    files["sdkconfig.defaults"] = f"""# Generated by tinyprop_tf.converters.board_projects for {t.description}.
CONFIG_IDF_TARGET="{t.idf_target}"
CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_{t.cpu_mhz}=y
CONFIG_ESPTOOLPY_FLASHSIZE_{t.flash_mb}MB=y
CONFIG_PARTITION_TABLE_CUSTOM=y
CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="partitions.csv"
# TFLM's Invoke() and the training graph need a bigger main task stack than the 3.5 KB default.
CONFIG_ESP_MAIN_TASK_STACK_SIZE={_STACK_BYTES}
CONFIG_COMPILER_OPTIMIZATION_PERF=y
# A training step can take longer than the task watchdog's 5 s on a slow (soft-float) core.
CONFIG_ESP_TASK_WDT_TIMEOUT_S=60
"""
    files["README.md"] = _readme(ctx)
    return files


# ---- Zephyr ----------------------------------------------------------------------------------------------------------
def _zephyr_partition(ctx):
    """(devicetree node label, overlay text) for the state partition."""
    t = ctx.target
    storage = next(p for p in t.tail_partitions if p[0] == "storage_partition")
    header = (f"/* Generated by tinyprop_tf.converters.board_projects for {t.description} ({t.west_board}).\n"
              f" * Training state: {ctx.state_bytes} B payload, two slots of {ctx.slot_bytes} B = "
              f"{ctx.partition_bytes} B.\n")
    if ctx.partition_bytes <= storage[2]:
        return "storage_partition", header + (
            f" * It fits the board's storage_partition (0x{storage[1]:x}, {storage[2] // 1024} KiB): nothing to "
            "change.\n */\n")
    start = t.flash_end - ctx.partition_bytes
    deleted = [p for p in t.tail_partitions if p[1] + p[2] > start]
    lowest = min(p[1] for p in deleted)
    if start < 0x40000:
        raise BoardProjectError(f"{t.key}: the two-slot state partition ({ctx.partition_bytes:,} B) would leave "
                                f"less than 256 KiB of flash for the application")
    lines = [header + f" * Too large for storage_partition (32 KiB): this overlay deletes "
             f"{', '.join(p[0] for p in deleted)} (unused without MCUboot / TF-M)\n * and places tinyprop_partition at "
             f"the end of the flash. Code must stay below 0x{start:x}.\n */\n"]
    lines += [f"/delete-node/ &{p[0]};\n" for p in deleted]
    lines.append(f"""
&flash0 {{
\tpartitions {{
\t\ttinyprop_partition: partition@{start:x} {{
\t\t\tlabel = "tinyprop";
\t\t\treg = <0x{start:08x} 0x{ctx.partition_bytes:08x}>;
\t\t}};
\t}};
}};
""")
    if lowest < start:
        lines.append(f"/* 0x{lowest:x}..0x{start:x} (freed) stays unused. */\n")
    return "tinyprop_partition", "".join(lines)


_ZEPHYR_PLATFORM_INCLUDES = """
#include <zephyr/drivers/flash.h>
#include <zephyr/kernel.h>
#include <zephyr/storage/flash_map.h>
"""

_ZEPHYR_PLATFORM_CODE = Template("""// ---- Zephyr platform --------------------------------------------------------------------------------------
int64_t TinypropMillis() { return k_uptime_get(); }

void TinypropYield() { k_yield(); }

// The devicetree partition ${label} (see boards/${overlay}) as a tinyprop::FlashDevice.
class AreaFlash final : public tinyprop::FlashDevice {
 public:
  AreaFlash(const struct flash_area* area, uint32_t sector, uint32_t write_block)
      : area_(area), sector_(sector), write_block_(write_block) {}
  uint32_t Size() const override { return static_cast<uint32_t>(area_->fa_size); }
  uint32_t SectorSize() const override { return sector_; }
  uint32_t WriteBlockSize() const override { return write_block_; }
  int32_t Read(uint32_t offset, void* buffer, uint32_t n) override {
    return flash_area_read(area_, static_cast<off_t>(offset), buffer, n);
  }
  int32_t Erase(uint32_t sector) override {
    return flash_area_erase(area_, static_cast<off_t>(sector) * sector_, sector_);
  }
  int32_t Write(uint32_t offset, const void* data, uint32_t n) override {
    return flash_area_write(area_, static_cast<off_t>(offset), data, n);
  }

 private:
  const struct flash_area* area_;
  uint32_t sector_;
  uint32_t write_block_;
};
""")

_ZEPHYR_ENTRY = Template("""int main(void) {
  const struct flash_area* area = nullptr;
  if (flash_area_open(FIXED_PARTITION_ID(${label}), &area) != 0) {
    printf("tinyprop: cannot open the flash partition ${label}\\n");
    return 1;
  }
  // The persistence needs one erase size over the whole partition (uniform on nRF52/nRF53: 4 KiB pages).
  struct flash_pages_info page;
  struct flash_pages_info last_page;
  const struct device* device = flash_area_get_device(area);
  if (flash_get_page_info_by_offs(device, area->fa_off, &page) != 0 ||
      flash_get_page_info_by_offs(device, area->fa_off + static_cast<off_t>(area->fa_size) - 1, &last_page) != 0 ||
      page.size != last_page.size) {
    printf("tinyprop: cannot read the flash page size, or it is not uniform over the partition\\n");
    flash_area_close(area);
    return 1;
  }
  uint32_t write_block = static_cast<uint32_t>(flash_area_align(area));
  if (write_block == 0) write_block = 1;
  AreaFlash flash(area, static_cast<uint32_t>(page.size), write_block);
  const int status = RunTraining(&flash);
  flash_area_close(area);
  printf("tinyprop: %s\\n", status == 0 ? "done" : "FAILED");
  return status;
}""")


def _zephyr_files(ctx):
    t = ctx.target
    label, overlay = _zephyr_partition(ctx)
    files = _common_files(ctx, "src")
    files["src/main.cpp"] = _main_source(
        ctx, _ZEPHYR_PLATFORM_INCLUDES, _ZEPHYR_PLATFORM_CODE.substitute(label=label, overlay=t.overlay),
        _ZEPHYR_ENTRY.substitute(label=label), "Zephyr / nRF Connect SDK application")
    persist_srcs = []
    for rel, path in ctx.persist_files.items():
        files[f"lib/tinyprop_persist/{rel}"] = ("copy", path)
        if rel.endswith(".cc"):
            persist_srcs.append(f"lib/tinyprop_persist/{rel}")
    files[f"boards/{t.overlay}"] = overlay
    kernel_srcs = []
    for rel, path in ctx.kernel_files.items():
        files[f"lib/{_KERNEL_DIR}/{rel}"] = ("copy", path)
        if rel.endswith(".cc"):
            kernel_srcs.append(f"lib/{_KERNEL_DIR}/{rel}")
    kernel_dirs = f" lib/{_KERNEL_DIR}/include lib/{_KERNEL_DIR}/src" if ctx.kernel_files else ""
    kernel_flags = (_KERNEL_FLAGS_NOTE + "target_compile_options(app PRIVATE -ffp-contract=off)\n"
                    if ctx.kernel_files else "")
    sources = ["src/main.cpp", "src/model_data.cc", "src/samples.cc", "src/tinyprop_state.cc"] + persist_srcs
    sources += kernel_srcs
    files["CMakeLists.txt"] = f"""# Generated by tinyprop_tf.converters.board_projects: TinyProp on-device training for {t.description}.
cmake_minimum_required(VERSION 3.20.0)
find_package(Zephyr REQUIRED HINTS $ENV{{ZEPHYR_BASE}})
project(tinyprop_train)

target_sources(app PRIVATE
{chr(10).join('  ' + s for s in sources)})
target_include_directories(app PRIVATE src lib/tinyprop_persist/include{kernel_dirs})
{kernel_flags}"""
    files["prj.conf"] = f"""# Generated by tinyprop_tf.converters.board_projects for {t.description}.
# C++17 with the full C++ library (TFLM needs it)
CONFIG_CPP=y
CONFIG_STD_CPP17=y
CONFIG_REQUIRES_FULL_LIBCPP=y
# TensorFlow Lite Micro (the optional west project tflite-micro, see README.md / west.yml)
CONFIG_TENSORFLOW_LITE_MICRO=y
CONFIG_FPU=y
# Flash access for the two-slot training-state persistence
CONFIG_FLASH=y
CONFIG_FLASH_MAP=y
CONFIG_FLASH_PAGE_LAYOUT=y
# TFLM's Invoke() and the training graph need a big stack; no heap is used (static arena)
CONFIG_MAIN_STACK_SIZE={_STACK_BYTES}
CONFIG_HEAP_MEM_POOL_SIZE=0
"""
    files["sysbuild.conf"] = """# nRF Connect SDK (sysbuild): use the devicetree partitions (boards/*.overlay) instead of the Partition Manager.
SB_CONFIG_PARTITION_MANAGER=n
"""
    files["west.yml"] = f"""# West manifest for a workspace with nRF Connect SDK + TensorFlow Lite Micro (see README.md).
# nRF Connect SDK does not import Zephyr's optional tflite-micro project: it is added here.
manifest:
  remotes:
    - name: ncs
      url-base: https://github.com/nrfconnect
    - name: zephyrproject-rtos
      url-base: https://github.com/zephyrproject-rtos
  projects:
    - name: nrf
      remote: ncs
      repo-path: sdk-nrf
      revision: main  # replace with the nRF Connect SDK release you use (a vX.Y.Z tag)
      import: true
    - name: tflite-micro
      remote: zephyrproject-rtos
      repo-path: tflite-micro
      # branch zephyr-v4.4.0 (has every resolver method this model needs); its sources are compiled by the
      # SDK's zephyr/modules/tflite-micro/CMakeLists.txt, see README.md
      revision: {ZEPHYR_TFLM_REVISION}
      path: modules/lib/tflite-micro
  self:
    path: tinyprop_train
"""
    files["README.md"] = _readme(ctx, label=label)
    return files


# ---- README ----------------------------------------------------------------------------------------------------------
def _readme(ctx, label=None):
    t, m, b = ctx.target, ctx.manifest, ctx.budget
    ops = ", ".join(op for op, _ in ctx.ops)
    state_rows = "\n".join(
        f"| `{v['name']}` | {v['dtype']} {v['shape']} | {v['offset']} | {v['bytes']} | {'weight' if v['is_weight'] else 'state'} |"
        for v in ctx.layout)
    fit = ("" if b["fits"] else "\n> **Warning: this model does not fit the board.** " + b["verdict"] +
           ". Reduce the batch size or the widest sparse layer (the selection's [B, M, M] comparison tensors "
           "dominate the arena), or pick a board with more RAM.\n")
    model_file = _FAST_MODEL if ctx.custom_ops else "train.tflite"
    custom_text = ""
    if ctx.custom_ops:
        custom_text = (f" and the {len(ctx.custom_ops)} TinyProp custom operators it uses "
                       f"({', '.join(ctx.custom_ops)}; `AddCustom`, sources in `{_KERNEL_DIR}/`: the micro/ "
                       "kernels and their TFLM glue, so sparse layers really skip the unselected rows and "
                       f"filters). Arena: {ctx.arena_note or 'given by the caller'}")
    common = f"""
## What it does

`{'main/main.cc' if t.platform == 'esp-idf' else 'src/main.cpp'}`:

1. registers exactly the {len(ctx.ops)} builtin ops of `{model_file}` ({ops}){custom_text} in a
   `tflite::MicroMutableOpResolver<{len(ctx.ops) + len(ctx.custom_ops)}>`, creates a `MicroAllocator` on a static arena of
   `TINYPROP_ARENA_BYTES` = {m['tflm']['arena_bytes_recommended']:,} B and a `MicroResourceVariables` for the
   {m['tflm']['resource_variables']} resource variables, and the interpreter;
2. runs one inference invoke: it runs the model's initialiser (`CALL_ONCE`), which assigns the exported weights;
3. loads the newest valid training state from the two-slot flash partition (`tinyprop::LoadWeights`, CRC32,
   generation counter) and, if its model id (`TINYPROP_MODEL_ID` = 0x{ctx.model_id:08x}) and size match, writes it
   into the resource variables (`MicroResourceVariables::Assign`);
4. trains {ctx.train_steps} steps (mode {m['tflm']['modes']['train']}) on batches of {m['batch_size']} consecutive
   samples of `samples.cc`, printing the loss, the time and the entries kept per sparse layer (`k`) per step;
5. runs inference mode (mode {m['tflm']['modes']['infer']}) on the first batch and prints the predictions;
6. reads every resource variable (`MicroResourceVariables::Read`) into the state image and saves it with
   `tinyprop::SaveWeights` to the slot that does not hold the newest state (a power cut during the save leaves the
   previous state loadable). The next boot continues from there.

Samples: {ctx.data_note} Regenerate with `write_board_project(export_dir, "{t.key}", out_dir, samples=x,
labels=y)`, or fill `x`/`y` from a sensor in `SetInputs()`.

### Reading the weights back from TFLM

`train.tflite` has no weight outputs, and TFLM's Python interpreter cannot read resource variables. On the device
the application owns the `tflite::MicroResourceVariables` it hands to the interpreter: after `AllocateTensors()`,
`CreateIdIfNoneFound(nullptr, shared_name)` returns a variable's id, `Read(id, &eval_tensor)` copies it out and
`Assign(id, bytes, data)` copies it in (`Assign(int, size_t, const void*)`: TFLM since early 2025, i.e.
esp-tflite-micro 1.4, Zephyr's tflite-micro branch zephyr-v4.1.0 and later). The state layout (`tinyprop_state.h`,
read from the initialiser subgraph of `train.tflite` when the project was generated) saves every variable:

| variable | dtype / shape | offset | bytes | kind |
|---|---|---:|---:|---|
{state_rows}

Payload {ctx.state_bytes:,} B; the first {4 * sum(v['elements'] for v in ctx.layout if v['is_weight']):,} B are
exactly `weights.bin`. A flash record stores `RecordMeta{{model_id, step}}` (the total steps trained).

## Memory budget ({t.description}, profile `{b['board_profile']}` of `tinyprop_tf.boards`)

{b['table']}

**{b['verdict']}.**
{fit}
Notes: the arena was measured by the tflite-micro Python interpreter on a 64-bit host (+5 %, rounded to 1 KiB);
32-bit pointers make the device's need somewhat smaller: the application prints `arena_used_bytes()`. The weights
live in the arena (resource variables) and, as initial values, inside the model in flash. Code (TFLM runtime and
the {len(ctx.ops)} kernels, this application, the persistence library) is not counted: check `{'idf.py size' if t.platform == 'esp-idf' else 'west build -t rom_report / ram_report'}`.
Usable RAM: {b['usable_ram_source']}
{"ESP-IDF limits statically allocated DRAM (on the ESP32-S3/C3 by the IRAM the application uses): if the link "
 "fails with a DRAM segment overflow for a large arena, allocate `g_tensor_arena` with `heap_caps_malloc` instead."
 if t.platform == "esp-idf" else ""}

## Files

- `{'main' if t.platform == 'esp-idf' else 'src'}/model_data.h/.cc`, `weights.h`: copied from the export
  (`model_data.h` has the input/output indices and arena sizes; `weights.h` only feeds compile-time checks).
- `samples.h/.cc`: the training data; `tinyprop_state.h/.cc`: the state layout table.
- `{'components/tinyprop_persist' if t.platform == 'esp-idf' else 'lib/tinyprop_persist'}`: the two-slot CRC32
  persistence library (tinyprop-tf `micro/persist`).
- `{outdir.PROJECT_RECORD}`: the SHA-256 of every generated file. Generating this project again (`tinyprop export
  --overwrite --board {t.key}`, or `write_board_project` into this folder) keeps your edited
  `{'main/main.cc' if t.platform == 'esp-idf' else 'src/main.cpp'}` and writes the new one beside it as
  `{'main.cc' if t.platform == 'esp-idf' else 'main.cpp'}.new` (merge it); files the generator did not write
  (`build/`, `sdkconfig`, your own) stay; the other generated files are replaced.
"""
    if t.platform == "esp-idf":
        return f"""# TinyProp on-device training: {t.description} (ESP-IDF)

Generated by `tinyprop_tf.converters.board_projects` from an export of model `{m.get('model_name')}`
(batch {m['batch_size']}, loss `{m['loss']}`, optimizer `{m['optimizer'].get('name', '?')}`, policy
`{m.get('policy_repr', '?')}`).

## Build, flash, monitor

Needs ESP-IDF >= 5.1 (`. $IDF_PATH/export.sh`); the component manager downloads `espressif/esp-tflite-micro`
({ESP_TFLM_VERSION}, with `espressif/esp-nn`) on the first build.

```sh
idf.py set-target {t.idf_target}
idf.py build flash monitor          # add -p /dev/ttyUSB0 (or ttyACM0) if needed
```

`sdkconfig.defaults`: CPU {t.cpu_mhz} MHz, {t.flash_mb} MB flash, main task stack {_STACK_BYTES} B, custom
`partitions.csv` with a `tinyprop` data partition (subtype 0x40) of {ctx.partition_bytes:,} B for the two state
slots. Erase the saved state with `idf.py erase-flash` (or `parttool.py erase_partition --partition-name tinyprop`).
{common}"""
    tflm_note = ""
    old_ops = sorted(set(m["tflm"]["ops"]) & ZEPHYR_V41_MISSING)
    if old_ops:
        tflm_note = (f"\nThis model uses {', '.join(old_ops)}: the zephyr-v4.1.0 branch of tflite-micro has no "
                     f"resolver method for {'it' if len(old_ops) == 1 else 'them'}, the zephyr-v4.4.0 branch has.\n")
    return f"""# TinyProp on-device training: {t.description} (Zephyr / nRF Connect SDK)

Generated by `tinyprop_tf.converters.board_projects` from an export of model `{m.get('model_name')}`
(batch {m['batch_size']}, loss `{m['loss']}`, optimizer `{m['optimizer'].get('name', '?')}`, policy
`{m.get('policy_repr', '?')}`).

## TensorFlow Lite Micro in the workspace

TFLM is Zephyr's *optional* west project `tflite-micro` (`CONFIG_TENSORFLOW_LITE_MICRO=y`; Zephyr's
`modules/tflite-micro/CMakeLists.txt` compiles it). nRF Connect SDK does not import it, so the workspace manifest
must add it:

- **nRF Connect SDK**: use `west.yml` of this folder as the manifest of a workspace application (set the `nrf`
  revision to your SDK release), or add its `tflite-micro` project entry to your own manifest; then `west update`.
- **Upstream Zephyr**: `west config manifest.group-filter -- +optional && west update tflite-micro`.

The entry pins tflite-micro to the zephyr-v4.4.0 branch ({ZEPHYR_TFLM_REVISION[:10]}). The source list that
compiles it comes from the SDK's Zephyr: with a Zephyr older than 4.4 pin instead the revision your Zephyr's own
`west.yml` names (`west manifest --resolve | grep -A3 tflite-micro` in an upstream checkout) and check that every op
below has its `Add...()` method in that revision.{tflm_note}

## Build, flash, monitor

```sh
west build -b {t.west_board} -p
west flash
# serial console at 115200 baud, e.g.: screen /dev/ttyACM0 115200
```

`prj.conf`: C++17 + full libc++, TFLM, FPU, flash map, main stack {_STACK_BYTES} B, heap 0 (the arena is a static
buffer). `sysbuild.conf` turns the nRF Connect SDK Partition Manager off so that the devicetree partition is used
(only read in sysbuild builds, the default in nRF Connect SDK; upstream Zephyr without `--sysbuild` ignores it,
delete it for an upstream `--sysbuild` build, which does not know the symbol).
The state lives in the devicetree partition `{label}` ({ctx.partition_bytes:,} B for two slots; see
`boards/{t.overlay}`). Erase it with `west flash --erase` (erases the whole chip) or `nrfjprog --eraseall`.
{common}"""
