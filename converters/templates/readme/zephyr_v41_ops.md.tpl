
This model uses $ops: the zephyr-v4.1.0 branch of tflite-micro has no resolver method for $pronoun, the
zephyr-v4.4.0 branch has.
