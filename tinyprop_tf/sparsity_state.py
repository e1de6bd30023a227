"""The state a sparse layer keeps between steps, and how to find the layers that keep it.

``SparsityState`` is a child layer of every sparse layer (never called; it holds non-trainable variables, saved with
the model): the running reference of the local error (``selection.update_reference``), ssProp's current keep
fraction, and the step accumulators the accounting adds to (``STAT_SUMS``, ``STAT_EXTREMES``; ``accounting``).
``sparse_layers(model)`` finds the layers that hold one. The layers (``layers``) and the accounting both build on
this module, which imports neither.
"""

from __future__ import annotations

import keras
import numpy as np

from tinyprop_tf import selection

# Names of the per-layer step accumulators (sums over steps since the last reset), in storage order.
STAT_SUMS = (
    "steps",
    "samples",
    "skipped",  # samples that needed no backward work here (zero error, or skipped by TinyPropSkip)
    "k_sum",
    "bpr_sum",
    "fwd_macs",
    "bwd_macs_dense",
    "bwd_macs_sparse",
    "select_ops",
)
STAT_EXTREMES = ("k", "bpr")  # min and max kept over steps


@keras.saving.register_keras_serializable(package="tinyprop_tf")
class SparsityState(keras.layers.Layer):
    """Per-layer state of sparse back-propagation (never called; holds variables only)."""

    def __init__(self, keep: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_keep = float(keep)
        self.ymax = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(selection.YMAX_INIT), trainable=False, name="ymax"
        )
        self.keep = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(keep), trainable=False, name="keep"
        )
        # float64: MAC totals over an epoch pass float32's exact-integer range (2**24) quickly.
        self.sums = self.add_weight(
            shape=(len(STAT_SUMS),), dtype="float64", initializer="zeros", trainable=False, name="sums"
        )
        self.minima = self.add_weight(
            shape=(len(STAT_EXTREMES),), dtype="float64", initializer=keras.initializers.Constant(np.inf),
            trainable=False, name="minima",
        )
        self.maxima = self.add_weight(
            shape=(len(STAT_EXTREMES),), dtype="float64", initializer=keras.initializers.Constant(-np.inf),
            trainable=False, name="maxima",
        )
        self.built = True

    def reset_running_max(self):
        self.ymax.assign(selection.YMAX_INIT)

    def reset_stats(self):
        self.sums.assign(np.zeros(len(STAT_SUMS)))
        self.minima.assign(np.full(len(STAT_EXTREMES), np.inf))
        self.maxima.assign(np.full(len(STAT_EXTREMES), -np.inf))

    def get_config(self):
        return {**super().get_config(), "keep": self.initial_keep}


def sparse_layers(model) -> list:
    """The sparse layers of a model (recursing into nested models), in model order: those holding a
    ``SparsityState``."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(getattr(layer, "sparsity_state", None), SparsityState)]
