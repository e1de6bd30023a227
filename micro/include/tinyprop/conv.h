// Forward and backward passes of Conv2D and DepthwiseConv2D (NHWC, Keras kernel layouts); the backward dense and
// channel-sparse.
//
// Conv2D: x [batch, in_h, in_w, in_c], kernel W [kernel_h, kernel_w, in_c, out_c], delta = dL/dz
// [batch, out_h, out_w, out_c], dW like W, dx like x, db [out_c].
// DepthwiseConv2D: kernel [kernel_h, kernel_w, in_c, depth_multiplier]; output channel o = c * dm + m
// (out_c = in_c * dm); delta [batch, out_h, out_w, out_c].
// out_h/out_w and the padding follow TensorFlow (ComputeConvGeometry). Conv1D is Conv2D with in_h = 1 and
// kernel_h = 1 (Keras' "causal" padding = pad the input on the left, then VALID).
// Any of dw, dx, db may be null (not computed); x may be null when dw is null, w when dx is null.
#ifndef TINYPROP_CONV_H_
#define TINYPROP_CONV_H_

#include "tinyprop/status.h"

namespace tinyprop {

enum class Padding : int32_t {
  kValid = 0,
  kSame = 1,
};

struct ConvWindow {
  int32_t kernel_h;
  int32_t kernel_w;
  int32_t stride_h;
  int32_t stride_w;
  int32_t dilation_h;
  int32_t dilation_w;
  Padding padding;
};

struct ConvGeometry {
  int32_t out_h;
  int32_t out_w;
  int32_t pad_top;   // rows of implicit zeros before the input (SAME); the rest of pad_total goes after
  int32_t pad_left;
};

// TensorFlow's rule, per spatial axis with effective kernel ek = (k - 1) * dilation + 1:
//   VALID: out = (in - ek) / stride + 1 (kBadShape if in < ek), pad = 0;
//   SAME:  out = ceil(in / stride), pad_total = max((out - 1) * stride + ek - in, 0), pad_before = pad_total / 2.
Status ComputeConvGeometry(int32_t in_h, int32_t in_w, const ConvWindow& window, ConvGeometry* geometry);

struct Conv2DShape {
  int32_t batch;
  int32_t in_h;
  int32_t in_w;
  int32_t in_c;
  int32_t out_c;
};

struct DepthwiseShape {
  int32_t batch;
  int32_t in_h;
  int32_t in_w;
  int32_t in_c;
  int32_t depth_multiplier;
};

// The activation a forward kernel applies to z (a frozen layer's forward then needs no activation-sized tensor
// between the conv and its activation).
enum class Activation : int32_t {
  kLinear = 0,
  kRelu = 1,  // max(z, 0)
};

// Conv2D forward: out[b, oy, ox, o] = act(sum over taps in the input and c of x[b, iy, ix, c] * w[ky, kx, c, o]
// + bias[o]); taps in the padding add nothing, the bias is added after the sum (as TensorFlow's BiasAdd). bias
// may be null.
Status Conv2DForward(const Conv2DShape& shape, const ConvWindow& window, const float* x, const float* w,
                     const float* bias, Activation activation, float* out);

// DepthwiseConv2D forward: out[b, oy, ox, c * dm + m] = act(sum over taps of x[b, iy, ix, c] * w[ky, kx, c, m]
// + bias[c * dm + m]).
Status DepthwiseConv2DForward(const DepthwiseShape& shape, const ConvWindow& window, const float* x,
                              const float* w, const float* bias, Activation activation, float* out);

// Global average pooling after a conv: out[b, c] = (sum over positions p, in order, of x[b, p, c]) / positions
// (x [batch, positions, channels], the spatial axes flattened; TensorFlow's reduce_mean: the sum, then divided).
Status GlobalAveragePool(const float* x, int32_t batch, int32_t positions, int32_t channels, float* out);

// A conv -> ReLU -> global average pooling whose conv is trained, run sample by sample with its input recomputed
// for the backward (converters/step.py, "recompute"): the ReLU's output is kept only as one bit per element,
// bit i (word i / 32, bit i % 32) set where out[i] > 0, MaskWords(n) 32-bit words for n elements.
constexpr int64_t MaskWords(int64_t elements) { return elements > 0 ? (elements + 31) / 32 : 0; }
Status PositiveMask(const float* out, int64_t n, uint32_t* mask);

// The error such a block passes to its conv, for one sample: the pooling's gradient g [channels] (already divided
// by the positions, as the graph computes it) broadcast over the positions, through the ReLU's backward:
// delta[p * channels + c] = bit (p * channels + c) of mask ? g[c] : +0 (what TINYPROP_RELU_BACKWARD gives).
Status MaskedDelta(const float* g, const uint32_t* mask, int32_t positions, int32_t channels, float* delta);

// Reference Conv2D backward (every output channel; overwrites dw, dx, db).
Status Conv2DBackwardReference(const Conv2DShape& shape, const ConvWindow& window, const float* x,
                               const float* w, const float* delta, float* dw, float* dx, float* db);

// Channel-sparse Conv2D backward: sample b contributes to dW[..., o] and to dx[b] only through its kept output
// channels o (kept.k[b] in [0, out_c]); cost scales with k / out_c. bias/mode as DenseBackwardSparse.
Status Conv2DBackwardSparse(const Conv2DShape& shape, const ConvWindow& window, const float* x, const float* w,
                            const float* delta, const KeptSet& kept, BiasGrad bias, Accumulate mode, float* dw,
                            float* dx, float* db);

// Reference DepthwiseConv2D backward (overwrites dw, dx, db).
Status DepthwiseConv2DBackwardReference(const DepthwiseShape& shape, const ConvWindow& window, const float* x,
                                        const float* w, const float* delta, float* dw, float* dx, float* db);

// Channel-sparse DepthwiseConv2D backward over the in_c * dm output channels (kept.k[b] in [0, in_c * dm]).
Status DepthwiseConv2DBackwardSparse(const DepthwiseShape& shape, const ConvWindow& window, const float* x,
                                     const float* w, const float* delta, const KeptSet& kept, BiasGrad bias,
                                     Accumulate mode, float* dw, float* dx, float* db);

}  // namespace tinyprop

#endif  // TINYPROP_CONV_H_
