"""micro/persist: two-slot weight persistence on flash (generation counter + CRC32).

Configures, builds and runs the component's own C++ tests with ctest in a normal and an ASan+UBSan build (power
cuts at every byte of every save, every header/payload bit flipped, bad arguments, wrap-around of the generation),
checks the on-flash format against micro/persist/README.md with Python's own zlib.crc32 and struct (images written
by the C++ code parsed here, images built here loaded by the C++ code), and compiles the component for Cortex-M4
(and RV32IMC, whose toolchain has no C++ library). Build directories: micro/persist/build-pytest*/ (reused).
"""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from _build import FORBIDDEN_SYMBOL, JOBS, MICRO, cmake_build, require, run

PERSIST = MICRO / "persist"

CROSS = {
    # target: (compiler, flags, nm, size)
    "cortex-m4": ("arm-none-eabi-g++",
                  ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
                  "arm-none-eabi-nm", "arm-none-eabi-size"),
    "rv32imc": ("riscv64-unknown-elf-g++", ["-march=rv32imc", "-mabi=ilp32", "-specs=picolibc.specs"],
                "riscv64-unknown-elf-nm", "riscv64-unknown-elf-size"),
}
STRICT = ["-std=c++17", "-Os", "-fno-exceptions", "-fno-rtti", "-Wall", "-Wextra", "-Werror", "-Wpedantic",
          "-Wshadow", "-Wconversion", "-Wsign-conversion"]


def _build(name: str, *options: str) -> Path:
    require("c++", "a host C++17 compiler")
    return cmake_build(PERSIST, PERSIST / f"build-pytest{name}", *options)


def _host_build() -> Path:
    return _build("", "-DCMAKE_BUILD_TYPE=Release")


def _ctest(build_dir: Path) -> str:
    out = run(["ctest", "--test-dir", build_dir, "--output-on-failure", "-j", JOBS], timeout=240).stdout
    assert "100% tests passed" in out, out
    for group in ("crc", "api", "power_cut", "bit_flip", "image", "stream"):
        assert f"persist_{group}" in out, out
    return out


def test_host_build_and_ctest():
    """All C++ tests pass; the power-cut sweep really visits >20k cut points; the library is MCU-clean."""
    build_dir = _host_build()
    _ctest(build_dir)
    out = run([build_dir / "persist_tests"]).stdout
    m = re.search(r"(\d+)/(\d+) tests passed", out)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) >= 25, out
    cut_points = int(re.search(r"(\d+) cut points", out).group(1))
    assert cut_points > 20000, out
    assert int(re.search(r"tests passed, (\d+) checks", out).group(1)) > 100000, out
    if shutil.which("nm"):
        undefined = run(["nm", "-u", build_dir / "libtinyprop_persist.a"]).stdout.split()
        assert not [s for s in undefined if FORBIDDEN_SYMBOL.match(s)], undefined


def test_sanitizer_build_runs_the_same_tests():
    """ASan + UBSan (-fno-sanitize-recover=all): no out-of-bounds access or UB anywhere in the same tests."""
    build_dir = _build("-asan", "-DTINYPROP_PERSIST_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug")
    cache = (build_dir / "CMakeCache.txt").read_text()
    assert "TINYPROP_PERSIST_SANITIZE:BOOL=ON" in cache
    _ctest(build_dir)


# ---- the on-flash format, checked independently -----------------------------------------------------------------
HEADER = struct.Struct("<IHHIIIIII")  # magic, version, header size, generation, size, payload crc, model, step, hcrc
MAGIC = 0x57505054


def _geometry(out: str) -> dict:
    m = re.search(r"geometry (.*)", out)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def _header_area(geo) -> int:
    return max(32, geo["write_block"])


def _parse_slot(image: bytes, geo: dict, slot: int):
    base, ha = geo[f"slot{slot}"], _header_area(geo)
    raw = image[base:base + 32]
    if raw == b"\xff" * 32:
        return None
    magic, version, hsize, gen, size, pcrc, model, step, hcrc = HEADER.unpack(raw)
    assert raw[:4] == b"TPPW" and magic == MAGIC and version == 1 and hsize == 32
    assert zlib.crc32(raw[:28]) == hcrc
    assert 1 <= size <= geo["slot_size"] - ha
    payload = image[base + ha:base + ha + size]
    assert zlib.crc32(payload) == pcrc
    return {"generation": gen, "size": size, "model_id": model, "step": step, "payload": payload, "end": base + ha + size}


def _record(generation: int, payload: bytes, model_id=0, step=0, write_block=4) -> bytes:
    head = struct.pack("<IHHIIIII", MAGIC, 1, 32, generation, len(payload), zlib.crc32(payload), model_id, step)
    head += struct.pack("<I", zlib.crc32(head))
    return head + b"\xff" * (max(32, write_block) - 32) + payload


def test_flash_image_written_by_cpp_matches_the_documented_format():
    build_dir = _host_build()
    image_path = build_dir / "written.img"
    out = run([build_dir / "persist_tests", "--group", "image", "--write-image", image_path]).stdout
    geo = _geometry(out)
    image = image_path.read_bytes()
    assert len(image) == geo["size"]
    # Three saves: generation 1 -> slot 0, 2 -> slot 1, 3 -> slot 0 again (overwriting generation 1).
    s0, s1 = _parse_slot(image, geo, 0), _parse_slot(image, geo, 1)
    assert (s0["generation"], s0["size"], s0["model_id"], s0["step"]) == (3, 40, 0xC0FFEE, 300)
    assert (s1["generation"], s1["size"], s1["model_id"], s1["step"]) == (2, 280, 0xC0FFEE, 200)
    assert list(struct.unpack("<10f", s0["payload"])) == [1.0 * i + 1.5 for i in range(10)]
    assert list(struct.unpack("<70f", s1["payload"])) == [-0.5 * i for i in range(70)]
    # Everything after a record, up to the end of its erased sector, is still erased (0xFF padding included).
    for rec in (s0, s1):
        sector_end = -(-rec["end"] // geo["sector"]) * geo["sector"]
        assert image[rec["end"]:sector_end] == b"\xff" * (sector_end - rec["end"])


def _load(build_dir: Path, image: bytes, name: str) -> dict:
    path = build_dir / f"{name}.img"
    path.write_bytes(image)
    out = run([build_dir / "persist_tests", "--group", "image", "--load-image", path]).stdout
    line = re.search(r"loaded (.*)", out).group(1)
    return {k: v for k, v in (kv.split("=") for kv in line.split())}


def test_cpp_loads_images_built_by_python():
    """Records encoded here from the README (zlib CRC); wrap-around, torn header, corrupt payload, both bad."""
    build_dir = _host_build()
    out = run([build_dir / "persist_tests", "--group", "image", "--write-image", build_dir / "geometry.img"]).stdout
    geo = _geometry(out)
    empty = bytearray(b"\xff" * geo["size"])
    a = struct.pack("<25f", *[0.125 * i for i in range(25)])
    b = struct.pack("<33f", *[-0.75 * i for i in range(33)]) + b"\x01\x02\x03"  # odd size

    def image(rec0: bytes | None, rec1: bytes | None) -> bytearray:
        img = bytearray(empty)
        for slot, rec in ((0, rec0), (1, rec1)):
            if rec is not None:
                img[geo[f"slot{slot}"]:geo[f"slot{slot}"] + len(rec)] = rec
        return img

    # Generation 0 is newer than 0xFFFFFFFF.
    r = _load(build_dir, image(_record(0xFFFFFFFF, a, 7, 1), _record(0, b, 7, 2)), "wrap")
    assert (r["status"], r["slot"], r["generation"], r["size"]) == ("kOk", "1", "0", str(len(b)))
    assert (r["model_id"], r["step"], r["other_valid"]) == ("7", "2", "1")
    assert int(r["payload_crc"]) == zlib.crc32(b)

    # Newest record with one payload bit flipped: the older one comes back, the damage is reported.
    bad = bytearray(_record(8, b))
    bad[32 + 50] ^= 0x10
    r = _load(build_dir, image(_record(7, a), bytes(bad)), "bad_payload")
    assert (r["status"], r["slot"], r["generation"], r["other_valid"]) == ("kOk", "0", "7", "0")
    assert (r["state0"], r["state1"]) == ("kValid", "kBadPayload")
    assert int(r["payload_crc"]) == zlib.crc32(a)

    # Torn commit: only the first 20 header bytes of the new record reached the flash.
    torn = bytearray(_record(8, b))
    torn[20:32] = b"\xff" * 12
    r = _load(build_dir, image(_record(7, a), bytes(torn)), "torn")
    assert (r["status"], r["slot"], r["generation"], r["state1"]) == ("kOk", "0", "7", "kBadHeader")

    # Both bad, or nothing at all: kNoValidWeights and the caller's buffer untouched.
    bad_a = bytearray(_record(7, a))
    bad_a[3] ^= 1
    r = _load(build_dir, image(bytes(bad_a), bytes(bad)), "both_bad")
    assert (r["status"], r["slot"], r["buffer_untouched"]) == ("kNoValidWeights", "-1", "1")
    r = _load(build_dir, bytes(empty), "empty")
    assert (r["status"], r["state0"], r["state1"], r["buffer_untouched"]) == ("kNoValidWeights", "kEmpty", "kEmpty",
                                                                                "1")


# ---- cross compilation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", sorted(CROSS))
def test_cross_compile(target, tmp_path):
    """-c compile for the MCU with -fno-exceptions -fno-rtti -Werror; no heap/exception/RTTI/IO symbols, no .data/.bss."""
    compiler, flags, nm, size = CROSS[target]
    if not shutil.which(compiler):
        pytest.skip(f"{compiler} not found: run micro/install_toolchains.sh")
    for src in ("persist.cc", "sim_flash.cc"):
        obj = tmp_path / (src + ".o")
        run([compiler, *flags, *STRICT, "-I", PERSIST / "include", "-c", PERSIST / "src" / src, "-o", obj])
        undefined = run([nm, "-u", obj]).stdout.split()
        bad = [s for s in undefined if FORBIDDEN_SYMBOL.match(s)]
        assert not bad, f"{src} for {target} references {bad}"
        text, data, bss = (int(v) for v in run([size, obj]).stdout.splitlines()[-1].split()[:3])
        assert text > 0 and data == 0 and bss == 0, f"{src}: text={text} data={data} bss={bss}"
