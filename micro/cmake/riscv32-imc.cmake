# RV32IMC (no FPU: float32 is soft-float, ilp32 ABI), Debian's gcc-riscv64-unknown-elf + picolibc.
# That toolchain ships no C++ standard library; the kernels only use C headers, so it is enough.
#   cmake -S micro -B micro/build-rv32 -DCMAKE_TOOLCHAIN_FILE=$PWD/micro/cmake/riscv32-imc.cmake
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR riscv32)

set(_prefix riscv64-unknown-elf-)
find_program(TINYPROP_RV_GXX ${_prefix}g++)
if(NOT TINYPROP_RV_GXX)
  message(FATAL_ERROR "riscv64-unknown-elf-g++ not found: run micro/install_toolchains.sh (Debian: "
                      "gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf)")
endif()
set(CMAKE_CXX_COMPILER ${TINYPROP_RV_GXX})
set(CMAKE_C_COMPILER ${_prefix}gcc)
set(CMAKE_AR ${_prefix}ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${_prefix}ranlib CACHE FILEPATH "")

set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

set(_rv_flags "-march=rv32imc -mabi=ilp32 -specs=picolibc.specs")
set(CMAKE_CXX_FLAGS_INIT "${_rv_flags} -fno-exceptions -fno-rtti -ffunction-sections -fdata-sections")
set(CMAKE_C_FLAGS_INIT "${_rv_flags} -ffunction-sections -fdata-sections")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,--gc-sections")  # the -march/-specs flags come with CMAKE_CXX_FLAGS
# Link executables with the C driver: g++ would add -lstdc++, which this toolchain does not ship (nothing needs it).
set(CMAKE_CXX_LINK_EXECUTABLE "${_prefix}gcc <FLAGS> <CMAKE_CXX_LINK_FLAGS> <LINK_FLAGS> <OBJECTS> -o <TARGET> <LINK_LIBRARIES>")
# picolibc's default linker script needs a memory map; a placeholder for the link check (QEMU 'virt' RAM base).
set(TINYPROP_LINK_OPTIONS -Wl,--defsym=__flash=0x80000000 -Wl,--defsym=__flash_size=0x80000
    -Wl,--defsym=__ram=0x80080000 -Wl,--defsym=__ram_size=0x80000 -Wl,--defsym=__stack_size=0x1000)

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
