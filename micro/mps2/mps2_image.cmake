# Linking a bare-metal image for QEMU's mps2-an386 (Cortex-M4F): included by tflm/mps2 (the TFLM runner) and
# app/mps2 (the training app). Sets, in the including directory: newlib's semihosted stdio (rdimon.specs: fopen /
# fread on the host's files, argv) instead of the toolchain file's nano/nosys, no start files (micro/mps2's startup
# runs the static constructors), and the RAM map's cache variables; tinyprop_mps2_image(<target>) adds the startup
# code and links <target> with the linker script whose RAM is TINYPROP_RAM_BYTES (a board's usable RAM).
# Changing the RAM, stack or heap size only relinks.
if(NOT CMAKE_CROSSCOMPILING OR NOT TINYPROP_ARM_CPU_FLAGS MATCHES "cortex-m4")
  message(FATAL_ERROR "the mps2-an386 images need -DCMAKE_TOOLCHAIN_FILE=micro/cmake/arm-cortex-m4f.cmake")
endif()
enable_language(C)
set(TINYPROP_RAM_BYTES 262144 CACHE STRING "RAM the image may use (stack, .data, .bss, heap, arena), bytes")
set(TINYPROP_STACK_BYTES 16384 CACHE STRING "Stack size, bytes (part of TINYPROP_RAM_BYTES)")
set(TINYPROP_HEAP_BYTES 8192 CACHE STRING "newlib heap (stdio buffers), bytes (part of TINYPROP_RAM_BYTES)")
set(TINYPROP_MPS2_DIR ${CMAKE_CURRENT_LIST_DIR})
set(CMAKE_EXE_LINKER_FLAGS "${TINYPROP_ARM_CPU_FLAGS} --specs=rdimon.specs -nostartfiles -Wl,--gc-sections")

function(tinyprop_mps2_image target)
  target_sources(${target} PRIVATE ${TINYPROP_MPS2_DIR}/startup.c)
  target_include_directories(${target} PRIVATE ${TINYPROP_MPS2_DIR})
  target_link_options(${target} PRIVATE -T ${TINYPROP_MPS2_DIR}/mps2-an386.ld -L ${TINYPROP_MPS2_DIR}
                      -Wl,--defsym=__ram_size=${TINYPROP_RAM_BYTES} -Wl,--defsym=__stack_size=${TINYPROP_STACK_BYTES}
                      -Wl,--defsym=__heap_size=${TINYPROP_HEAP_BYTES} -Wl,-Map=${target}.map)
  set_target_properties(${target} PROPERTIES
                        LINK_DEPENDS "${TINYPROP_MPS2_DIR}/mps2-an386.ld;${TINYPROP_MPS2_DIR}/sections.ld")
endfunction()
