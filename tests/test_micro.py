"""The C++ kernel cores in micro/: host build + tests, sanitizers, fuzzing, golden vectors, cross-compilation.

Build directories are micro/build-pytest* (gitignored, reused between runs so a rerun only rebuilds what
changed). Toolchains: micro/install_toolchains.sh. A cross target is skipped, with the reason, only when its
compiler is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from _build import FORBIDDEN_SYMBOL, MICRO, cmake_build, require, run

FUZZ_SECONDS = 20  # bounded fuzzing time (the whole file stays well under 4 minutes on 2 cores)

CROSS_TARGETS = {
    # name: (toolchain file, compiler, expected ELF attributes (readelf -A/-h substrings))
    "cortex-m4f": ("arm-cortex-m4f.cmake", "arm-none-eabi-g++", ("Tag_CPU_name: \"7E-M\"", "VFPv4-D16",
                                                                    "Tag_ABI_VFP_args: VFP registers")),
    "cortex-m33": ("arm-cortex-m33.cmake", "arm-none-eabi-g++", ("Tag_CPU_name: \"8-M.MAIN\"", "FPv5",
                                                                    "Tag_ABI_VFP_args: VFP registers")),
    "rv32imc": ("riscv32-imc.cmake", "riscv64-unknown-elf-g++", ("ELF32", "RVC, soft-float ABI", "rv32i2p1_m2p0_c2p0")),
}


def _build(name: str, *options: str, env_extra: dict | None = None) -> Path:
    """Configures (once) and builds micro/ in micro/build-pytest-<name>; returns the build directory."""
    return cmake_build(MICRO, MICRO / f"build-pytest-{name}", *options, env=dict(os.environ, **(env_extra or {})))


def _undefined_symbols(nm: str, archive: Path) -> set[str]:
    out = run([nm, "-u", str(archive)]).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip() and not line.endswith(":")}


def _assert_no_static_data(size_tool: str, archive: Path):
    """No global or static variables in the kernels: every object has empty .data and .bss."""
    totals = run([size_tool, "-t", str(archive)]).stdout.strip().splitlines()[-1].split()
    text, data, bss = (int(v) for v in totals[:3])
    assert text > 0 and data == 0 and bss == 0, f"{archive}: text={text} data={data} bss={bss}"


def _host_build() -> Path:
    require("c++", "a host C++17 compiler")
    return _build("host", "-DCMAKE_BUILD_TYPE=Release")


def test_host_build_and_unit_tests():
    """Library + self-written test harness; every kernel vs independent reference loops, error returns; the
    training app's TFLM-independent part (micro/app) on a fake model and the simulated flash."""
    build_dir = _host_build()
    proc = run(["ctest", "--test-dir", str(build_dir), "--output-on-failure"], timeout=300)
    assert "100% tests passed" in proc.stdout, proc.stdout
    out = run([str(build_dir / "app" / "tinyprop_app_tests")]).stdout
    assert re.search(r"(\d+)/\1 tests passed", out) and "AppTwoBootsSaveRestoreAndContinue" in out, out
    out = run([str(build_dir / "tinyprop_tests")]).stdout
    assert re.search(r"(\d+)/\1 tests passed", out), out
    bad = {s for s in _undefined_symbols("nm", build_dir / "libtinyprop.a") if FORBIDDEN_SYMBOL.match(s)}
    assert not bad, f"the kernel library references heap/exception/RTTI/IO symbols: {sorted(bad)}"
    if shutil.which("size"):
        _assert_no_static_data("size", build_dir / "libtinyprop.a")


@pytest.mark.slow
def test_golden_vectors_from_python_and_keras():
    """Vectors from tinyprop_tf.selection (bit-exact k / kept sets), TF gradients and Keras losses/optimizers."""
    build_dir = _host_build()
    sys.path.insert(0, str(MICRO / "tools"))
    try:
        import make_golden
        from tpv import read_tpv
    finally:
        sys.path.pop(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_golden.main(["--out", tmp, "--seed", "0"])
        cases = read_tpv(os.path.join(tmp, "python_reference.tpv"))
        kernels = {kernel for _, kernel, _ in cases}
        assert {"adaptive_k", "topk", "dense_backward", "conv2d_backward", "depthwise_conv2d_backward",
                "softmax_cross_entropy", "mse", "sgd", "adam"} <= kernels
        out = run([str(build_dir / "tinyprop_tests"), "--golden", tmp, "--filter", "Golden"]).stdout
        assert f"{len(cases)} golden cases from 1 file(s)" in out, out


@pytest.mark.slow
def test_sanitizer_build_runs_the_same_tests():
    """-fsanitize=address,undefined -fno-sanitize-recover=all: unit tests + a deterministic fuzz smoke."""
    require("c++", "a host C++17 compiler")
    build_dir = _build("asan", "-DTINYPROP_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug")
    proc = run(["ctest", "--test-dir", str(build_dir), "--output-on-failure"], timeout=300)
    assert "100% tests passed" in proc.stdout, proc.stdout


def _libfuzzer_build():
    if shutil.which("clang++") is None:
        return None, "clang++ not found"
    try:
        build_dir = _build("libfuzzer", "-DTINYPROP_LIBFUZZER=ON", "-DTINYPROP_BUILD_TESTS=OFF",
                           "-DCMAKE_BUILD_TYPE=RelWithDebInfo", env_extra={"CXX": "clang++"})
    except AssertionError as err:  # e.g. clang without its libFuzzer runtime (libclang-rt-*-dev)
        return None, f"libFuzzer build failed: {str(err)[:300]}"
    return build_dir, ""


@pytest.mark.slow
def test_fuzz_every_entry_point_without_crash():
    """Random shapes/parameters (invalid ones included) into every entry point under ASan+UBSan, bounded time."""
    build_dir, why = _libfuzzer_build()
    if build_dir is not None:
        with tempfile.TemporaryDirectory() as corpus:
            proc = run([str(build_dir / "tinyprop_fuzz"), f"-max_total_time={FUZZ_SECONDS}", "-seed=1",
                         "-rss_limit_mb=2048", "-print_final_stats=1", corpus], timeout=FUZZ_SECONDS + 120)
        runs = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", proc.stderr).group(1))
        assert runs > 1000, proc.stderr[-2000:]
    else:
        # No libFuzzer: the deterministic random-input driver, same target, same sanitizers.
        print(f"libFuzzer unavailable ({why}); using the random-input driver")
        asan = _build("asan", "-DTINYPROP_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug")
        proc = run([str(asan / "tinyprop_fuzz_driver"), "--seconds", str(FUZZ_SECONDS), "--iterations",
                     "100000000", "--seed", "1"], timeout=FUZZ_SECONDS + 120)
        assert "no crash" in proc.stdout, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(CROSS_TARGETS))
def test_cross_compile(target):
    """Library (-fno-exceptions -fno-rtti) + a bare-metal link check for Cortex-M4F, Cortex-M33 and RV32IMC."""
    toolchain, compiler, attributes = CROSS_TARGETS[target]
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not found: the {target} cross build needs micro/install_toolchains.sh")
    build_dir = _build(target, f"-DCMAKE_TOOLCHAIN_FILE={MICRO / 'cmake' / toolchain}", "-DCMAKE_BUILD_TYPE=Release")
    archive = build_dir / "libtinyprop.a"
    assert archive.is_file()
    prefix = compiler[: -len("g++")]
    bad = {s for s in _undefined_symbols(prefix + "nm", archive) if FORBIDDEN_SYMBOL.match(s)}
    assert not bad, f"{target}: the kernel library references heap/exception/RTTI/IO symbols: {sorted(bad)}"
    _assert_no_static_data(prefix + "size", archive)
    readelf = run([prefix + "readelf", "-h", "-A", str(build_dir / "tinyprop_link_check")]).stdout
    for attribute in attributes:
        assert attribute in readelf, f"{target}: '{attribute}' missing in readelf output:\n{readelf}"
    size = run([prefix + "size", str(build_dir / "tinyprop_link_check")]).stdout
    print(f"{target} link check:\n{size}")
