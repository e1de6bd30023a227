# West manifest for a workspace with nRF Connect SDK + TensorFlow Lite Micro (see README.md).
# nRF Connect SDK does not import Zephyr's optional tflite-micro project: it is added here.
manifest:
  remotes:
    - name: ncs
      url-base: https://github.com/nrfconnect
    - name: zephyrproject-rtos
      url-base: https://github.com/zephyrproject-rtos
  projects:
    - name: nrf
      remote: ncs
      repo-path: sdk-nrf
      revision: main  # replace with the nRF Connect SDK release you use (a vX.Y.Z tag)
      import: true
    - name: tflite-micro
      remote: zephyrproject-rtos
      repo-path: tflite-micro
      # branch zephyr-v4.4.0 (has every resolver method this model needs); its sources are compiled by the
      # SDK's zephyr/modules/tflite-micro/CMakeLists.txt, see README.md
      revision: $tflm_revision
      path: modules/lib/tflite-micro
  self:
    path: tinyprop_train
