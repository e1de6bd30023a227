"""BatchNormalization during fine-tuning: as Keras trains it, as the device trains it, or re-estimated first.

The exported training step has no BatchNormalization: the exporter folds each one into the Dense/Conv layer before
it with its moving statistics (``converters.graph.fold_batchnorm``), so the device trains the folded kernel and
bias and never normalises with a batch's statistics. A Keras fine-tuning run that keeps BatchNorm training (batch
statistics, moving averages updated) therefore simulates another network than the one the device trains, and one
whose samples are coupled through the batch statistics, which per-sample selection does not see.
``for_finetuning(model, mode, x)`` gives the model a fine-tuning run starts from:

- ``"train"``: the model unchanged; Keras normalises with batch statistics while it trains (host only).
- ``"fold"``: every BatchNorm folded with the pretrained moving statistics: the network the exported step trains.
- ``"adapt"``: the moving statistics first re-estimated on the fine-tuning inputs (forward passes only, one
  BatchNorm after the other, each seeing the ones before it already adapted: AdaBN, Li et al. 2017,
  arXiv:1603.04779), then folded. A device can do the same with forward passes over its samples; the exported
  step does not include that pass, so a device fine-tuning an exported model starts from the statistics the host
  had (``"fold"``) unless the model is exported after adapting.
"""

from __future__ import annotations

import numpy as np

BATCHNORM_MODES = ("train", "fold", "adapt")


def check_mode(mode: str) -> str:
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {list(BATCHNORM_MODES)}, got {mode!r}")
    return mode


def _batchnorms(model):
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def adapt_statistics(model, x: np.ndarray, batch_size: int = 256):
    """A copy of ``model`` whose BatchNorm moving mean and variance are those of ``x`` (population statistics,
    float64 sums), estimated one BatchNorm after the other in layer order with the earlier ones already adapted."""
    import keras

    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("adapting BatchNorm statistics needs at least one fine-tuning sample, got none")
    adapted = keras.models.clone_model(model)
    adapted.set_weights(model.get_weights())
    for bn in _batchnorms(adapted):
        axes = [bn.axis] if isinstance(bn.axis, int) else list(bn.axis)
        probe = keras.Model(adapted.input, bn.input)
        total = total_sq = None
        count = 0
        for start in range(0, len(x), batch_size):
            values = np.asarray(probe(x[start:start + batch_size], training=False), np.float64)
            keep = {a % values.ndim for a in axes}
            reduce = tuple(a for a in range(values.ndim) if a not in keep)
            total = values.sum(reduce) + (0 if total is None else total)
            total_sq = (values ** 2).sum(reduce) + (0 if total_sq is None else total_sq)
            count += int(np.prod([values.shape[a] for a in reduce]))
        mean = total / count
        variance = np.maximum(total_sq / count - mean ** 2, 0.0)
        bn.moving_mean.assign(mean.reshape(bn.moving_mean.shape).astype(np.float32))
        bn.moving_variance.assign(variance.reshape(bn.moving_variance.shape).astype(np.float32))
    return adapted


def for_finetuning(model, mode: str, x: np.ndarray | None = None):
    """The model a fine-tuning run with BatchNorm ``mode`` (``BATCHNORM_MODES``) starts from; ``x``: the
    fine-tuning inputs (``"adapt"`` only). A model without BatchNorm is returned as it is in every mode."""
    check_mode(mode)
    if mode == "train" or not _batchnorms(model):
        return model
    from tinyprop_tf.converters.graph import fold_batchnorm

    if mode == "adapt":
        if x is None:
            raise ValueError("batchnorm='adapt' needs the fine-tuning inputs")
        model = adapt_statistics(model, x)
    folded, _ = fold_batchnorm(model)
    return folded
