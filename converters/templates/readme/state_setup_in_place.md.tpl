   creates a `MicroAllocator` on a static arena of `TINYPROP_ARENA_BYTES` = $arena_bytes B and the interpreter.
   The training state lives in the arena, in place: $num_state tensors (TFLM variable tensors, the model's outputs
   from `TINYPROP_FIRST_STATE_OUTPUT` = $first_state_output on) that the TinyProp operators update where they are;
   AllocateTensors zeroes them;
2. writes the initial state into them (`g_tinyprop_initial_state` in flash: weights.bin, then the optimizer slots
   and step counter 0 and the running maxima 1e-30) and runs one inference invoke with the exported weights;
3. loads the newest valid training state from the two-slot flash partition (`tinyprop::LoadWeightsInto`, CRC32,
   generation counter) and, if its model id (`TINYPROP_MODEL_ID` = $model_id) and size match, streams it into
   the state tensors (no RAM copy of the state);
