# Two-slot CRC32 weight persistence (tinyprop-tf micro/persist, copied by the board project generator).
idf_component_register(SRCS $sources
                       INCLUDE_DIRS "include")
