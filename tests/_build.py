"""What the tests that build and run C++ share: running a command (its output on failure), building a CMake tree
once across pytest-xdist workers, the symbols MCU code must not use, and skipping (or, in CI with ../shared's TFLM
tree beside the checkout, failing) when a TFLM runner cannot be had; and a stand-in runner cache for the tests of
``converters/tflm_host_runner.py`` that build nothing."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "micro"
JOBS = str(max(1, min(2, os.cpu_count() or 1)))
SHARED_TFLM = os.path.normpath(os.path.join(ROOT, "..", "shared", "tflm", "esp-tflite-micro"))

# Symbols a library for MCUs must not pull in: heap, exceptions, RTTI, C++ runtime, I/O.
FORBIDDEN_SYMBOL = re.compile(
    r"^(malloc|calloc|realloc|free|_Znwj|_Znwm|_Znaj|_Znam|_ZdlPv\w*|_ZdaPv\w*|__cxa_\w+|_Unwind_\w+|"
    r"__gxx_personality\w*|_ZTI\w+|_ZTS\w+|printf|puts|fwrite|abort)$"
)


def run(cmd, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``cmd``; a non-zero exit fails the test with the command and the tails of its output."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n--- stdout\n{proc.stdout[-6000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def require(tool: str, what: str) -> None:
    """Skip, saying why, when ``tool`` (``c++``: any host C++ compiler) is not installed."""
    candidates = ("c++", "g++", "clang++") if tool == "c++" else (tool,)
    if not any(shutil.which(c) for c in candidates):
        pytest.skip(f"{tool} not found ({what}); run micro/install_toolchains.sh")


@contextlib.contextmanager
def locked(build_dir: Path):
    """Serialises builds of one directory across pytest-xdist workers."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".pytest-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cmake_build(source: Path, build_dir: Path, *options: str, env: dict | None = None) -> Path:
    """Configures (once) and builds ``source`` in ``build_dir`` (kept between runs: a rerun only rebuilds what
    changed); returns the build directory."""
    require("cmake", "CMake >= 3.20 builds the C++ code")
    with locked(build_dir):
        run(["cmake", "-S", source, "-B", build_dir, *options], env=env)
        run(["cmake", "--build", build_dir, "-j", JOBS], env=env)
    return build_dir


def fail_in_ci_else_skip(ci_message: str, skip_message: str) -> None:
    """A missing TFLM runner: a failure in CI with ../shared's TFLM tree beside the checkout (so a runner that did not
    build cannot pass CI as skipped tests), a skip elsewhere."""
    if os.environ.get("CI", "").lower() in ("true", "1") and os.path.isdir(SHARED_TFLM):
        pytest.fail(f"CI: {SHARED_TFLM} is beside the checkout, but {ci_message}")
    pytest.skip(skip_message)


def fake_runner_cache(tmp_path, monkeypatch, sources):
    """A copy of micro/'s ``sources``, a minimal "TFLM tree", an empty cache, and a stand-in build that publishes a
    dummy executable and records each call as (flavor label, executable, sorted sources). Returns (micro copy, tree,
    cache, the recorded builds)."""
    from tinyprop_tf.converters import tflm_host_runner

    micro = tmp_path / "micro"
    micro.mkdir()
    for entry in sources:
        src = os.path.join(tflm_host_runner.MICRO_DIR, entry)
        (shutil.copy if os.path.isfile(src) else shutil.copytree)(src, micro / entry)
    tree = tmp_path / "tflm"
    (tree / "tensorflow" / "lite" / "micro").mkdir(parents=True)
    (tree / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").write_text("// interpreter\n")
    cache = tmp_path / "cache"
    builds = []

    def build(tree_, digest, sources_, cache_, exe, flavor=tflm_host_runner.HOST):
        builds.append((flavor.label, exe, sorted(sources_)))
        os.makedirs(cache_, exist_ok=True)
        with open(exe, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(exe, 0o755)

    monkeypatch.setattr(tflm_host_runner, "MICRO_DIR", str(micro))
    monkeypatch.setattr(tflm_host_runner, "_build", build)
    monkeypatch.delenv("TINYPROP_TFLM_RUNNER", raising=False)
    monkeypatch.setenv("TINYPROP_TFLM_DIR", str(tree))
    monkeypatch.setenv("TINYPROP_TFLM_CACHE", str(cache))
    return micro, tree, cache, builds


def runner_or_skip():
    """The runner, else a skip that says why; in CI with ../shared's TFLM tree a failure, so a runner that did not
    build (or a make test that stopped passing the tree) cannot pass CI as skipped tests."""
    from tinyprop_tf.converters import tflm_host_runner

    try:
        runner = tflm_host_runner.find_runner()
    except tflm_host_runner.RunnerError as e:
        pytest.fail(str(e))
    if runner is None:
        fail_in_ci_else_skip("no tinyprop_tflm_runner (make test builds it from there; TINYPROP_TFLM_DIR and "
                             "TINYPROP_TFLM_RUNNER unset)",
                             f"no TFLM tree to build tinyprop_tflm_runner from: {tflm_host_runner.HOW_TO} "
                             "(make test uses ../shared/tflm/esp-tflite-micro when it is beside the checkout)")
    return runner


def m4_image_or_skip(ram_bytes, find=None):
    """The runner's image (or what ``find()`` builds: the app's), else a skip that says why; in CI with ../shared's
    TFLM tree a failure."""
    from tinyprop_tf.converters import tflm_host_runner

    try:
        elf = find() if find is not None else tflm_host_runner.find_m4_runner(ram_bytes)
    except tflm_host_runner.RunnerError as e:
        pytest.fail(str(e))
    if elf is None:
        missing = tflm_host_runner.m4_missing_tools()
        why = f"{', '.join(missing)} not found; " if missing else ""
        fail_in_ci_else_skip(f"no emulated Cortex-M4F runner ({why}make test builds it with make tflm-runner-m4)",
                             f"no emulated Cortex-M4F runner: {why}{tflm_host_runner.M4_HOW_TO}")
    return elf
