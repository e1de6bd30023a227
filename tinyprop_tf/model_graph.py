"""What ``sparsify`` (``cloning``), ``train_last`` (``trainable``) and the exporter (``converters.graph``) read off a
Keras model: that it is a built Sequential or Functional model, each layer's parents, whether a layer's input needs
a gradient, and what in a layer's form (data format, LoRA, quantization) the sparse layers cannot take over.

One reading for all of them, so a model that trains sparse in Keras is the model the exporter writes out.
"""

from __future__ import annotations

import functools

import keras


def check_model(model, what: str) -> None:
    """``model`` is a built Sequential or Functional ``keras.Model``: else TypeError (another object, a subclassed
    model) or ValueError (not built), naming ``what`` needs it."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} expects a keras.Model (Sequential or Functional), got {type(model).__name__}")
    if not isinstance(model, keras.Sequential) and not hasattr(model, "_nodes"):
        raise TypeError(
            f"{what} cannot clone the subclassed model '{model.name}' ({type(model).__name__}); "
            "build it as a Sequential or Functional model"
        )
    if not model.built:
        raise ValueError(f"{what}: model '{model.name}' is not built; call it on data or give it an Input first")


def parents(model) -> dict:
    """layer -> the layers feeding it, for every layer of the model's top level."""
    layers = list(model.layers)
    if isinstance(model, keras.Sequential):
        return {layer: ([layers[i - 1]] if i else []) for i, layer in enumerate(layers)}
    feeding = {layer: [] for layer in layers}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if node.operation in feeding:
                feeding[node.operation].extend(p.operation for p in node.parent_nodes if p.operation in feeding)
    return feeding


def input_needs_gradient(model) -> dict[str, bool]:
    """layer name -> whether a layer with trainable weights feeds it, directly or through others: only then does a
    training step need the gradient of its input (the trainable flags as they are now)."""
    feeding = parents(model)

    @functools.cache
    def upstream_trainable(layer):
        return any(bool(p.trainable_weights) or upstream_trainable(p) for p in feeding[layer])

    return {layer.name: upstream_trainable(layer) for layer in feeding}


def unsupported_form(layer) -> str | None:
    """Why a layer's form keeps the sparse layers (and the device kernels, NHWC and float) from standing in for it:
    channels-first data, LoRA, quantized weights; None when nothing does."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "data_format='channels_first' (only channels_last is supported)"
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled"
    if getattr(layer, "quantization_mode", None):
        return f"quantized ({layer.quantization_mode})"
    return None
