# Cortex-M4F (ARMv7E-M, single-precision FPv4, hard-float ABI), Debian's gcc-arm-none-eabi + newlib.
#   cmake -S micro -B micro/build-m4 -DCMAKE_TOOLCHAIN_FILE=$PWD/micro/cmake/arm-cortex-m4f.cmake
set(TINYPROP_ARM_CPU_FLAGS "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi-common.cmake)
