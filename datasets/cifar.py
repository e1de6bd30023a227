"""CIFAR-10 from the official "python version" batches (``cifar-10-python.tar.gz`` extracted).

Layout: ``cifar-10-batches-py/`` holding ``data_batch_1`` … ``data_batch_5`` (10,000 images each → split
"train", 50,000), ``test_batch`` (10,000 → split "test") and ``batches.meta``. Each batch is a pickled dict
with bytes keys: ``b"data"`` uint8 ``[10000, 3072]`` (per image the 1,024 red, then green, then blue values of
a 32×32 image, row-major), ``b"labels"`` (list of 0-9) and ``b"filenames"``; ``batches.meta`` has
``b"label_names"``.

Pickles can run code when loaded, so batches are read with an unpickler that only accepts the NumPy array
types the official files contain; anything else raises :class:`DatasetLayoutError`. A missing or malformed
batch also raises: each batch is a fifth of the training set, too much to skip quietly.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ._common import DatasetLayoutError, LabeledData, check_choice, describe_folder, require_dir

CIFAR10_DIR_NAME = "cifar-10-batches-py"
CIFAR10_SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_META = "batches.meta"
_EXPECTED = "cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta (or its parent folder)"
# What a batch pickle may reference: NumPy's array reconstruction, under both module names NumPy has used
# (numpy.core before 2.0, numpy._core since); _frombuffer is what pickle protocol 5 uses for arrays, and
# _codecs.encode is how Python 3 writes bytes in protocol 2 (batches re-pickled with Python 3).
_ALLOWED_GLOBALS = {(module, name)
                    for package in ("numpy.core", "numpy._core")
                    for module, name in ((f"{package}.multiarray", "_reconstruct"), (f"{package}.multiarray", "scalar"),
                                         (f"{package}.numeric", "_frombuffer"))}
_ALLOWED_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only; refuses every other global (no code execution)."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")


def batches_dir(path: str | os.PathLike) -> Path:
    """``path`` itself if it holds the batches, else ``path/cifar-10-batches-py``; DatasetLayoutError otherwise."""
    folder = require_dir(path, _EXPECTED)
    for candidate in (folder, folder / CIFAR10_DIR_NAME):
        if (candidate / CIFAR10_META).is_file():
            return candidate
    raise DatasetLayoutError(f"expected {_EXPECTED}; found no {CIFAR10_META} in {folder} ({describe_folder(folder)})")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetLayoutError(f"{path} is missing; expected {_EXPECTED}")
    try:
        with open(path, "rb") as file:
            # encoding="bytes": the official batches were pickled by Python 2, their str keys load as bytes.
            content = _ArrayOnlyUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DatasetLayoutError(f"{path}: not a readable CIFAR batch pickle ({error or 'file ends early'})") from error
    if not isinstance(content, dict):
        raise DatasetLayoutError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def class_names(folder: Path) -> tuple[str, ...]:
    """The class names from ``batches.meta`` (``b"label_names"``), decoded as UTF-8."""
    meta = _unpickle(folder / CIFAR10_META)
    names = meta.get(b"label_names")
    if not isinstance(names, list) or not names:
        raise DatasetLayoutError(f"{folder / CIFAR10_META}: expected a b'label_names' list")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images uint8 [n, 32, 32, 3], labels int32 [n], file names)`` of one batch file, validated."""
    batch = _unpickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DatasetLayoutError(f"{path}: expected b'data' as a uint8 [n, 3072] array, got {type(data).__name__} "
                                 f"{shape if shape is not None else ''}")
    labels = np.asarray(labels if labels is not None else [], np.int64)
    if labels.shape != (data.shape[0],) or (labels.size and not 0 <= labels.min() <= labels.max() < num_classes):
        raise DatasetLayoutError(f"{path}: expected b'labels' as {data.shape[0]} class indices 0-{num_classes - 1}")
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in batch.get(b"filenames", [])]
    # Stored channel-major (3 planes of 32×32); Keras wants channels last.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32), names


def load_cifar10(path: str | os.PathLike, split: str = "train") -> LabeledData:
    """Load CIFAR-10's train (data_batch_1..5, 50,000 images) or test (test_batch, 10,000) split.

    ``path`` is the ``cifar-10-batches-py`` folder or its parent.

    Returns:
        LabeledData with ``x`` uint8 ``[N, 32, 32, 3]`` (height, width, RGB; 0-255, not scaled), ``y`` int32
        ``[N]`` indices into ``classes`` (from batches.meta: airplane, automobile, bird, …), ``sample_rate``
        None and ``sources`` the per-image file names when the batches have them.
    """
    check_choice("split", split, CIFAR10_SPLITS)
    folder = batches_dir(path)
    classes = class_names(folder)
    parts = [_read_batch(folder / name, len(classes)) for name in CIFAR10_SPLITS[split]]
    names = [name for part in parts for name in part[2]]
    x = np.concatenate([part[0] for part in parts])
    return LabeledData(x=x, y=np.concatenate([part[1] for part in parts]), classes=classes,
                       sources=tuple(names) if len(names) == len(x) else ())
