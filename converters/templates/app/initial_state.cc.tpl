// The initial training state (the layout's image: weights.bin at the weights' offsets, the optimizer slots and the
// step counter 0, TinyProp's running maxima 1e-30), in flash: the model's state tensors are in-place variable
// tensors that AllocateTensors zeroes, so the app writes this into them before the first invoke.
alignas(16) const uint8_t g_tinyprop_initial_state[TINYPROP_STATE_BYTES] = {
$image_values
};
