"""Which layers fine-tuning trains: ``train_last(model, n)`` trains the last ``n`` affine layers, freezes the rest.

The affine layers are Dense, Conv1D, Conv2D and DepthwiseConv2D (sparse or not), in the model's layer order
(topological for a Functional model). The last ``n`` of them train, each with the BatchNormalization that directly
follows it; every other layer is frozen (``trainable = False``): the prefix runs forward only. Its backward pass is
skipped entirely: the first trained layer needs no input gradient, so no gradient flows upstream of it, in Keras
(the sparse layers stop the gradient at an input that needs none, ``layers.SparseBackpropMixin``) as in the exported
step (frozen layers stay constants, ``converters/step.py``). The accounting counts no backward MACs for the frozen
layers and no dx for the first trained one (``accounting``).

``affine_layers_in_keras_file`` counts the affine layers of a ``.keras`` file from its ``config.json`` alone, so the
CLI checks ``--train-last`` before TensorFlow loads. This module imports Keras only when a function needs it.
"""

from __future__ import annotations

import json
import numbers
import zipfile

# Class names of the affine layers (the keys of layers.SPARSE_COUNTERPART) and of their sparse counterparts, as a
# .keras config names them; tests/test_train_last.py keeps them equal to the classes.
AFFINE_LAYER_TYPES = ("Dense", "Conv1D", "Conv2D", "DepthwiseConv2D")
_AFFINE_CONFIG_NAMES = frozenset(AFFINE_LAYER_TYPES) | {f"Sparse{name}" for name in AFFINE_LAYER_TYPES}


def check_train_last(n, affine_count: int, what: str = "the model") -> int:
    """``n`` as an int when ``1 <= n <= affine_count``; otherwise a one-line ValueError naming it and the range."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= affine_count:
        raise ValueError(f"train_last must be an integer from 1 to {affine_count} (the number of "
                         f"{'/'.join(AFFINE_LAYER_TYPES)} layers of {what}), got {n!r}")
    return int(n)


def affine_layers(model) -> list:
    """The model's affine layers (Dense, Conv1D, Conv2D, DepthwiseConv2D and their sparse versions), in order."""
    from tinyprop_tf import layers as layers_lib

    affine = tuple(layers_lib.SPARSE_COUNTERPART)  # the sparse layers subclass these
    return [layer for layer in model.layers if isinstance(layer, affine)]


def trained_layers(model, n) -> list[str]:
    """Names of the layers ``train_last(model, n)`` leaves trainable: the last ``n`` affine layers and the
    BatchNormalization directly after each. Raises ValueError for an ``n`` outside ``1..len(affine_layers)``."""
    import keras

    from tinyprop_tf import model_graph

    affine = affine_layers(model)
    n = check_train_last(n, len(affine), f"model '{model.name}'")
    chosen = {layer.name for layer in affine[-n:]}
    feeding = model_graph.parents(model)
    names = []
    for layer in model.layers:
        follows = [p.name for p in feeding[layer]]
        if layer.name in chosen or (isinstance(layer, keras.layers.BatchNormalization) and len(follows) == 1
                                    and follows[0] in chosen):
            names.append(layer.name)
    return names


def train_last(model, n) -> list[str]:
    """Train only the last ``n`` affine layers of ``model`` (and the BatchNormalization after each); freeze the
    rest. Sets every layer's ``trainable`` flag in place (compile again afterwards, as Keras requires) and, in a
    sparsified model, which sparse layers need an input gradient. Returns the trained layers' names.

    Raises ValueError (one line: ``n`` and the allowed range) for ``n < 1`` or more than the model has."""
    from tinyprop_tf.cloning import refresh_input_grads

    names = set(trained_layers(model, n))
    for layer in model.layers:
        layer.trainable = layer.name in names
    refresh_input_grads(model)
    return [layer.name for layer in model.layers if layer.name in names]


def affine_layers_in_keras_file(path: str) -> int:
    """How many affine layers the top level of a ``.keras`` file's model has (from config.json; no TensorFlow).
    The file must be an intact archive (``artifacts.check_keras_archive``)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    layers = (config.get("config") or {}).get("layers") or []
    return sum(1 for layer in layers if isinstance(layer, dict) and layer.get("class_name") in _AFFINE_CONFIG_NAMES)
