"""Exporters to training-capable TFLite graphs (imported as ``tinyprop_tf.converters``).

- ``export_training_model(model, policy, optimizer=..., learning_rate=..., loss=..., batch_size=..., out_dir=...)``
  writes ``train.tflite`` (TFLM: one entry subgraph, ``mode`` input), ``train_litert.tflite`` (LiteRT
  signatures train/infer/save/restore), ``weights.bin``, ``weights.h``, ``model_data.h/.cc``,
  ``reference.keras`` and ``manifest.json``.
- ``verify(out_dir, steps=10)`` trains the same batches in Keras, LiteRT and the tflite-micro interpreter and
  compares loss, weights and k.
- ``write_board_project(export_dir, board, out_dir)`` turns an export into a ready-to-build ESP-IDF (esp32s3,
  esp32c3) or Zephyr / nRF Connect SDK (nrf52840dk, nrf5340dk) training application (``board_projects``; also
  reachable as ``tinyprop_tf.converters.boards``).
"""

import sys as _sys

from tinyprop_tf.converters import board_projects
from tinyprop_tf.converters.board_projects import BoardProjectError, write_board_project
from tinyprop_tf.converters.export import export_training_model
from tinyprop_tf.converters.flatbuffer import TFLM_BUILTINS, InvalidModelError
from tinyprop_tf.converters.graph import ExportError
from tinyprop_tf.converters.verify import VerificationError, VerifyResult, verify

# ``tinyprop_tf.converters.boards.write_board_project`` (attribute and importable module name).
boards = board_projects
_sys.modules[__name__ + ".boards"] = board_projects

__all__ = [
    "BoardProjectError", "ExportError", "InvalidModelError", "TFLM_BUILTINS", "VerificationError", "VerifyResult",
    "export_training_model", "verify", "write_board_project",
]
