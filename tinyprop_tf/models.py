"""Small reference models of the sizes people fine-tune on microcontrollers (plain Keras; ``sparsify`` them)."""

from __future__ import annotations

import keras
from keras import layers

# Keras' default 0.99 leaves moving statistics ~30% at their initial values after 120 steps; fine-tuning on
# a few hundred samples never gets further, and inference then collapses. 0.9 converges in tens of steps.
BN_MOMENTUM = 0.9


def mlp(input_shape=(784,), num_classes=10, hidden=(32, 16), name="mlp"):
    """The TinyProp authors' MNIST MLP (784-32-16-10, ReLU) by default."""
    inputs = keras.Input(input_shape, name="x")
    x = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"fc{i + 1}")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def small_cnn(input_shape=(28, 28, 1), num_classes=10, filters=(8, 16), name="small_cnn"):
    """Two strided 3x3 convolutions and a classifier: an MNIST-class vision model."""
    inputs = keras.Input(input_shape, name="x")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"conv{i + 1}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def ds_cnn(input_shape=(49, 10, 1), num_classes=12, filters=64, blocks=4, residual=False, name="ds_cnn"):
    """DS-CNN keyword spotter (Zhang et al., "Hello Edge"): conv, then depthwise-separable blocks, each
    DepthwiseConv2D -> BatchNorm -> ReLU -> 1x1 Conv2D -> BatchNorm -> ReLU; global pooling; Dense.

    ``residual=True`` adds identity shortcuts around blocks 2.. (exercises Add in ``sparsify``).
    """
    inputs = keras.Input(input_shape, name="x")
    x = layers.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", use_bias=False, name="conv0")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    for b in range(1, blocks + 1):
        block_input = x
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{b}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"dw{b}_bn")(x)
        x = layers.ReLU(name=f"dw{b}_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"pw{b}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"pw{b}_bn")(x)
        x = layers.ReLU(name=f"pw{b}_relu")(x)
        if residual and b > 1:
            x = layers.Add(name=f"add{b}")([x, block_input])
    x = layers.Dropout(0.2, name="dropout")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def conv1d_net(input_shape=(49, 10), num_classes=12, filters=(16, 32), name="conv1d_net"):
    """Temporal CNN over feature frames (Conv1D), e.g. for MFCC sequences. A [frames, features, 1] input (a
    feature image, as the audio tasks give) is read as [frames, features]."""
    inputs = keras.Input(input_shape, name="x")
    x = inputs
    if len(input_shape) == 3 and input_shape[-1] == 1:
        x = layers.Reshape(tuple(input_shape[:2]), name="frames")(x)
    for i, f in enumerate(filters):
        x = layers.Conv1D(f, 3, strides=2, padding="same", activation="relu", name=f"tconv{i + 1}")(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def autoencoder(input_dim=640, hidden=(128, 64, 8), name="autoencoder"):
    """Dense autoencoder for machine-sound anomaly detection (DCASE2020 Task 2 baseline shape)."""
    inputs = keras.Input((input_dim,), name="x")
    x = inputs
    sizes = list(hidden) + list(reversed(hidden[:-1]))
    for i, units in enumerate(sizes):
        x = layers.Dense(units, activation="relu", name=f"ae{i + 1}")(x)
    outputs = layers.Dense(input_dim, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=name)
