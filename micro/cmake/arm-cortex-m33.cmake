# Cortex-M33 (ARMv8-M mainline, single-precision FPv5, hard-float ABI), Debian's gcc-arm-none-eabi + newlib.
#   cmake -S micro -B micro/build-m33 -DCMAKE_TOOLCHAIN_FILE=$PWD/micro/cmake/arm-cortex-m33.cmake
set(TINYPROP_ARM_CPU_FLAGS "-mcpu=cortex-m33 -mthumb -mfpu=fpv5-sp-d16 -mfloat-abi=hard")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi-common.cmake)
