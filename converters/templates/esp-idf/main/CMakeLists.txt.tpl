# The application: main.cc, the generated data (model, samples, state table) and the training app of
# tinyprop-tf micro/app$kernels_note, copied by the board project generator.
idf_component_register(
    SRCS $sources
    INCLUDE_DIRS $include_dirs
    PRIV_REQUIRES esp_partition esp_timer tinyprop_persist)
# The TinyProp kernels match the host bit for bit only without FMA contraction (micro/README.md).
target_compile_options($${COMPONENT_LIB} PRIVATE -ffp-contract=off)
