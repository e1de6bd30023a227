"""``sparsify(model, policy)`` and ``strip(model)``: like tfmot's ``prune_low_magnitude`` / ``strip_pruning``.

``sparsify`` clones a Sequential or Functional model, replacing each supported layer (Dense, Conv2D,
DepthwiseConv2D, Conv1D) by its sparse counterpart with the same config and weights; every other layer
(BatchNorm, pooling, Add, ReLU, Dropout, ...) is cloned unchanged with its weights. The forward output is
bit-identical. ``strip`` does the reverse and keeps the trained weights.

Depth ``p`` (for ``zeta**p``) comes from the graph: the largest number of sparse layers on any path from the
layer to an output, so the sparse layer nearest the output has ``p = 0``. (On a residual block the longest path
counts, i.e. the layer is damped as much as its deepest position demands.) A layer whose input depends on no
trainable weight (the first layer, or the first trained one after a frozen prefix: ``trainable.train_last``) is
marked as needing no input gradient: no gradient flows upstream of it, and the accounting counts no dx for it.
"""

from __future__ import annotations

import functools
import warnings

import keras

from tinyprop_tf import accounting, model_graph
from tinyprop_tf import layers as sparse_layers_lib
from tinyprop_tf import policies as policies_lib
from tinyprop_tf.sparsity_state import sparse_layers

# ssProp's authors replace only the 2-D convolutions; Dense, Conv1D and BatchNorm stay dense.
SSPROP_DEFAULT_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _unsupported_reason(layer) -> str | None:
    """Why a supported-class layer can't be converted, or None."""
    if type(layer) not in sparse_layers_lib.SPARSE_COUNTERPART:
        return f"{type(layer).__name__} has no sparse counterpart"
    return model_graph.unsupported_form(layer)


def _has_kernel(layer) -> bool:
    """Weight layers worth reporting when left dense (kernels of any name: depthwise_kernel, ...)."""
    return any("kernel" in w.path.rsplit("/", 1)[-1] for w in layer.weights)


def _depths(model, chosen: set) -> dict[str, int]:
    """Depth p of each chosen layer: the most chosen layers on any path from it (exclusive) to an output."""
    feeding = model_graph.parents(model)
    children = {layer: [] for layer in feeding}
    for layer, ps in feeding.items():
        for p in ps:
            children[p].append(layer)

    @functools.cache
    def downstream(layer):
        return max(((c in chosen) + downstream(c) for c in children[layer]), default=0)

    return {layer.name: downstream(layer) for layer in chosen}


def refresh_input_grads(model) -> None:
    """Set every sparse layer's ``needs_input_grad`` from the trainable flags as they are now (``sparsify`` does
    it when cloning; ``trainable.train_last`` after changing the flags). A layer whose input needs no gradient stops
    it there (``layers.SparseBackpropMixin.call``)."""
    sparse = [layer for layer in model.layers if isinstance(layer, sparse_layers_lib.SPARSE_LAYERS)]
    input_grads = model_graph.input_needs_gradient(model)
    for layer in sparse:
        layer.needs_input_grad = input_grads[layer.name]
    set_layer_policies(sparse)


def backward_costs(sparse) -> list[int]:
    """Each sparse layer's dense backward MACs per sample with the trainable flags as they are now (0: its backward
    never runs): what ``BackpropPolicy.for_layers`` shares a budget by."""
    return [accounting.dense_backward_macs_per_sample(layer) or 0 for layer in sparse]


def set_layer_policies(sparse) -> None:
    """Give each sparse layer its own copy of the model's policy where the policy says so
    (``BackpropPolicy.for_layers``: ``BudgetProp``'s shares of the backward budget), from the backward cost each
    layer has with the trainable flags as they are now. Layers of one model share one policy."""
    if not sparse:
        return
    per_layer = sparse[0].policy.model_policy().for_layers(backward_costs(sparse))
    for layer, policy in zip(sparse, per_layer or ()):
        layer.policy = policy


def _base_weights(layer):
    """The layer's weights without sparse-training state (kernel, bias, BatchNorm statistics...)."""
    state = getattr(layer, "sparsity_state", None)
    state_ids = {id(w) for w in state.weights} if state is not None else set()
    return [w for w in layer.weights if id(w) not in state_ids]


def _copy_weights(source_model, target_model):
    # clone_model keeps the layer order; InputLayers may be renamed, weighted layers keep their names.
    for source, target in zip(source_model.layers, target_model.layers, strict=True):
        src, dst = _base_weights(source), _base_weights(target)
        if len(src) != len(dst) or (src and source.name != target.name):
            raise RuntimeError(f"sparsify: clone of layer '{source.name}' does not line up with '{target.name}'")
        for s, d in zip(src, dst):
            d.assign(s)


def sparsify(model, policy, layers=None, selection: str = "channel", verbose: bool = True):
    """A sparse-training clone of ``model`` with the same weights and bit-identical forward outputs.

    Args:
      model: a built Sequential or Functional ``keras.Model``.
      policy: a ``BackpropPolicy`` (``TinyProp(...)``, ``StaticTopK(...)``, ``DenseBackprop()``,
        ``SsProp(...)``, ``TinyPropSkip(...)``), a config dict or a short name.
      layers: names of the layers to make sparse; default all supported ones (for ``SsProp``: the 2-D
        convolutions only, as its authors do). A name that does not exist, or names a layer that cannot be
        converted, is an error.
      selection: ``"channel"`` (default) or ``"element"`` selection for conv layers (see ``layers``).
      verbose: warn about weight layers left dense.

    Returns:
      A new, uncompiled model. Compile it and train with ``fit`` or a ``GradientTape`` loop.
    """
    model_graph.check_model(model, "sparsify")
    policy = policies_lib.get(policy)
    if selection not in sparse_layers_lib.SELECTIONS:
        raise ValueError(f"selection must be one of {sparse_layers_lib.SELECTIONS}, got {selection!r}")

    by_name = {layer.name: layer for layer in model.layers}
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        missing = [name for name in layers if name not in by_name]
        if missing:
            raise ValueError(
                f"sparsify: no layer named {missing} in model '{model.name}'; its layers are {list(by_name)}"
            )
        chosen = set()
        for name in layers:
            reason = _unsupported_reason(by_name[name])
            if reason:
                raise ValueError(f"sparsify: layer '{name}' cannot be made sparse: {reason}")
            chosen.add(by_name[name])
    else:
        default_types = SSPROP_DEFAULT_TYPES if isinstance(policy, policies_lib.SsProp) else None
        chosen = {
            layer for layer in model.layers
            if _unsupported_reason(layer) is None and (default_types is None or type(layer) in default_types)
        }

    left_dense = [
        f"{layer.name} ({_unsupported_reason(layer) or 'not selected for ' + type(policy).__name__})"
        for layer in model.layers
        if layer not in chosen and _has_kernel(layer)
    ]
    if left_dense and verbose:
        warnings.warn("sparsify: left dense: " + ", ".join(left_dense), stacklevel=2)
    if not chosen:
        raise ValueError(f"sparsify: model '{model.name}' has no layer that can be made sparse ({left_dense})")

    depths, input_grads = _depths(model, chosen), model_graph.input_needs_gradient(model)
    chosen_names = {layer.name for layer in chosen}
    policy_config = keras.saving.serialize_keras_object(policy)

    def clone_layer(layer):
        if layer.name not in chosen_names:
            return layer.__class__.from_config(layer.get_config())
        config = layer.get_config()
        config.update(
            policy=policies_lib.get(policy_config),  # a fresh policy object per layer: no shared state
            depth=depths[layer.name],
            selection=selection,
            needs_input_grad=input_grads[layer.name],
        )
        return sparse_layers_lib.SPARSE_COUNTERPART[type(layer)].from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    _copy_weights(model, clone)
    set_layer_policies(sparse_layers(clone))
    clone.sparsify_report = {"sparse": sorted(chosen_names), "left_dense": left_dense, "depths": depths}
    return clone


def strip(model):
    """A plain Keras model with the trained weights: every sparse layer back to its Keras parent class."""
    model_graph.check_model(model, "strip")

    def clone_layer(layer):
        dense_cls = sparse_layers_lib.DENSE_COUNTERPART.get(type(layer))
        config = layer.get_config()
        if dense_cls is None:
            return layer.__class__.from_config(config)
        for key in sparse_layers_lib.SPARSE_CONFIG_KEYS:
            config.pop(key, None)
        return dense_cls.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    _copy_weights(model, clone)
    return clone
