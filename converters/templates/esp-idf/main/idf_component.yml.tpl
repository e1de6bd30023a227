## TensorFlow Lite Micro for ESP-IDF (pulls espressif/esp-nn). Float32 graphs run TFLM's reference kernels.
dependencies:
  espressif/esp-tflite-micro: "$esp_tflm_version"
  idf: ">=5.1"
