   creates a `MicroAllocator` on a static arena of `TINYPROP_ARENA_BYTES` = $arena_bytes B and a
   `MicroResourceVariables` for the $resource_variables resource variables, and the interpreter;
2. runs one inference invoke: it runs the model's initialiser (`CALL_ONCE`), which assigns the exported weights;
3. loads the newest valid training state from the two-slot flash partition (`tinyprop::LoadWeightsInto`, CRC32,
   generation counter) and, if its model id (`TINYPROP_MODEL_ID` = $model_id) and size match, writes it
   into the resource variables (`MicroResourceVariables::Assign`);
