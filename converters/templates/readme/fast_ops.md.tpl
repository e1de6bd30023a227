 and the $count TinyProp custom operators it uses ($names; `AddCustom`, sources in `$kernel_dir/`: the micro/
   kernels and their TFLM glue, so sparse layers really skip the unselected rows and filters). Arena: $arena_note
