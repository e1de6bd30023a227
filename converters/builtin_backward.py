"""Forward and backward of the exportable layer set, written with ops that lower to TFLite *builtins* only.

TensorFlow's own gradients of several ops are not TFLite builtins (``ReluGrad``, ``Conv2DBackpropFilter``,
``DepthwiseConv2dNativeBackprop*``), so the exported train step never asks TensorFlow for a gradient: every
backward formula is written here, checked against TensorFlow's autodiff by the tests.

Formulations (NHWC; ``s`` = stride; ``pt, pl`` = padding before; ``Ho, Wo`` = output size):

- Dense: ``dW = xᵀ·δ`` and ``dx = δ·Wᵀ`` (BATCH_MATMUL / FULLY_CONNECTED).
- Conv2D filter gradient: a CONV_2D over transposed tensors. The padded input as ``[C_in, H, W, B]`` (batch
  becomes channels) is convolved with δ as a filter ``[Ho, Wo, B, C_out]`` at dilation ``s``; the result
  ``[C_in, kh, kw, C_out]`` is transposed to the kernel layout.
- Conv2D input gradient: TRANSPOSE_CONV (``tf.nn.conv2d_transpose``), on the padded input size and sliced when
  the padding is not TF's SAME/VALID (causal Conv1D).
- DepthwiseConv2D filter gradient: a DEPTHWISE_CONV_2D whose "channels" are (sample, channel) pairs: the padded
  input as ``[1, H, W, B·C]`` is convolved with the zero-dilated δ ``[(Ho-1)s+1, (Wo-1)s+1, B·C, dm]``; the
  result ``[1, kh, kw, B·C·dm]`` summed over B is the kernel gradient (TFLite's depthwise kernel has no
  dilation on TensorFlow's CPU, hence zero insertion instead of dilation).
- DepthwiseConv2D input gradient: a DEPTHWISE_CONV_2D of the zero-dilated, padded δ with the spatially flipped
  kernel (one channel per output channel), summed over the depth multiplier.
- Conv1D: Conv2D with H = 1.
- Activations: ReLU's derivative as a mask multiply (GREATER + CAST + MUL), sigmoid ``y(1-y)``, tanh ``1-y²``.
- Global average pooling: BROADCAST_TO of ``g / (H·W)``.
"""

from __future__ import annotations

import math

import tensorflow as tf


# ------------------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------------------
def conv_geometry(size: int, k: int, s: int, padding: str):
    """(pad_before, pad_after, out) along one spatial axis, as Keras/TF compute it (dilation 1)."""
    if padding == "valid":
        return 0, 0, (size - k) // s + 1
    if padding == "same":
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return total // 2, total - total // 2, out
    if padding == "causal":
        before = k - 1
        return before, 0, (size + before - k) // s + 1
    raise ValueError(f"padding {padding!r}")


class ConvGeometry:
    """Static geometry of a 2-D (or H=1 lifted 1-D) convolution.

    ``padding`` is a Keras padding mode: "same", "valid", or "causal" (1-D only: applied to the W axis; the
    lifted H axis has size 1, kernel 1, stride 1).
    """

    def __init__(self, in_hw, k_hw, s_hw, padding):
        (self.H, self.W), (self.kh, self.kw), (self.sh, self.sw) = in_hw, k_hw, s_hw
        h_mode = "valid" if padding == "causal" else padding
        self.pt, self.pb, self.Ho = conv_geometry(self.H, self.kh, self.sh, h_mode)
        self.pl, self.pr, self.Wo = conv_geometry(self.W, self.kw, self.sw, padding)
        self.padding = padding
        # TF's own padding modes when they reproduce the geometry (saves a PAD and a SLICE).
        self.tf_padding = {"same": "SAME", "valid": "VALID"}.get(padding)

    @property
    def needed_hw(self):
        """Input rows/cols the VALID conv over the padded input actually reads."""
        return (self.Ho - 1) * self.sh + self.kh, (self.Wo - 1) * self.sw + self.kw

    def padded(self, x):
        """x padded as the forward pads it, cut to the rows/cols the convolution reads."""
        nh, nw = self.needed_hw
        pb, pr = self.pb, self.pr
        if self.pt or pb or self.pl or pr:
            x = tf.pad(x, [[0, 0], [self.pt, pb], [self.pl, pr], [0, 0]])
        hp, wp = self.H + self.pt + pb, self.W + self.pl + pr
        if hp != nh or wp != nw:
            x = x[:, :nh, :nw, :]
        return x


def dilate(t, sh: int, sw: int):
    """Insert (s-1) zeros between the spatial entries of t [B, H, W, C] -> [B, (H-1)sh+1, (W-1)sw+1, C]."""
    if sh == 1 and sw == 1:
        return t
    b, h, w, c = t.shape
    if sh > 1:
        t = tf.reshape(t, [b, h, 1, w * c])
        t = tf.pad(t, [[0, 0], [0, 0], [0, sh - 1], [0, 0]])
        t = tf.reshape(t, [b, h * sh, w, c])[:, : (h - 1) * sh + 1]
        h = (h - 1) * sh + 1
    if sw > 1:
        t = tf.reshape(t, [b * h, w, 1, c])
        t = tf.pad(t, [[0, 0], [0, 0], [0, sw - 1], [0, 0]])
        t = tf.reshape(t, [b, h, w * sw, c])[:, :, : (w - 1) * sw + 1]
    return t


# ------------------------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------------------------
def activation_forward(name, z):
    if name == "linear":
        return z
    if name == "relu":
        return tf.nn.relu(z)  # RELU; its gradient is written below
    if name == "sigmoid":
        return tf.math.sigmoid(z)  # LOGISTIC
    if name == "tanh":
        return tf.math.tanh(z)  # TANH
    raise ValueError(name)


def activation_backward(name, g, out):
    """dL/dz from dL/dout and the activation's output (every supported activation's derivative is a function
    of its output, so the pre-activation need not outlive the forward)."""
    if name == "linear":
        return g
    if name == "relu":
        # TF's ReluGrad takes relu's output too (out > 0 exactly where z > 0): keeping z to the backward pass
        # cost one activation-sized tensor per layer in a TFLM arena (a third of a DS-CNN step's).
        return g * tf.cast(out > 0.0, g.dtype)
    if name == "sigmoid":
        return g * (out * (1.0 - out))
    if name == "tanh":
        return g * (1.0 - out * out)
    raise ValueError(name)


# ------------------------------------------------------------------------------------------------------------
# Dense
# ------------------------------------------------------------------------------------------------------------
def dense_forward(x, kernel, bias):
    z = tf.matmul(x, kernel)
    return z + bias if bias is not None else z


def dense_backward(x, kernel, delta, need_dx: bool):
    d_kernel = tf.matmul(x, delta, transpose_a=True)
    d_x = tf.matmul(delta, kernel, transpose_b=True) if need_dx else None
    return d_kernel, d_x


# ------------------------------------------------------------------------------------------------------------
# Conv2D (Conv1D lifts to it)
# ------------------------------------------------------------------------------------------------------------
def conv2d_forward(x, kernel, bias, geo: ConvGeometry):
    strides = [1, geo.sh, geo.sw, 1]
    if geo.tf_padding:
        z = tf.nn.conv2d(x, kernel, strides, geo.tf_padding)
    else:
        z = tf.nn.conv2d(geo.padded(x), kernel, strides, "VALID")
    return z + bias if bias is not None else z


def conv2d_backward(x, kernel, delta, geo: ConvGeometry, need_dx: bool):
    b = x.shape[0]
    # Filter gradient: CONV_2D of the transposed padded input with delta as filter, dilated by the stride.
    xt = tf.transpose(geo.padded(x), [3, 1, 2, 0])  # [C_in, nh, nw, B]
    ft = tf.transpose(delta, [1, 2, 0, 3])  # [Ho, Wo, B, C_out]
    o = tf.nn.conv2d(xt, ft, [1, 1, 1, 1], "VALID", dilations=[1, geo.sh, geo.sw, 1])  # [C_in, kh, kw, C_out]
    d_kernel = tf.transpose(o, [1, 2, 0, 3])
    d_x = None
    if need_dx:
        strides = [1, geo.sh, geo.sw, 1]
        if geo.tf_padding:
            d_x = tf.nn.conv2d_transpose(delta, kernel, [b, geo.H, geo.W, x.shape[-1]], strides, geo.tf_padding)
        else:
            nh, nw = geo.needed_hw
            d_xp = tf.nn.conv2d_transpose(delta, kernel, [b, nh, nw, x.shape[-1]], strides, "VALID")
            # d_xp covers the padded input rows [0, nh): keep the real ones, zero-fill what the conv never read.
            lo_h, lo_w = geo.pt, geo.pl
            hi_h, hi_w = min(nh, geo.pt + geo.H), min(nw, geo.pl + geo.W)
            d_x = d_xp[:, lo_h:hi_h, lo_w:hi_w, :]
            miss_h, miss_w = geo.H - (hi_h - lo_h), geo.W - (hi_w - lo_w)
            if miss_h or miss_w:
                d_x = tf.pad(d_x, [[0, 0], [0, miss_h], [0, miss_w], [0, 0]])
    return d_kernel, d_x


# ------------------------------------------------------------------------------------------------------------
# DepthwiseConv2D
# ------------------------------------------------------------------------------------------------------------
def depthwise_forward(x, kernel, bias, geo: ConvGeometry):
    strides = [1, geo.sh, geo.sw, 1]
    if geo.tf_padding:
        z = tf.nn.depthwise_conv2d(x, kernel, strides, geo.tf_padding)
    else:
        z = tf.nn.depthwise_conv2d(geo.padded(x), kernel, strides, "VALID")
    return z + bias if bias is not None else z


def depthwise_backward(x, kernel, delta, geo: ConvGeometry, need_dx: bool):
    b, _, _, c = x.shape
    kh, kw, _, dm = kernel.shape
    nh, nw = geo.needed_hw
    dd = dilate(delta, geo.sh, geo.sw)  # [B, Hd, Wd, C*dm]
    hd, wd = dd.shape[1], dd.shape[2]
    # Filter gradient: channels are (sample, channel) pairs, summed over the samples afterwards.
    xt = tf.reshape(tf.transpose(geo.padded(x), [1, 2, 0, 3]), [1, nh, nw, b * c])
    ft = tf.reshape(tf.transpose(tf.reshape(dd, [b, hd, wd, c, dm]), [1, 2, 0, 3, 4]), [hd, wd, b * c, dm])
    o = tf.nn.depthwise_conv2d(xt, ft, [1, 1, 1, 1], "VALID")  # [1, kh, kw, B*C*dm]
    d_kernel = tf.reduce_sum(tf.reshape(o, [kh, kw, b, c, dm]), axis=2)
    d_x = None
    if need_dx:
        # Correlate the zero-dilated delta, padded by (k-1-pad_before), with the flipped kernel.
        top, left = kh - 1 - geo.pt, kw - 1 - geo.pl
        bottom, right = geo.H + kh - 1 - hd - top, geo.W + kw - 1 - wd - left
        if min(top, left, bottom, right) < 0:
            raise ValueError("depthwise input gradient: unsupported padding geometry")
        dp = tf.pad(dd, [[0, 0], [top, bottom], [left, right], [0, 0]])
        flipped = tf.reshape(tf.reverse(kernel, axis=[0, 1]), [kh, kw, c * dm, 1])
        o = tf.nn.depthwise_conv2d(dp, flipped, [1, 1, 1, 1], "VALID")  # [B, H, W, C*dm]
        d_x = o if dm == 1 else tf.reduce_sum(tf.reshape(o, [b, geo.H, geo.W, c, dm]), axis=-1)
    return d_kernel, d_x


# ------------------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------------------
def gap_forward(x, keepdims: bool):
    axes = list(range(1, x.shape.rank - 1))
    return tf.reduce_mean(x, axis=axes, keepdims=keepdims)


def gap_backward(g, in_shape):
    """g: [B, C] or keepdims [B, 1, .., C]; in_shape: full static input shape with batch."""
    positions = math.prod(in_shape[1:-1])
    g = g / float(positions)
    g = tf.reshape(g, [in_shape[0]] + [1] * (len(in_shape) - 2) + [in_shape[-1]])
    return tf.broadcast_to(g, in_shape)
