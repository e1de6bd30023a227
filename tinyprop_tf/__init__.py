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

from tinyprop_tf.accounting import read_stats, reset_stats, summary, totals
from tinyprop_tf.layers import (
    SparseConv1D,
    SparseConv2D,
    SparseDense,
    SparseDepthwiseConv2D,
    sparse_layers,
)
from tinyprop_tf.policies import DenseBackprop, SsProp, StaticTopK, TinyProp, TinyPropSkip
from tinyprop_tf.schedules import Bar, Constant, Cosine, Linear
from tinyprop_tf.sparsify import sparsify, strip
from tinyprop_tf.training import BackpropStats, UpdateSparsity, reset_sparsity_state, update_keep

__all__ = [
    "BackpropStats", "Bar", "Constant", "Cosine", "DenseBackprop", "Linear", "SparseConv1D", "SparseConv2D",
    "SparseDense", "SparseDepthwiseConv2D", "SsProp", "StaticTopK", "TinyProp", "TinyPropSkip", "UpdateSparsity",
    "read_stats", "reset_sparsity_state", "reset_stats", "sparse_layers", "sparsify", "strip", "summary",
    "totals", "update_keep",
]
