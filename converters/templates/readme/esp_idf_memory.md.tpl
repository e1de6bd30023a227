ESP-IDF limits statically allocated DRAM (on the ESP32-S3/C3 by the IRAM the application uses): if the link fails
with a DRAM segment overflow for a large arena, allocate `g_tensor_arena` (`tflm/tflm_training.cc`) with
`heap_caps_malloc` instead.
