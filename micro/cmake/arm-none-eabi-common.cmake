# Shared part of the bare-metal Arm toolchain files (set TINYPROP_ARM_CPU_FLAGS first).
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

set(_prefix arm-none-eabi-)
find_program(TINYPROP_ARM_GXX ${_prefix}g++)
if(NOT TINYPROP_ARM_GXX)
  message(FATAL_ERROR "arm-none-eabi-g++ not found: run micro/install_toolchains.sh (Debian: gcc-arm-none-eabi, "
                      "libnewlib-arm-none-eabi, libstdc++-arm-none-eabi-newlib)")
endif()
set(CMAKE_CXX_COMPILER ${TINYPROP_ARM_GXX})
set(CMAKE_C_COMPILER ${_prefix}gcc)
set(CMAKE_AR ${_prefix}ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${_prefix}ranlib CACHE FILEPATH "")

# No OS, no linker script here: the compiler checks build a static library instead of an executable.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

set(CMAKE_CXX_FLAGS_INIT "${TINYPROP_ARM_CPU_FLAGS} -fno-exceptions -fno-rtti -ffunction-sections -fdata-sections")
set(CMAKE_C_FLAGS_INIT "${TINYPROP_ARM_CPU_FLAGS} -ffunction-sections -fdata-sections")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${TINYPROP_ARM_CPU_FLAGS} -specs=nano.specs -specs=nosys.specs -Wl,--gc-sections")

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
