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

The same program runs on an emulated Cortex-M4F: ``find_m4_runner(ram_bytes)`` builds it from the same tree with
``micro/cmake/arm-cortex-m4f.cmake`` as a bare-metal image for QEMU's ``mps2-an386`` whose linker script limits
the RAM to ``ram_bytes`` (a board's usable RAM: stack, .data, .bss, heap and the arena inside it; the model is read
at run time into the board's code memory, as a device keeps it in flash). ``run_m4`` runs it under
``qemu-system-arm`` with semihosting (the same files as the host runner) and returns the outputs and the
``Measures`` the image prints: arena used and available, stack high-water mark, .data/.bss/heap, and per-invoke
instruction counts (SysTick under ``-icount``: instructions = ticks x 0.625 on AN386; instructions, not cycles).
A model whose arena does not fit raises ``RamError``, one line naming the arena needed and the arena available.
``main("m4")`` builds the images of the project's board RAM sizes ahead (``make tflm-runner-m4``).
``find_m4_app(data_dir, ram_bytes)`` builds the on-device training app (micro/app/mps2) with a board project's data
files in the same Cortex-M4F tree, so it links the TFLM library compiled for the runner images (``m4_app`` drives it).

The cache holds one executable per TFLM tree (path and the size and time of every file) and micro/ runner sources
(their content), ``tinyprop_tflm_runner-<key>``: a runner is never reused after either changed, and a published
one never changes, so processes run it without a lock. The sources are copied into the cache (``src/``) and built
in one CMake tree (``build/``), so every checkout shares it and a change to the TinyProp code rebuilds only that.
The Cortex-M4F images are ``tinyprop_tflm_runner_m4-<key>.elf`` (the key also covers the RAM size, the startup
and linker script, and micro/app and micro/persist, which the tree also holds) and ``tinyprop_app_m4-<key>.elf`` (its
key also covers the project's data files), built in ``src-m4/`` and ``build-m4/``: another RAM size, model or app
change only recompiles what changed and relinks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from tinyprop_tf import outdir
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
HOST_EXCLUDE = ("tflm/mps2",)  # the Cortex-M4F image's own files: not part of the host runner


@dataclasses.dataclass(frozen=True)
class _Flavor:
    """One kind of runner the cache builds: its sources (relative to micro/), CMake options, target, folders."""
    label: str
    sources: tuple
    suffixes: tuple
    exclude: tuple
    options: tuple
    target: str
    built: str  # the executable, relative to the build tree
    src: str
    build: str


HOST = _Flavor("tinyprop_tflm_runner", RUNNER_SOURCES, SOURCE_SUFFIXES, HOST_EXCLUDE, CMAKE_OPTIONS,
               "tinyprop_tflm_runner", "tinyprop_tflm_runner", "src", "build")

# ---- the emulated Cortex-M4F (QEMU mps2-an386) ----------------------------------------------------------------
# examples: the cross builds configure link_check; app and persist: the training app's image (find_m4_app), built
# in the same tree so that it links the same TFLM library.
M4_SOURCES = RUNNER_SOURCES + ("mps2", "cmake", "examples", "app", "persist")
M4_SUFFIXES = SOURCE_SUFFIXES + (".c", ".ld", ".cmake", "CMakeLists.txt")
M4_APP_DATA = "app-data"  # where the app image's data files go among the copied sources (relative to micro/)
M4_APP_DATA_FILES = ("model_data.h", "model_data.cc", "weights.h", "tinyprop_app_config.h", "samples.cc",
                     "tinyprop_state.cc")
M4_TOOLCHAIN = "cmake/arm-cortex-m4f.cmake"  # relative to the copied sources
M4_STACK_BYTES = 16384  # stack and heap sizes of the image (part of its RAM); the stack's high-water mark is measured
M4_HEAP_BYTES = 8192
M4_MAX_RAM = 4 << 20  # all of AN386's data SSRAM: what the arena needs is measured there when a board's RAM is short
M4_MIN_RAM = 64 << 10  # stack + heap + TFLM's and newlib's .data/.bss (~7 KB), with room for a small arena
INSTRUCTIONS_PER_TICK = 0.625  # AN386 SysTick at 25 MHz, QEMU -icount shift=6 (64 ns per instruction)
QEMU_COMMAND = ("qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native",
                "-icount", "shift=6", "-monitor", "none", "-serial", "none")
M4_TOOLS = ("cmake", "arm-none-eabi-g++", "qemu-system-arm")
M4_BOARDS = ("nrf52840", "nrf5340")  # mcu_profiles names whose usable RAM the images are built with
M4_HOW_TO = ("the emulated Cortex-M4F run needs a TFLM tree (TINYPROP_TFLM_DIR), cmake, arm-none-eabi-g++ and "
             "qemu-system-arm (micro/install_toolchains.sh)")


def _m4_options(ram_bytes: int, app: bool) -> tuple:
    """The CMake options of an image in the Cortex-M4F tree: the runner's or the app's (same TFLM build)."""
    return ("-DTINYPROP_TFLM_MPS2_RUNNER=ON", "-DTINYPROP_BUILD_TESTS=OFF",
            f"-DTINYPROP_BUILD_APP={'ON' if app else 'OFF'}",
            f"-DTINYPROP_MPS2_APP_DATA:STRING={M4_APP_DATA if app else ''}", f"-DTINYPROP_RAM_BYTES={ram_bytes}",
            f"-DTINYPROP_STACK_BYTES={M4_STACK_BYTES}", f"-DTINYPROP_HEAP_BYTES={M4_HEAP_BYTES}")


def _m4_flavor(ram_bytes: int) -> _Flavor:
    return _Flavor("tinyprop_tflm_runner_m4", M4_SOURCES, M4_SUFFIXES, (), _m4_options(ram_bytes, app=False),
                   "tinyprop_tflm_runner_mps2", "tflm/mps2/tinyprop_tflm_runner_mps2", "src-m4", "build-m4")


def _m4_app_flavor(ram_bytes: int) -> _Flavor:
    return _Flavor("tinyprop_app_m4", M4_SOURCES, M4_SUFFIXES, (), _m4_options(ram_bytes, app=True),
                   "tinyprop_app_mps2", "app/mps2/tinyprop_app_mps2", "src-m4", "build-m4")
HOW_TO = ("set TINYPROP_TFLM_DIR to a complete TFLM tree (e.g. an ESP-IDF project's "
          "managed_components/espressif__esp-tflite-micro) or TINYPROP_TFLM_RUNNER to a built tinyprop_tflm_runner")


class RunnerError(RuntimeError):
    """The runner could not be built, or failed on a model."""


class RamError(RunnerError):
    """The model's arena does not fit the RAM the emulated board leaves for it."""

    def __init__(self, message, needed: int | None, available: int, ram_bytes: int):
        super().__init__(message)
        self.needed, self.available, self.ram_bytes = needed, available, ram_bytes


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
    return _find(HOST, "", build)


def find_m4_runner(ram_bytes: int, build: bool | str = True) -> str | None:
    """Path of the Cortex-M4F image (QEMU mps2-an386) whose RAM is limited to ``ram_bytes``, or None without
    ``TINYPROP_TFLM_DIR`` or one of ``M4_TOOLS``. ``build`` as in ``find_runner``."""
    _check_ram(ram_bytes)
    if not os.environ.get("TINYPROP_TFLM_DIR") or m4_missing_tools():
        return None
    return _find(_m4_flavor(ram_bytes), ".elf", build)


def find_m4_app(data_dir: str, ram_bytes: int, build: bool | str = True) -> str | None:
    """Path of the training app's image (micro/app/mps2) for QEMU mps2-an386 with the data files of a generated
    board project (``data_dir``: ``M4_APP_DATA_FILES``, e.g. a Zephyr project's ``src/``) and its RAM limited to
    ``ram_bytes``; None as ``find_m4_runner``. Built in the runner images' CMake tree, so it links the TFLM library
    compiled for them (a cold cache compiles it once for both); cached by the same key plus the data files."""
    _check_ram(ram_bytes)
    data = {}
    for name in M4_APP_DATA_FILES:
        try:
            with open(os.path.join(data_dir, name), "rb") as f:
                data[f"{M4_APP_DATA}/{name}"] = f.read()
        except FileNotFoundError:
            raise RunnerError(f"{data_dir} has no {name}: not a board project's data folder") from None
    if not os.environ.get("TINYPROP_TFLM_DIR") or m4_missing_tools():
        return None
    return _find(_m4_app_flavor(ram_bytes), ".elf", build, data)


def _check_ram(ram_bytes) -> None:
    if isinstance(ram_bytes, bool) or not isinstance(ram_bytes, int) or not M4_MIN_RAM <= ram_bytes <= M4_MAX_RAM:
        raise ValueError(f"ram_bytes must be an integer from {M4_MIN_RAM} to {M4_MAX_RAM} (the image's stack and heap "
                         f"alone take {M4_STACK_BYTES + M4_HEAP_BYTES}), got {ram_bytes!r}")


def m4_missing_tools() -> list[str]:
    return [tool for tool in M4_TOOLS if shutil.which(tool) is None]


def _find(flavor: _Flavor, suffix: str, build, extra_sources: dict | None = None) -> str | None:
    tree = os.environ.get("TINYPROP_TFLM_DIR")
    if not tree:
        return None
    if not os.path.isfile(os.path.join(tree, "tensorflow", "lite", "micro", "micro_interpreter.h")):
        raise RunnerError(f"TINYPROP_TFLM_DIR={tree} is not a TFLM tree (no tensorflow/lite/micro/micro_interpreter.h)")
    tree = os.path.realpath(tree)
    cache = os.path.abspath(os.environ.get("TINYPROP_TFLM_CACHE") or DEFAULT_CACHE)
    sources, digest = {**_runner_sources(flavor), **(extra_sources or {})}, _tree_digest(tree)
    exe = os.path.join(cache, f"{flavor.label}-{_key(digest, sources, flavor.options)}{suffix}")
    if os.path.isfile(exe):
        return exe
    if not build or (build == "update" and _built_tree(cache, flavor) != digest):
        return None
    _build(tree, digest, sources, cache, exe, flavor)
    return exe


def _runner_sources(flavor: _Flavor = HOST) -> dict[str, bytes]:
    """{path relative to micro/: content} of everything the runner is built from."""
    files = {}
    for entry in flavor.sources:
        top = os.path.join(MICRO_DIR, entry)
        if os.path.isfile(top):
            paths = [top]
        else:
            paths = [os.path.join(d, n) for d, _, names in os.walk(top) for n in names if n.endswith(flavor.suffixes)]
        for path in paths:
            rel = os.path.relpath(path, MICRO_DIR)
            if any(rel.startswith(x + os.sep) for x in flavor.exclude):
                continue
            with open(path, "rb") as f:
                files[rel] = f.read()
    if "CMakeLists.txt" not in files:
        raise RunnerError(f"no micro/ sources at {MICRO_DIR} to build {flavor.label} from")
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


def _key(tree_digest: str, sources: dict[str, bytes], options: tuple = CMAKE_OPTIONS) -> str:
    """Hash of the TFLM tree's digest, the CMake options (the RAM size of an M4 image among them) and the runner
    sources' content (so a fresh clone of the same code gets the same key)."""
    h = hashlib.sha256(repr((tree_digest, options)).encode())
    for rel in sorted(sources):
        h.update(f"{rel}\0".encode() + hashlib.sha256(sources[rel]).digest())
    return h.hexdigest()[:16]


def _built_tree(cache: str, flavor: _Flavor = HOST) -> str | None:
    """Digest of the TFLM tree the cache's CMake build tree last built completely, if any."""
    try:
        with open(os.path.join(cache, flavor.build, BUILT_TREE)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _build(tree: str, tree_digest: str, sources: dict[str, bytes], cache: str, exe: str,
           flavor: _Flavor = HOST) -> None:
    src, build = os.path.join(cache, flavor.src), os.path.join(cache, flavor.build)
    options = flavor.options
    if flavor is not HOST:
        options = (f"-DCMAKE_TOOLCHAIN_FILE={os.path.join(src, M4_TOOLCHAIN)}", *options)
    os.makedirs(cache, exist_ok=True)
    # One build at a time: processes that test or verify in parallel (pytest -n) and checkouts share the cache.
    with open(os.path.join(cache, ".build.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(exe):  # built by another process while this one waited
            return
        _sync(sources, src)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(build, BUILT_TREE))
        configure = ["cmake", "-S", src, "-B", build, f"-DTINYPROP_TFLM_DIR={tree}", *options]
        proc = _cmake(configure)
        if proc.returncode != 0 and os.path.isdir(build) and _stale_tree(proc.stdout + proc.stderr):
            # A build tree CMake will not reuse (the cache folder moved, another CMake). Any other configure error
            # (a source file missing, say) keeps the tree: it holds the TFLM objects every image links.
            shutil.rmtree(build)
            proc = _cmake(configure)
        if proc.returncode == 0:
            jobs = str(len(os.sched_getaffinity(0)) or 1)
            proc = _cmake(["cmake", "--build", build, "--target", flavor.target, "-j", jobs])
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RunnerError(f"building {flavor.label} from {tree} in {build} failed:\n{tail}")
        # Published whole (outdir.atomic_write): a process that finds the path runs a complete binary.
        with open(os.path.join(build, flavor.built), "rb") as built:
            outdir.atomic_write(exe, lambda handle: shutil.copyfileobj(built, handle), mode="wb", permissions=0o777)
        with open(os.path.join(build, BUILT_TREE), "w") as f:
            f.write(tree_digest)


def _stale_tree(output: str) -> bool:
    """CMake refused the build tree itself (made for another source folder, path or generator)."""
    return "CMakeCache.txt" in output or "used to generate cache" in output


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
    outputs, stdout = _run_files([runner], model, inputs_per_invoke, arena, timeout, "tinyprop_tflm_runner", state)
    used = _values(stdout).get("arena_used_bytes", [-1])
    return outputs, used[0]


@dataclasses.dataclass(frozen=True)
class Measures:
    """What the emulated Cortex-M4F run printed. Bytes; ``invoke_ticks`` per invoke (SysTick, virtual time)."""
    ram_bytes: int  # the RAM the image may use (the linker script's region): everything below is inside it
    stack_bytes: int
    stack_high_water_bytes: int  # the most of the stack ever used (painted at reset)
    data_bytes: int
    bss_bytes: int
    heap_bytes: int
    heap_used_bytes: int  # taken by newlib's malloc (stdio buffers)
    arena_available_bytes: int  # the RAM left for the arena
    arena_used_bytes: int
    invoke_ticks: tuple
    op_ticks: tuple = ()  # per invoke: ((operator name, ticks), ...) in execution order

    @property
    def invoke_instructions(self) -> list[float]:
        """Instructions per invoke: ticks x 0.625 under -icount shift=6 on AN386. An instruction count, not cycles
        (QEMU models no pipeline, cache, wait states or FPU latency)."""
        return [t * INSTRUCTIONS_PER_TICK for t in self.invoke_ticks]

    def op_instructions(self, invoke: int) -> dict[str, float]:
        """Instructions of one invoke per operator name (summed over its uses), largest first; the rest of the
        invoke (the interpreter between operators, the profiler's own tick reads) is under "(between ops)"."""
        totals: dict[str, float] = {}
        for name, ticks in self.op_ticks[invoke]:
            totals[name] = totals.get(name, 0.0) + ticks * INSTRUCTIONS_PER_TICK
        totals["(between ops)"] = self.invoke_instructions[invoke] - sum(totals.values())
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


def run_m4(elf: str, model: bytes, inputs_per_invoke: list[list[np.ndarray]], arena: int = DEFAULT_ARENA,
           timeout: float = 1800, state: dict | None = None) -> tuple[list[list[np.ndarray]], Measures]:
    """``run`` on the emulated Cortex-M4F: ``elf`` from ``find_m4_runner`` under ``qemu-system-arm -M mps2-an386``.
    The arena is at most ``arena`` bytes and at most the RAM the image leaves. Returns (outputs per invoke,
    Measures). Raises ``RamError`` (one line: arena needed vs available) when the model's arena does not fit."""
    def command(path):
        return lambda args: [*QEMU_COMMAND, "-kernel", path, "-append", " ".join(args)]

    try:
        outputs, stdout = _run_files(command(elf), model, inputs_per_invoke, arena, timeout, "the emulated Cortex-M4F",
                                     state)
    except _Failed as e:
        values = _values(e.stdout)
        log = e.stdout + e.stderr
        # A malformed graph also fails AllocateTensors (an operator's Prepare refuses it): only a failed
        # allocation means the arena is too small.
        malformed = "failed to prepare" in log and "Failed to allocate" not in log
        if "AllocateTensors failed" not in e.stderr or "arena_available_bytes" not in values or malformed:
            raise RunnerError(str(e)) from None
        raise _ram_error(elf, model, inputs_per_invoke, values, timeout, state) from None
    return outputs, _measures(_values(stdout), len(inputs_per_invoke), stdout)


def _measures(v: dict[str, list[int]], invokes: int, stdout: str = "") -> Measures:
    fields = {f.name: v[f.name][0] for f in dataclasses.fields(Measures) if f.name not in ("invoke_ticks", "op_ticks")}
    ticks = dict(zip(v["invoke_ticks"][0::2], v["invoke_ticks"][1::2]))
    m = Measures(**fields, invoke_ticks=tuple(ticks[s] for s in range(invokes)), op_ticks=_op_ticks(stdout, invokes))
    if m.stack_high_water_bytes >= m.stack_bytes:  # no paint left: it ran past the stack's limit
        raise RunnerError(f"the emulated Cortex-M4F used all of its {m.stack_bytes:,}-byte stack (and maybe more): "
                          "its results cannot be trusted")
    return m


def _op_ticks(stdout: str, invokes: int) -> tuple:
    """The "op_ticks STEP INDEX TICKS NAME" lines: per invoke, ((name, ticks), ...) in execution order."""
    per_invoke = [[] for _ in range(invokes)]
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "op_ticks" and all(p.isdigit() for p in parts[1:4]):
            per_invoke[int(parts[1])].append((int(parts[2]), parts[4], int(parts[3])))
    return tuple(tuple((name, ticks) for _, name, ticks in sorted(ops)) for ops in per_invoke)


def _ram_error(elf, model, inputs_per_invoke, values, timeout, state=None) -> RamError:
    """The one-line error for a model that did not fit, with the arena it needs measured on the image with all of
    AN386's RAM (same program, same TFLM build: only the linker script's RAM differs)."""
    ram, available = values["ram_bytes"][0], values["arena_available_bytes"][0]
    needed = None
    big = find_m4_runner(M4_MAX_RAM) if ram < M4_MAX_RAM else None
    if big is not None:
        with contextlib.suppress(RunnerError):
            needed = run_m4(big, model, inputs_per_invoke[:1], timeout=timeout, state=state)[1].arena_used_bytes
    static = (f"stack {values['stack_bytes'][0]:,} + .data {values['data_bytes'][0]:,} + .bss "
              f"{values['bss_bytes'][0]:,} + heap {values['heap_bytes'][0]:,}")
    need = f"needs {needed:,} bytes" if needed else f"needs more than the {available:,} bytes available"
    message = (f"the model does not fit {ram:,} bytes ({ram / 1024:g} KiB) of RAM on the emulated Cortex-M4F: its TFLM "
               f"arena {need}, {available:,} bytes are available ({static} bytes take the rest)")
    return RamError(message, needed, available, ram)


class _Failed(RunnerError):
    def __init__(self, message, stdout, stderr):
        super().__init__(message)
        self.stdout, self.stderr = stdout, stderr


def _values(stdout: str) -> dict[str, list[int]]:
    """The "name value..." measure lines of a run: {name: [values of every line with that name, in order]}."""
    found: dict[str, list[int]] = {}
    for line in stdout.splitlines():
        name, *rest = line.split() or [""]
        if rest and all(r.isdigit() for r in rest) and name.replace("_", "").isalpha():
            found.setdefault(name, []).extend(int(r) for r in rest)
    return found


def _run_files(command, model, inputs_per_invoke, arena, timeout, what, state=None):
    """Writes the model and the inputs, runs ``command`` (a list: the runner, its arguments appended; or a function
    of the arguments) and reads the outputs back. Returns (outputs per invoke, stdout)."""
    parsed = flatbuffer.load(model, f"model for {what}")
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
        args = [path, str(int(arena)), tmp, str(len(inputs_per_invoke)), str(num_variables)]
        cmd = command(args) if callable(command) else [*command, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunnerError(f"{what} did not finish within {timeout:g} s") from None
        if proc.returncode != 0:
            raise _Failed(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}",
                          proc.stdout, proc.stderr)
        outputs = []
        for s in range(len(inputs_per_invoke)):
            outputs.append([np.fromfile(os.path.join(tmp, f"out_{s}_{o}.bin"),
                                        dtype=flatbuffer.numpy_dtype(_type_code(d["dtype"]))).reshape(d["shape"])
                            for o, d in enumerate(out_details)])
    return outputs, proc.stdout


def _type_code(name: str) -> int:
    return getattr(flatbuffer.fb.TensorType, name.upper())


def m4_ram_sizes() -> dict[str, int]:
    """{board: usable RAM} of the project's Cortex-M boards the emulated image is limited to, and AN386's all."""
    from tinyprop_tf import mcu_profiles

    sizes = {name: mcu_profiles.get_board(name).usable_ram_bytes for name in M4_BOARDS}
    return {**sizes, "mps2-an386": M4_MAX_RAM}


def main(kind: str = "host") -> int:
    """Build the runner ahead of the tests (``make test``: parallel workers then find it) and say where it is;
    ``kind="m4"``: the Cortex-M4F images, one per RAM size of ``m4_ram_sizes``."""
    if kind == "m4":
        return _main_m4()
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



def _main_m4() -> int:
    start = time.monotonic()
    try:
        built = {board: find_m4_runner(ram) for board, ram in m4_ram_sizes().items()}
    except RunnerError as e:
        print(f"tinyprop_tflm_runner_m4: error: {e}", file=sys.stderr)
        return 2
    if None in built.values():
        missing = m4_missing_tools()
        print(f"tinyprop_tflm_runner_m4: not built ({', '.join(missing) + ' not found; ' if missing else ''}"
              f"{M4_HOW_TO}); the tests that run it will skip")
        return 0
    for board, elf in built.items():
        print(f"tinyprop_tflm_runner_m4 ({board}, {m4_ram_sizes()[board] // 1024} KiB RAM): {elf}")
    print(f"tinyprop_tflm_runner_m4: ready in {time.monotonic() - start:.0f} s")
    return 0
