"""One summary line for the tests that run ``tinyprop_tflm_runner`` (marker ``tflm_runner``): whether they ran,
so a CI log shows it without listing every passed test."""

from __future__ import annotations

import os

import numpy as np
import pytest

_RANK = {"passed": 0, "skipped": 1, "failed": 2}


def pytest_terminal_summary(terminalreporter):
    outcome = {}  # per test: its worst phase (a skip or failure in setup, call or teardown), else passed
    for reports in terminalreporter.stats.values():
        for r in reports:
            if not isinstance(r, pytest.TestReport) or "tflm_runner" not in r.keywords:
                continue
            if (r.when == "call" or r.outcome != "passed") and _RANK[r.outcome] >= _RANK.get(outcome.get(r.nodeid), -1):
                outcome[r.nodeid] = r.outcome
    if outcome:
        counts = ", ".join(f"{list(outcome.values()).count(o)} {o}" for o in _RANK)
        source = os.environ.get("TINYPROP_TFLM_RUNNER") or os.environ.get("TINYPROP_TFLM_DIR") or "no TFLM tree"
        terminalreporter.write_line(f"tinyprop_tflm_runner tests: {counts} ({source})")


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
    """A PYTHONPATH under which importing TensorFlow or Keras fails: what runs with it ran without them."""
    root = tmp_path_factory.mktemp("no_tensorflow")
    for name in ("tensorflow", "keras"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} imported before the arguments were "
                                                 "checked')\n")
    return {**os.environ, "PYTHONPATH": str(root)}


def _write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """IDX files of 256 + 64 random 'digits' and a 784-8-10 MLP for them: a finetune run of a few seconds."""
    from tinyprop_tf import models

    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("t10k", 64)):
        _write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    model = tmp_path_factory.mktemp("model") / "tiny.keras"
    models.mlp(input_shape=(28, 28, 1), num_classes=10, hidden=(8,)).save(model)
    return str(folder), str(model)
