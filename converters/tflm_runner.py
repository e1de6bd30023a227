"""Driver of ``tinyprop_tflm_runner`` (``micro/tflm/host_runner.cc``): TFLM with the TinyProp custom operators.

The pip ``tflite-micro`` interpreter cannot load custom operators (it would need them compiled against its own,
unshipped source), so graphs with ``TINYPROP_*`` ops run in a host build of the TFLM tree a board project uses:

- ``TINYPROP_TFLM_RUNNER=/path/to/tinyprop_tflm_runner``: a runner built already, or
- ``TINYPROP_TFLM_DIR=/path/to/tflm-tree``: a complete TFLM tree with its third-party headers (the ESP-IDF
  component ``espressif/esp-tflite-micro`` is one: ``managed_components/espressif__esp-tflite-micro`` of any
  ESP-IDF project that depends on it); the runner is built from it (about seven minutes on two cores the first
  time, seconds when only micro/ changed) into the runner cache, ``TINYPROP_TFLM_CACHE`` (default
  ``micro/build-tflm-runner``; ``make`` sets ``~/.cache/tinyprop-tf/tflm-runner``, which checkouts share).

Without either, ``find_runner`` returns None and the callers say so. ``main`` builds the runner ahead
(``make tflm-runner``, run by ``make test`` so that parallel test workers find it built) and prints its path.

The cache holds one executable per TFLM tree (path and the size and time of every file) and micro/ runner sources
(their content), ``tinyprop_tflm_runner-<key>``: a runner is never reused after either changed, and a published
one never changes, so processes run it without a lock. The sources are copied into the cache (``src/``) and built
in one CMake tree (``build/``), so every checkout shares it and a change to the TinyProp code rebuilds only that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from tinyprop_tf.converters import flatbuffer

MICRO_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "micro"))
DEFAULT_CACHE = os.path.join(MICRO_DIR, "build-tflm-runner")
# What the runner is built from, relative to micro/: copied into the cache and hashed into the key.
RUNNER_SOURCES = ("CMakeLists.txt", "include", "src", "tflm")
SOURCE_SUFFIXES = (".h", ".cc")
# The runner needs neither the tests nor micro/app (whose sources RUNNER_SOURCES does not copy).
CMAKE_OPTIONS = ("-DTINYPROP_TFLM_HOST_RUNNER=ON", "-DTINYPROP_BUILD_TESTS=OFF", "-DTINYPROP_BUILD_APP=OFF")
BUILT_TREE = "tinyprop_tflm_tree.digest"  # in the CMake build tree: the TFLM tree its last complete build used
DEFAULT_ARENA = 32 << 20
HOW_TO = ("set TINYPROP_TFLM_DIR to a complete TFLM tree (e.g. an ESP-IDF project's "
          "managed_components/espressif__esp-tflite-micro) or TINYPROP_TFLM_RUNNER to a built tinyprop_tflm_runner")


class RunnerError(RuntimeError):
    """The runner could not be built, or failed on a model."""


def find_runner(build: bool | str = True) -> str | None:
    """Path of a usable ``tinyprop_tflm_runner``, or None without ``TINYPROP_TFLM_RUNNER``/``TINYPROP_TFLM_DIR``.

    ``build``: True builds it from ``TINYPROP_TFLM_DIR`` if the cache has none for the current tree and sources;
    ``"update"`` only if the cache built this tree before (then only the TinyProp sources recompile: seconds);
    False never builds (None unless the current runner is cached)."""
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
    tree = os.path.realpath(tree)
    cache = os.path.abspath(os.environ.get("TINYPROP_TFLM_CACHE") or DEFAULT_CACHE)
    sources, digest = _runner_sources(), _tree_digest(tree)
    exe = os.path.join(cache, f"tinyprop_tflm_runner-{_key(digest, sources)}")
    if os.path.isfile(exe):
        return exe
    if not build or (build == "update" and _built_tree(cache) != digest):
        return None
    _build(tree, digest, sources, cache, exe)
    return exe


def _runner_sources() -> dict[str, bytes]:
    """{path relative to micro/: content} of everything the runner is built from."""
    files = {}
    for entry in RUNNER_SOURCES:
        top = os.path.join(MICRO_DIR, entry)
        if os.path.isfile(top):
            paths = [top]
        else:
            paths = [os.path.join(d, n) for d, _, names in os.walk(top) for n in names if n.endswith(SOURCE_SUFFIXES)]
        for path in paths:
            with open(path, "rb") as f:
                files[os.path.relpath(path, MICRO_DIR)] = f.read()
    if "CMakeLists.txt" not in files:
        raise RunnerError(f"no micro/ sources at {MICRO_DIR} to build tinyprop_tflm_runner from")
    return files


def _tree_digest(tree: str) -> str:
    """The TFLM tree's path, and the size and mtime of each of its files: cheap for any tree, changes on any
    update of it."""
    h = hashlib.sha256(tree.encode())
    for d, dirs, names in os.walk(tree):
        dirs[:] = sorted(n for n in dirs if n != ".git")
        for n in sorted(names):
            path = os.path.join(d, n)
            st = os.stat(path) if os.path.exists(path) else os.lstat(path)  # a dangling link: its own times
            h.update(f"{os.path.relpath(path, tree)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _key(tree_digest: str, sources: dict[str, bytes]) -> str:
    """Hash of the TFLM tree's digest, the CMake options and the runner sources' content (so a fresh clone of
    the same code gets the same key)."""
    h = hashlib.sha256(repr((tree_digest, CMAKE_OPTIONS)).encode())
    for rel in sorted(sources):
        h.update(f"{rel}\0".encode() + hashlib.sha256(sources[rel]).digest())
    return h.hexdigest()[:16]


def _built_tree(cache: str) -> str | None:
    """Digest of the TFLM tree the cache's CMake build tree last built completely, if any."""
    try:
        with open(os.path.join(cache, "build", BUILT_TREE)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _build(tree: str, tree_digest: str, sources: dict[str, bytes], cache: str, exe: str) -> None:
    src, build = os.path.join(cache, "src"), os.path.join(cache, "build")
    os.makedirs(cache, exist_ok=True)
    # One build at a time: processes that test or verify in parallel (pytest -n) and checkouts share the cache.
    with open(os.path.join(cache, ".build.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(exe):  # built by another process while this one waited
            return
        _sync(sources, src)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(build, BUILT_TREE))
        configure = ["cmake", "-S", src, "-B", build, f"-DTINYPROP_TFLM_DIR={tree}", *CMAKE_OPTIONS]
        proc = _cmake(configure)
        if proc.returncode != 0 and os.path.isdir(build):
            shutil.rmtree(build)  # a build tree CMake will not reuse (the cache folder moved, another CMake)
            proc = _cmake(configure)
        if proc.returncode == 0:
            jobs = str(len(os.sched_getaffinity(0)) or 1)
            proc = _cmake(["cmake", "--build", build, "--target", "tinyprop_tflm_runner", "-j", jobs])
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RunnerError(f"building tinyprop_tflm_runner from {tree} in {build} failed:\n{tail}")
        # Published whole (rename): a process that finds the path runs a complete binary.
        shutil.copy2(os.path.join(build, "tinyprop_tflm_runner"), exe + ".tmp")
        os.replace(exe + ".tmp", exe)
        with open(os.path.join(build, BUILT_TREE), "w") as f:
            f.write(tree_digest)


def _cmake(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise RunnerError("building tinyprop_tflm_runner needs cmake on PATH") from None


def _sync(sources: dict[str, bytes], src: str) -> None:
    """Make ``src`` hold exactly ``sources``, rewriting only files whose content differs (their mtimes are what
    the incremental build goes by)."""
    for rel, data in sources.items():
        path = os.path.join(src, rel)
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    for d, _, names in os.walk(src):
        for n in names:
            if os.path.relpath(os.path.join(d, n), src) not in sources:
                os.remove(os.path.join(d, n))


def run(runner: str, model: bytes, inputs_per_invoke: list[list[np.ndarray]], arena: int = DEFAULT_ARENA,
        timeout: float = 600, state: dict | None = None) -> tuple[list[list[np.ndarray]], int]:
    """Invoke ``model`` once per entry of ``inputs_per_invoke`` (arrays in the model's input order) in one
    interpreter (resource variables and variable tensors persist). ``state``: {output index: initial value}, copied
    into those outputs before the first invoke (the in-place step's training state, ``device_ops.in_place_state``).
    Returns (outputs per invoke, arena bytes used)."""
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
        for o, value in (state or {}).items():
            d = out_details[o]
            a = np.asarray(value, dtype=flatbuffer.numpy_dtype(_type_code(d["dtype"])))
            if a.size != int(np.prod(d["shape"], dtype=np.int64)):
                raise ValueError(f"state for output {o} ({d['name']}) has {a.size} elements, expected shape {d['shape']}")
            a.tofile(os.path.join(tmp, f"state_{o}.bin"))
        # The resource-variable table lives in the arena: size it for this model, as a device project does.
        num_variables = max(1, len(flatbuffer.variable_names(parsed)))
        proc = subprocess.run([runner, path, str(int(arena)), tmp, str(len(inputs_per_invoke)), str(num_variables)],
                              capture_output=True, text=True, timeout=timeout)
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


def main() -> int:
    """Build the runner ahead of the tests (``make test``: parallel workers then find it) and say where it is."""
    start = time.monotonic()
    try:
        runner = find_runner(build=False)
        state = "given" if os.environ.get("TINYPROP_TFLM_RUNNER") else "cached"
        if runner is None:
            runner = find_runner()
            state = f"built in {time.monotonic() - start:.0f} s"
    except RunnerError as e:
        print(f"tinyprop_tflm_runner: error: {e}", file=sys.stderr)
        return 2
    if runner is None:
        print(f"tinyprop_tflm_runner: not built, the tests that run it will skip ({HOW_TO})")
    else:
        print(f"tinyprop_tflm_runner: {runner} ({state})")
    return 0

