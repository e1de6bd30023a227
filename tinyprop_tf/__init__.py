"""tinyprop-tf: sparse back-propagation (TinyProp, static top-k, ssProp) for Keras models, simulated on the
host and exported for on-device fine-tuning on microcontrollers.

Typical use::

    import tinyprop_tf as tp
    sparse = tp.sparsify(pretrained, tp.TinyProp(s_min=0.1, s_max=0.9, zeta=0.5))
    sparse.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stats = tp.BackpropStats()
    sparse.fit(x, y, epochs=5, callbacks=[tp.UpdateSparsity(), stats])
    tp.summary(sparse)
    plain = tp.strip(sparse)
"""

__version__ = "0.1.0"

import importlib

# Public names -> defining module. Imported on first use (PEP 562), so `import tinyprop_tf.datasets` or the CLI
# don't pay for TensorFlow until they need it (and the CLI can set TF's log level first).
_EXPORTS = {
    "read_stats": "accounting", "reset_stats": "accounting", "summary": "accounting", "totals": "accounting",
    "SparseConv1D": "layers", "SparseConv2D": "layers", "SparseDense": "layers",
    "SparseDepthwiseConv2D": "layers", "sparse_layers": "sparsity_state",
    "DenseBackprop": "policies", "SsProp": "policies", "StaticTopK": "policies", "TinyProp": "policies",
    "TinyPropSkip": "policies", "BudgetProp": "policies",
    "LazyAdam": "optimizers",
    "Bar": "schedules", "Constant": "schedules", "Cosine": "schedules", "Linear": "schedules",
    "sparsify": "cloning", "strip": "cloning",
    "BackpropStats": "training", "UpdateSparsity": "training", "reset_sparsity_state": "training",
    "update_keep": "training",
    "train_last": "trainable", "trained_layers": "trainable",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tinyprop_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tinyprop_tf.{module}"), name)
    if module in ("policies", "schedules"):  # known to Keras from the first use on, as with the layers
        importlib.import_module("tinyprop_tf._registry").register_with_keras()
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
