"""Exporters to training-capable TFLite graphs (imported as ``tinyprop_tf.converters``).

- ``export_training_model(model, policy, optimizer=..., learning_rate=..., loss=..., batch_size=..., out_dir=...)``
  writes ``train.tflite`` (TFLM: one entry subgraph, ``mode`` input), ``train_litert.tflite`` (LiteRT
  signatures train/infer/save/restore), ``weights.bin``, ``weights.h``, ``model_data.h/.cc``,
  ``reference.keras`` and ``manifest.json``.
- ``verify(out_dir, steps=10)`` trains the same batches in Keras, LiteRT and the tflite-micro interpreter and
  compares loss, weights and k.
"""

from tinyprop_tf.converters.export import export_training_model
from tinyprop_tf.converters.flatbuffer import TFLM_BUILTINS, InvalidModelError
from tinyprop_tf.converters.graph import ExportError
from tinyprop_tf.converters.verify import VerificationError, VerifyResult, verify

__all__ = [
    "ExportError", "InvalidModelError", "TFLM_BUILTINS", "VerificationError", "VerifyResult",
    "export_training_model", "verify",
]
