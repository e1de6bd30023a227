"""Optimizers for sparse updates.

``LazyAdam``: Adam whose moments and step skip the weights that received no gradient this step. Sparse
back-propagation leaves most of a wide layer's columns with an exactly-zero gradient in a step; plain Adam still
decays their moments and moves them by ``m_hat / sqrt(v_hat)``, a step of the same size as a dense gradient's
(a rare, small sparse gradient becomes a full-size update that keeps going for steps after it). LazyAdam leaves
such a weight, and its moments, untouched (as TF Addons' LazyAdam does for the rows of a sparse gradient). The
bias correction uses the global step. With every gradient entry non-zero it is Adam, bit for bit.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tinyprop_tf")
class LazyAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` that updates only the entries whose gradient is non-zero (see module doc)."""

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        touched = ops.cast(ops.not_equal(gradient, 0), variable.dtype)
        # The very expressions of Adam.update_step, masked: an untouched entry adds exactly zero.
        self.assign_add(m, ops.multiply(ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1), touched))
        self.assign_add(v, ops.multiply(ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2),
                                        touched))
        step = ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), self.epsilon))
        self.assign_sub(variable, ops.multiply(step, touched))
