"""The files of an export folder, checked against its ``manifest.json`` (no TensorFlow: the CLI runs this first).

``check_export`` accepts a folder only when every file the manifest lists exists, every file it hashes has
that SHA-256, and each file has the structure of its kind: ``.tflite`` files parse as TFLite flatbuffers
(``flatbuffer.load``), ``weights.bin`` holds exactly the weights the manifest describes, ``reference.keras``
is an intact Keras archive. A missing or altered file is named in one ``ArtifactError``.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np

from tinyprop_tf import outdir

FORMAT = "tinyprop-train/1"
# The exported step's mode input: 1 trains a step, anything else (0) runs inference.
MODE_TRAIN, MODE_INFER = 1, 0
MANIFEST = "manifest.json"
# Written by every export (train_fast.tflite by --fast): a manifest that does not list one of these is not ours.
REQUIRED_FILES = ("train.tflite", "train_litert.tflite", "weights.bin", "weights.h", "model_data.h", "model_data.cc",
                  "reference.keras", MANIFEST)
# The manifest entries verify reads, with their types.
REQUIRED_KEYS = {"files": dict, "batch_size": int, "input": dict, "target": dict, "output_shape": list,
                 "loss": str, "optimizer": dict, "policy": dict, "sparse_layers": list, "weights": list,
                 "weights_bin": dict, "tflm": dict}
# Memory verify may spend on the batches of its steps (each runtime gets its own copy of them).
VERIFY_BATCH_BYTES = 2 << 30


class ArtifactError(ValueError):
    """An export folder whose files are missing, altered or malformed."""


def check_keras_archive(path: str, label: str = "") -> None:
    """``path`` is an intact Keras 3 ``.keras`` archive: a zip with config.json whose members pass their CRC."""
    if not os.path.exists(path):
        raise ArtifactError(f"{label}{path}: no such file (expected a .keras model file)")
    if os.path.isdir(path):
        raise ArtifactError(f"{label}{path}: is a folder, expected a .keras model file")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{label}{path}: not a Keras model file (a .keras file is a zip archive; this one is "
                            f"empty, truncated or corrupt)")
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ArtifactError(f"{label}{path}: a zip archive without config.json, not a Keras 3 .keras file")
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise ArtifactError(f"{label}{path}: cannot read the archive ({error})") from None
    if damaged is not None:
        raise ArtifactError(f"{label}{path}: corrupt (member {damaged} fails its CRC check)")


def read_manifest(out_dir: str) -> dict:
    if not os.path.isdir(out_dir):
        raise ArtifactError(f"{out_dir}: no such folder (expected a folder written by tinyprop export)")
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path} not found (is {out_dir!r} a folder written by tinyprop export?)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{path}: unknown format {found!r} (expected {FORMAT!r})")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise ArtifactError(f"{path}: '{key}' is missing or not a {kind.__name__} (export again)")
    files = manifest["files"]
    missing = [name for name in REQUIRED_FILES + (("train_fast.tflite",) if "tflm_fast" in manifest else ())
               if name not in files]
    if missing:
        raise ArtifactError(f"{path}: its 'files' table does not list {', '.join(missing)} (export again)")
    for name, entry in files.items():
        if not isinstance(name, str) or os.path.basename(name) != name or name in (".", ".."):
            raise ArtifactError(f"{path}: file name {name!r} is not a plain name inside the folder")
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: the entry of {name} is not a table")
    try:
        for entry in manifest["weights"]:
            int(entry["size"]), int(entry["offset"]), str(entry["path"]), list(entry["shape"])
        [int(d) for d in manifest["input"]["shape"]]
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{path}: malformed 'weights' or 'input' entry ({type(error).__name__}: {error})") from None
    return manifest


def _check_weights_bin(path: str, manifest: dict) -> None:
    size = os.path.getsize(path)
    expected = sum(int(e["size"]) for e in manifest.get("weights", [])) * 4
    if size != expected or size != manifest.get("weights_bin", {}).get("bytes", size):
        raise ArtifactError(f"{path}: {size} bytes, but the manifest's weights take {expected} bytes")


def check_export(out_dir: str) -> dict:
    """The manifest of ``out_dir`` once every artefact it lists checks out (see the module doc)."""
    manifest = read_manifest(out_dir)
    for name, entry in manifest["files"].items():
        if name == MANIFEST:
            continue
        path = os.path.join(out_dir, name)
        if not os.path.isfile(path):
            raise ArtifactError(f"{path}: missing (manifest.json lists it; export again)")
        if not os.access(path, os.R_OK):
            raise ArtifactError(f"{path}: not readable")
        if name.endswith(".tflite"):  # structure first: the clearer message for a truncated file
            from tinyprop_tf.converters import flatbuffer  # NumPy and the TFLite schema: only when needed

            with open(path, "rb") as f:
                try:
                    flatbuffer.load(f.read(), name)
                except flatbuffer.InvalidModelError as error:
                    raise ArtifactError(f"{path}: {error}") from None
        elif name.endswith(".keras"):
            check_keras_archive(path)
        elif name == "weights.bin":
            _check_weights_bin(path, manifest)
        expected = entry.get("sha256")
        if not expected:
            raise ArtifactError(f"{path}: manifest.json has no SHA-256 for it (export again)")
        if outdir.sha256_file(path) != expected:
            raise ArtifactError(f"{path}: contents do not match manifest.json (modified or damaged after export)")
    return manifest


def check_verify_steps(manifest: dict, steps: int) -> None:
    """``steps`` training steps' batches fit in verify's memory budget."""
    per_step = manifest["batch_size"] * math.prod(manifest["input"]["shape"][1:]) * 4 * 3
    most = max(1, VERIFY_BATCH_BYTES // per_step)
    if steps > most:
        raise ArtifactError(f"--steps {steps}: this model's batches would need {steps * per_step / 2**30:.1f} GiB; "
                            f"use at most {most:,} steps")


def exported_weights(out_dir, manifest) -> dict:
    """{weight name: array} from ``weights.bin``, in the manifest's layout (float32, little-endian)."""
    with open(os.path.join(out_dir, "weights.bin"), "rb") as f:
        raw = np.frombuffer(f.read(), "<f4")
    return {e["name"]: raw[e["offset"] // 4:e["offset"] // 4 + e["size"]].reshape(e["shape"])
            for e in manifest["weights"]}
