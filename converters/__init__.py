"""Exporters to training-capable TFLite graphs (imported as ``tinyprop_tf.converters``)."""
