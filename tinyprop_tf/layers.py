"""Keras 3 layers whose backward pass keeps only part of the error signal.

Each ``Sparse*`` layer *is* the Keras layer it extends (same weights, same config keys, bit-identical forward
output) with three extra config entries: ``policy``, ``depth`` (p in ``zeta**p``) and ``selection``. The
forward pass is the parent's affine part followed by a bias add wrapped in ``tf.custom_gradient``: its
gradient function receives the error at the affine output (delta = dL/dz, pre-activation), applies the policy
and hands TensorFlow's own matmul/conv gradients the masked delta. So dW and dx come from exactly the kept
entries (a masked dense computation: identical numbers, no saving on the host; savings are *counted*, see
``accounting``), while the bias gradient is the sum of the full delta (TinyProp/static, the authors' choice)
or of the kept channels only (ssProp).

Selection granularity (``selection``):
- ``"channel"`` (default): per sample, one score per output unit/channel = sum of |delta| over all other
  positions; a kept channel keeps all its positions. For Dense on [B, N] inputs this is plain element-wise.
  Only this lets a device kernel skip whole filters.
- ``"element"``: per sample, every element of delta over positions x channels competes (the TinyProp
  authors' PyTorch conv layers). Faithful, but saves nothing on an MCU kernel.

State (non-trainable weights of the child ``SparsityState`` layer, saved with the model): the running maximum
of the local error, ssProp's current keep fraction, and step accumulators for the accounting.

A non-finite error signal (NaN/Inf) raises ``InvalidArgumentError`` naming the layer *before* the optimizer
runs, so NaN is never written into the weights or the running maximum silently. The layers declare
``supports_jit = False``: XLA drops ``check_numerics``, so ``fit`` runs them without XLA (a custom loop under
``tf.function(jit_compile=True)`` loses the check).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tinyprop_tf import accounting, selection
from tinyprop_tf import policies as policies_lib
from tinyprop_tf._registry import register_with_keras
from tinyprop_tf.sparsity_state import SparsityState

# Policies and schedules travel inside the layers' configs: Keras must know them before any layer is saved/loaded.
register_with_keras()

SELECTIONS = ("channel", "element")


class SparseBackpropMixin:
    """What every sparse layer shares: config, state and the custom gradient. Its backward pass is the selection rule
    (``selection.select_for_policy``) applied to the error signal, and the step counted (``accounting.record_step``).

    A subclass provides ``_affine(inputs)`` (the parent's output before bias), ``_bias_for_add()`` (the bias
    shaped as the parent adds it) and ``_fan_in()`` (MACs per output element).
    """

    #: ``observer(layer, kept, k)`` called by every backward pass with the kept entries ([B, M] bool, None when
    #: the policy keeps everything) and the entries each sample costs ([B] int32, 0 for an inactive sample).
    #: ``verify`` sets it on an eagerly trained copy to replay exactly these kept sets in float64.
    kept_observer = None

    def _init_sparse(self, policy, depth, selection_mode, needs_input_grad):
        if getattr(self, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"{type(self).__name__} '{self.name}': only data_format='channels_last' is supported "
                f"(MCU kernels are NHWC), got {self.data_format!r}"
            )
        if selection_mode not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection_mode!r}")
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
        self.policy = policies_lib.get(policy if policy is not None else policies_lib.TinyProp())
        self.depth = int(depth)
        self.selection = selection_mode
        self.needs_input_grad = bool(needs_input_grad)
        self.sparsity_state = SparsityState(keep=self.policy.initial_keep(), name="sparsity_state")
        # XLA compiles check_numerics away (NaN would reach the weights silently), and on CPU it made a
        # DS-CNN train step ~10x slower here; Keras' jit_compile="auto" then stays off.
        self.supports_jit = False

    # -- Keras plumbing -------------------------------------------------------------------------------------
    def _sparse_config(self):
        return {
            "policy": keras.saving.serialize_keras_object(self.policy),
            "depth": self.depth,
            "selection": self.selection,
            "needs_input_grad": self.needs_input_grad,
        }

    def runs_backward(self) -> bool:
        """Whether a training step back-propagates through this layer: it trains, or a layer before it does."""
        return bool(self.trainable or self.needs_input_grad)

    def call(self, inputs):
        # Nothing before this layer trains: no gradient flows there. (The tape watches a frozen layer's variables
        # all the same, so without this a frozen prefix would run its backward, sparse selection included.)
        if not self.needs_input_grad:
            inputs = tf.stop_gradient(inputs)
        z = self._affine(inputs)
        z = self._sparse_bias_add(z, self._bias_for_add())
        if not self.runs_backward():  # frozen, and nothing before it trains: its backward is skipped entirely
            z = tf.stop_gradient(z)
        if self.activation is not None:
            z = self.activation(z)
        return z

    # -- forward: bias add with the policy's gradient ---------------------------------------------------------
    def _sparse_bias_add(self, z, bias):
        if bias is None:

            @tf.custom_gradient
            def affine_output(z):
                return tf.identity(z), lambda delta: self._backward(delta)[0]

            return affine_output(z)

        @tf.custom_gradient
        def affine_output_with_bias(z, b):
            def grad(delta):
                d_z, d_b = self._backward(delta)
                return d_z, tf.reshape(d_b, tf.shape(b))

            # ops.add: the very op the Keras parent uses, so the forward output is bit-identical.
            return ops.add(z, b), grad

        return affine_output_with_bias(z, tf.convert_to_tensor(bias))

    # -- backward ---------------------------------------------------------------------------------------------
    def _backward(self, delta):
        """Masked error for the affine part and the bias gradient; updates the layer's state and accumulators."""
        cost = self._cost(delta.shape)
        flat, scores, y = selection.scores_and_error(delta, cost.entries, self.selection == "channel")
        # [B]: L1 of the layer's error per sample. A NaN or Inf anywhere in delta makes its sample's y non-finite,
        # so checking these B numbers is as strict as checking delta (checking all of delta cost ~20 % of a
        # DS-CNN step); the only extra trigger is an L1 beyond float32's range, where training is lost anyway.
        y = tf.debugging.check_numerics(
            y, f"tinyprop_tf: non-finite error signal (NaN/Inf) in the backward pass of layer '{self.name}'"
        )
        state = self.sparsity_state
        chosen = selection.select_for_policy(self.policy, self.depth, flat, scores, y, state.ymax.value,
                                             state.keep.value, cost.entries)
        state.ymax.assign(chosen.ymax)
        kept_error = selection.kept_error(delta, chosen, self.selection == "channel")
        d_bias = selection.step_bias_gradient(delta, kept_error, chosen, self.policy.sparse_bias)
        if self.kept_observer is not None:
            self.kept_observer(self, chosen.kept, tf.where(chosen.active, chosen.k, 0))
        accounting.record_step(state, cost, chosen, tf.shape(delta)[0], self.policy)
        # The check on y must run before anything downstream (the optimizer) can use these gradients, also where
        # they don't depend on y (DenseBackprop).
        with tf.control_dependencies([y]):
            return tf.identity(kept_error), tf.identity(d_bias)

    def _cost(self, delta_shape) -> accounting.LayerCost:
        """What a sample costs here: M entries compete, each covering ``positions`` output elements."""
        per_sample = delta_shape[1:]
        if any(d is None for d in per_sample):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs a static output shape (except batch) to select "
                f"and count entries; got {tuple(delta_shape)}"
            )
        out_elements = int(np.prod(per_sample))
        entries = out_elements if self.selection == "element" else int(per_sample[-1])
        return accounting.LayerCost(entries, out_elements // entries, out_elements, self._fan_in(),
                                    bool(self.trainable), self.needs_input_grad)

    def forward_macs_per_sample(self) -> int | None:
        """Forward MACs of the affine part for one sample (None before the layer is built on a shape)."""
        out_shape = getattr(self, "_tinyprop_output_shape", None)
        if out_shape is None:
            return None
        return int(np.prod(out_shape[1:])) * self._fan_in()

    def build(self, input_shape):
        super().build(input_shape)
        self._tinyprop_output_shape = tuple(self.compute_output_shape(input_shape))


def _merge_sparse_config(layer, base_config):
    return {**base_config, **layer._sparse_config()}


def _pop_sparse_kwargs(kwargs):
    return (
        kwargs.pop("policy", None),
        kwargs.pop("depth", 0),
        kwargs.pop("selection", "channel"),
        kwargs.pop("needs_input_grad", True),
    )


@keras.saving.register_keras_serializable(package="tinyprop_tf")
class SparseDense(SparseBackpropMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with sparse back-propagation (selection over the units, per sample)."""

    def __init__(self, units, **kwargs):
        sparse_args = _pop_sparse_kwargs(kwargs)
        super().__init__(units, **kwargs)
        self._init_sparse(*sparse_args)

    def _affine(self, inputs):
        return ops.matmul(inputs, self.kernel)

    def _bias_for_add(self):
        return self.bias

    def _fan_in(self):
        return int(self.kernel.shape[0])

    def get_config(self):
        return _merge_sparse_config(self, super().get_config())


class _SparseConvMixin(SparseBackpropMixin):
    def _bias_for_add(self):
        if not self.use_bias:
            return None
        return ops.reshape(self.bias, (1,) * (self.rank + 1) + (self.bias.shape[0],))

    def _fan_in(self):
        # kernel [*kernel_size, C_in / groups, C_out]: MACs per output element = all but the last axis.
        return int(math.prod(self.kernel.shape[:-1]))

    def get_config(self):
        return _merge_sparse_config(self, super().get_config())


@keras.saving.register_keras_serializable(package="tinyprop_tf")
class SparseConv2D(_SparseConvMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with sparse back-propagation (channel-wise by default)."""

    def __init__(self, filters, kernel_size, **kwargs):
        sparse_args = _pop_sparse_kwargs(kwargs)
        super().__init__(filters, kernel_size, **kwargs)
        self._init_sparse(*sparse_args)

    def _affine(self, inputs):
        return self.convolution_op(inputs, self.kernel)


@keras.saving.register_keras_serializable(package="tinyprop_tf")
class SparseConv1D(_SparseConvMixin, keras.layers.Conv1D):
    """``keras.layers.Conv1D`` with sparse back-propagation (``causal`` padding included)."""

    def __init__(self, filters, kernel_size, **kwargs):
        sparse_args = _pop_sparse_kwargs(kwargs)
        super().__init__(filters, kernel_size, **kwargs)
        self._init_sparse(*sparse_args)

    def _affine(self, inputs):
        padding = self.padding
        if padding == "causal":  # as keras.layers.Conv1D.call does
            inputs = ops.pad(inputs, self._compute_causal_padding())
            padding = "valid"
        return ops.conv(
            inputs, self.kernel, strides=list(self.strides), padding=padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )


@keras.saving.register_keras_serializable(package="tinyprop_tf")
class SparseDepthwiseConv2D(_SparseConvMixin, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with sparse back-propagation over its C_in x depth_multiplier channels."""

    def __init__(self, kernel_size, **kwargs):
        sparse_args = _pop_sparse_kwargs(kwargs)
        super().__init__(kernel_size, **kwargs)
        self._init_sparse(*sparse_args)

    def _affine(self, inputs):
        return ops.depthwise_conv(
            inputs, self.kernel, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )

    def _fan_in(self):
        # kernel [kh, kw, C_in, depth_multiplier]: each output channel sees one input channel.
        return int(math.prod(self.kernel.shape[:-2]))


SPARSE_LAYERS = (SparseDense, SparseConv2D, SparseConv1D, SparseDepthwiseConv2D)

# Keras class -> its sparse counterpart. Exact classes only: a user subclass may change call().
SPARSE_COUNTERPART = {
    keras.layers.Dense: SparseDense,
    keras.layers.Conv2D: SparseConv2D,
    keras.layers.Conv1D: SparseConv1D,
    keras.layers.DepthwiseConv2D: SparseDepthwiseConv2D,
}
DENSE_COUNTERPART = {sparse: dense for dense, sparse in SPARSE_COUNTERPART.items()}
SPARSE_CONFIG_KEYS = ("policy", "depth", "selection", "needs_input_grad")
