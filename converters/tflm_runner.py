"""Driver of ``tinyprop_tflm_runner`` (``micro/tflm/host_runner.cc``): TFLM with the TinyProp custom operators.

The pip ``tflite-micro`` interpreter cannot load custom operators (it would need them compiled against its own,
unshipped source), so graphs with ``TINYPROP_*`` ops run in a host build of the TFLM tree a board project uses:

- ``TINYPROP_TFLM_RUNNER=/path/to/tinyprop_tflm_runner``: a runner built already, or
- ``TINYPROP_TFLM_DIR=/path/to/tflm-tree``: a complete TFLM tree with its third-party headers (the ESP-IDF
  component ``espressif/esp-tflite-micro`` is one: ``managed_components/espressif__esp-tflite-micro`` of any
  ESP-IDF project that depends on it); the runner is built once into ``micro/build-tflm-runner`` (about five
  minutes on two cores).

Without either, ``find_runner`` returns None and the callers say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile

import numpy as np

from tinyprop_tf.converters import flatbuffer

MICRO_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "micro"))
BUILD_DIR = os.path.join(MICRO_DIR, "build-tflm-runner")
DEFAULT_ARENA = 32 << 20
HOW_TO = ("set TINYPROP_TFLM_DIR to a complete TFLM tree (e.g. an ESP-IDF project's "
          "managed_components/espressif__esp-tflite-micro) or TINYPROP_TFLM_RUNNER to a built tinyprop_tflm_runner")


class RunnerError(RuntimeError):
    """The runner could not be built, or failed on a model."""


def find_runner(build: bool = True) -> str | None:
    """Path of a usable ``tinyprop_tflm_runner`` (building it from ``TINYPROP_TFLM_DIR`` if needed), or None."""
    given = os.environ.get("TINYPROP_TFLM_RUNNER")
    if given:
        if not os.access(given, os.X_OK):
            raise RunnerError(f"TINYPROP_TFLM_RUNNER={given} is not an executable file")
        return given
    tree = os.environ.get("TINYPROP_TFLM_DIR")
    if not tree:
        return None
    if not os.path.isfile(os.path.join(tree, "tensorflow", "lite", "micro", "micro_interpreter.h")):
        raise RunnerError(f"TINYPROP_TFLM_DIR={tree} is not a TFLM tree (no tensorflow/lite/micro/micro_interpreter.h)")
    exe = os.path.join(BUILD_DIR, "tinyprop_tflm_runner")
    if not build:
        return exe if os.path.isfile(exe) else None
    os.makedirs(BUILD_DIR, exist_ok=True)
    # One build at a time: exports and verifies in parallel processes (pytest -n) share this build tree.
    with open(os.path.join(BUILD_DIR, ".build.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cmd in (["cmake", "-S", MICRO_DIR, "-B", BUILD_DIR, f"-DTINYPROP_TFLM_DIR={tree}",
                     "-DTINYPROP_TFLM_HOST_RUNNER=ON", "-DTINYPROP_BUILD_TESTS=OFF"],
                    ["cmake", "--build", BUILD_DIR, "--target", "tinyprop_tflm_runner", "-j",
                     str(os.cpu_count() or 2)]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise RunnerError(f"building tinyprop_tflm_runner from {tree} failed:\n{tail}")
    return exe


@contextlib.contextmanager
def _using(runner: str):
    """Shared hold on the build tree's lock while a runner built there executes (a rebuild takes it exclusively,
    so no process runs a half-linked binary)."""
    if os.path.dirname(os.path.abspath(runner)) != os.path.abspath(BUILD_DIR):
        yield
        return
    with open(os.path.join(BUILD_DIR, ".build.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def run(runner: str, model: bytes, inputs_per_invoke: list[list[np.ndarray]], arena: int = DEFAULT_ARENA,
        timeout: float = 600) -> tuple[list[list[np.ndarray]], int]:
    """Invoke ``model`` once per entry of ``inputs_per_invoke`` (arrays in the model's input order) in one
    interpreter (resource variables persist). Returns (outputs per invoke, arena bytes used)."""
    parsed = flatbuffer.load(model, "model for tinyprop_tflm_runner")
    in_details, out_details = flatbuffer.io_details(parsed, 0)
    with tempfile.TemporaryDirectory(prefix="tinyprop-runner-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(model)
        for s, arrays in enumerate(inputs_per_invoke):
            if len(arrays) != len(in_details):
                raise ValueError(f"invoke {s}: {len(arrays)} inputs, the model has {len(in_details)}")
            for i, (a, d) in enumerate(zip(arrays, in_details)):
                a = np.asarray(a, dtype=flatbuffer.numpy_dtype(_type_code(d["dtype"])))  # tofile writes C order
                if list(a.shape) != d["shape"]:
                    raise ValueError(f"invoke {s}: input {d['name']} has shape {list(a.shape)}, expected {d['shape']}")
                a.tofile(os.path.join(tmp, f"in_{s}_{i}.bin"))
        # The resource-variable table lives in the arena: size it for this model, as a device project does.
        num_variables = max(1, len(flatbuffer.variable_names(parsed)))
        with _using(runner):
            proc = subprocess.run([runner, path, str(int(arena)), tmp, str(len(inputs_per_invoke)),
                                   str(num_variables)], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RunnerError(f"tinyprop_tflm_runner failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        outputs = []
        for s in range(len(inputs_per_invoke)):
            outputs.append([np.fromfile(os.path.join(tmp, f"out_{s}_{o}.bin"),
                                        dtype=flatbuffer.numpy_dtype(_type_code(d["dtype"]))).reshape(d["shape"])
                            for o, d in enumerate(out_details)])
        used = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("arena_used_bytes")]
    return outputs, (used[0] if used else -1)


def _type_code(name: str) -> int:
    return getattr(flatbuffer.fb.TensorType, name.upper())
