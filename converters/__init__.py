"""Exporters to training-capable TFLite graphs (imported as ``tinyprop_tf.converters``).

- ``export_training_model(model, policy, optimizer=..., learning_rate=..., loss=..., batch_size=..., out_dir=...)``
  writes ``train.tflite`` (TFLM: one entry subgraph, ``mode`` input), ``train_litert.tflite`` (LiteRT
  signatures train/infer/save/restore), ``weights.bin``, ``weights.h``, ``model_data.h/.cc``,
  ``reference.keras`` and ``manifest.json``.
- ``verify(out_dir, steps=10)`` trains the same batches in Keras, LiteRT and the tflite-micro interpreter (and
  ``train_fast.tflite`` in TFLM with the TinyProp operators, on the host and on an emulated Cortex-M4F), and in
  float64 as the oracle, and compares each against it.
- ``write_board_project(export_dir, board, out_dir)`` turns an export into a ready-to-build ESP-IDF (esp32s3,
  esp32c3) or Zephyr / nRF Connect SDK (nrf52840dk, nrf5340dk) training application (``board_projects``).

The names below are imported on first use (PEP 562): ``tinyprop_tf.converters.board_projects`` and the other
light modules load without TensorFlow, so the CLI can check its arguments first.
"""

import importlib

_EXPORTS = {
    "BoardProjectError": "board_projects", "write_board_project": "board_projects",
    "export_training_model": "export",
    "TFLM_BUILTINS": "flatbuffer", "InvalidModelError": "flatbuffer",
    "ExportError": "graph",
    "VerificationError": "verification", "VerifyResult": "verification", "verify": "verification",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tinyprop_tf.converters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
