
- `$kernel_dir/`: the TinyProp kernels (tinyprop-tf `micro/include`, `micro/src`) and their TFLM glue (`micro/tflm`).
