#!/usr/bin/env bash
# Installs the toolchains the micro/ build and tests use (Debian/Ubuntu, apt-get). Idempotent: packages that are
# already installed are skipped, and nothing is done at all when everything is present.
#
#   micro/install_toolchains.sh            # everything below
#   micro/install_toolchains.sh --dry-run  # only print what would be installed
#
# Packages:
#   cmake, g++, make                   host build + tests (CMake >= 3.20)
#   clang                              libFuzzer fuzz target (ASan + UBSan); without it a GCC driver is used
#   gcc-arm-none-eabi, libnewlib-arm-none-eabi, libstdc++-arm-none-eabi-newlib
#                                      Cortex-M4F / Cortex-M33 cross builds
#   gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf
#                                      RV32IMC cross build (ilp32, picolibc)
#   qemu-system-arm                    bare-metal Cortex-M runs (mps2-an386 / mps2-an505): device benchmarks and
#                                      the exported step on an emulated Cortex-M4F (rdimon semihosting: newlib)
set -euo pipefail

PACKAGES=(
  cmake g++ make
  clang
  gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib
  gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf
  qemu-system-arm
)

dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_toolchains: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
echo "install_toolchains: installing ${missing[*]}"
[[ $dry_run -eq 1 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_toolchains: apt-get not found; install these packages by hand: ${missing[*]}" >&2
  exit 1
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install_toolchains: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"  # recommends kept: clang needs libclang-rt-*-dev (libFuzzer)
echo "install_toolchains: done"
