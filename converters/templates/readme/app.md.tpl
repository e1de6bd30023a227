
## What it does

`$main_file` calls the training app of tinyprop-tf `micro/app` (copied to `$app_dir/`), which

1. registers exactly the $num_builtin_ops builtin ops of `$model_file` ($ops)$custom_ops_text in a
   `tflite::MicroMutableOpResolver<$num_ops>` (the list is `TINYPROP_BUILTIN_OPS` in `tinyprop_app_config.h`),
${state_setup}4. trains $train_steps steps (mode $mode_train) on batches of $batch consecutive samples of `samples.cc`, printing
   the loss, the time and the entries kept per sparse layer (`k`) per step;
5. runs inference mode (mode $mode_infer) on the first batch and prints the predictions;
${state_save}
Samples: $data_note Regenerate with `write_board_project(export_dir, "$board", out_dir, samples=x,
labels=y)`, or train on live data: pass your own `tinyprop::app::BatchSource` (`batches.h`, e.g. reading a
sensor) instead of the `SampleBatches` over the compiled-in samples in `$main_file`.

### Reading the weights back from TFLM

`train.tflite` has no weight outputs, and TFLM's Python interpreter cannot read resource variables. On the device
the application owns the `tflite::MicroResourceVariables` it hands to the interpreter: after `AllocateTensors()`,
`CreateIdIfNoneFound(nullptr, shared_name)` returns a variable's id, `Read(id, &eval_tensor)` copies it out and
`Assign(id, bytes, data)` copies it in (`Assign(int, size_t, const void*)`: TFLM since early 2025, i.e.
esp-tflite-micro 1.4, Zephyr's tflite-micro branch zephyr-v4.1.0 and later); `tflm/resource_variable_state.cc`
is the only file that does this. The state layout (`tinyprop_state.cc`, read from the initialiser subgraph of
`train.tflite` when the project was generated) saves every variable:

| variable | dtype / shape | offset | bytes | kind |
|---|---|---:|---:|---|
$state_rows

Payload $state_bytes B; the first $weight_bytes B are exactly `weights.bin`. A flash record stores
`RecordMeta{model_id, step}` (the total steps trained).

## Memory budget ($description, profile `$board_profile` of `tinyprop_tf.mcu_profiles`)

$budget_table

**$verdict.**
$does_not_fit
Notes: the arena was measured by the tflite-micro Python interpreter on a 64-bit host (+5 %, rounded to 1 KiB);
32-bit pointers make the device's need somewhat smaller: the application prints `arena_used_bytes()`. The weights
live in the arena (resource variables) and, as initial values, inside the model in flash. Code (TFLM runtime and
the $num_builtin_ops kernels, the training app, the persistence library) is not counted: check `$size_command`.
Usable RAM: $usable_ram_source
$platform_memory_note

## Files

- `$main_file`: the entry (yours to edit); `$src_dir/model_data.h/.cc`, `weights.h`: copied from the export
  (`model_data.h` has the input/output indices and arena sizes; `weights.h` only feeds compile-time checks).
- `$src_dir/tinyprop_app_config.h`: steps, shapes, state sizes, the op list; `samples.cc`: the training data;
  `tinyprop_state.cc`: the state layout table. Generated data only: the code is the app's.
- `$app_dir/`: the training app (tinyprop-tf `micro/app`: `src/` the step loop, state walk, persistence glue and
  report, tested on the host; `tflm/` the interpreter, ops and state access; the platform's flash adapter).
- `$persist_dir`: the two-slot CRC32 persistence library (tinyprop-tf `micro/persist`).$kernels_file_note
- `$project_record`: the SHA-256 of every generated file. Generating this project again (`tinyprop export
  --overwrite --board $board`, or `write_board_project` into this folder) keeps your edited `$main_file` and
  writes the new one beside it as `$main_name.new` (merge it); files the generator did not write (`build/`,
  `sdkconfig`, your own) stay; the other generated files are replaced.
