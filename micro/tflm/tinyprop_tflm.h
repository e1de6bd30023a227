// Thin TensorFlow Lite Micro glue: TinyProp kernels as TFLM custom operators.
//
// Builds only when CMake is given a TFLM tree (-DTINYPROP_TFLM_DIR=/path/to/tflite-micro, plus
// -DTINYPROP_TFLM_INCLUDE_DIRS for flatbuffers etc.); TFLM is not part of this repository. The TFLM API moves:
// the operators use only what TFLM's own reference kernels use (TFLMRegistration, tflite::micro::RegisterOp,
// AllocatePersistentBuffer, MicroContext's temp tensors, RequestScratchBufferInArena, GetEvalInput/GetEvalOutput).
//
// Each operator is shaped like TFLM's reference kernels (fully_connected.cc): Init allocates its OpData in the
// arena's persistent memory, Prepare checks every tensor's type and shape and the parameter tensors (params,
// wanted, window, hyper, lr: constant tensors of the exported graph, read once) and fills OpData, so a malformed
// graph fails AllocateTensors with TFLM's "Node TINYPROP_... failed to prepare" and the failed check; Eval only
// fetches the tensors and runs the kernel of micro/src (the kernels validate the index data k, kept per invoke).
//
//   tflite::MicroMutableOpResolver<8> resolver;
//   TFLMRegistration select = tinyprop::tflm::Register_TINYPROP_SELECT_UNITS();
//   resolver.AddCustom(tinyprop::tflm::kSelectUnitsOp, &select);  // AddCustom copies the registration
//
// Operators (all tensors float32 unless noted, shapes as the kernels in micro/include/tinyprop):
//   TINYPROP_DENSE_FORWARD     in: x [B, I], w [I, O], optional bias [O]   out: z [B, O] = x . w (+ bias)
//                              (reads the kernel in Keras' [I, O] layout: no transposed copy, unlike BATCH_MATMUL,
//                              which keeps one per op in persistent arena memory)
//   TINYPROP_RELU_BACKWARD     in: g, out (ReLU's output), same shape   out: g where out > 0, else +0 (TF's
//                              ReluGrad, a select: +0 and no NaN where the unit is off, unlike g * mask; one op: no
//                              mask tensor that a converter could compute early and keep alive)
//   TINYPROP_SELECT_UNITS      in: delta [B, N], ymax [1], params [11] (SelectParam below, constant),
//                                  optional mode int32 (1 = training invoke)
//                              out: ymax_out [1] (in the in-place graph: the ymax state tensor itself), k [B] int32,
//                                   kept [B, N] int32 (ascending rows, -1 padded). When mode is given and not 1:
//                                   k = 0, kept = -1, ymax unchanged (the backward ops then do no work).
//   TINYPROP_DENSE_BACKWARD    in: x [B, I], w [I, O], delta [B, O], k [B] int32, kept [B, O] int32,
//                                  optional wanted [3] int32 (dw, dx, db: 0 = skip, output left unwritten and
//                                  its shape unchecked: the graph can make it one element)
//                              out: dw [I, O], dx [B, I], db [O]   (bias gradient dense, TinyProp's rule)
//   TINYPROP_DENSE_BACKWARD_SGD  in: x, w, delta, k, kept, wanted [3] (wanted[0] must be 1; wanted[2] = has bias),
//                                  lr [1], mode int32, optional bias [O]
//                              out: w, dx [B, I], bias: outputs 0 and 2 are inputs 1 and 8 themselves (the
//                                   weights, updated in place on a training invoke: w -= dW * lr, bias -= db * lr;
//                                   dx from the weights before the update; no dW or second weight copy exists)
//   TINYPROP_SELECT_CHANNELS   in: delta [B, positions..., C], ymax [1], params [11], optional mode as SELECT_UNITS
//                              out: ymax_out [1], k [B] int32, kept [B, C] int32 (score = sum of |delta| over
//                                   the positions per channel)
//   TINYPROP_CONV2D_FORWARD    in: x [B, H, W, C], w [KH, KW, C, O], window [7] int32 (WindowParam: strides,
//                                  dilations, padding, activation 0 linear / 1 ReLU, train_only), optional bias
//                                  [O], then the mode when train_only (on an inference invoke z is not written)
//                              out: z [B, OH, OW, O] = act(conv(x, w) + bias) (Keras' kernel layout; the activation
//                                   fused: no tensor between conv and ReLU; none of TFLM CONV_2D's per-op
//                                   persistent data: 2 x 4 B per channel of quantization arrays a float model
//                                   never reads, held by every op, also every op of a frozen prefix streamed
//                                   sample by sample)
//   TINYPROP_DEPTHWISE_FORWARD as CONV2D_FORWARD with w [KH, KW, C, DM], z [..., C * DM]
//   TINYPROP_GLOBAL_AVERAGE_POOL  in: x [B, positions..., C]   out: [B, C] or [B, 1.., C] = the mean over the
//                              positions (TFLM's MEAN over those axes costs ~15x the instructions)
//   TINYPROP_CONV2D_BACKWARD   in: x [B, H, W, C], w [KH, KW, C, O], delta [B, OH, OW, O], k [B], kept [B, O],
//                                  window [7] int32 (WindowParam, activation 0), optional wanted [3] int32 as
//                                  DENSE_BACKWARD
//                              out: dw, dx, db
//   TINYPROP_DEPTHWISE_BACKWARD  as CONV2D_BACKWARD with w [KH, KW, C, DM], delta [..., C * DM], kept [B, C * DM]
//   The recomputed conv -> ReLU -> global average pooling block (a trained conv whose input is recomputed per
//   sample for its backward; its ReLU output is kept only as a mask, int32 [B, MaskWords(OH * OW * O)] of bits
//   out > 0, micro/include/tinyprop/conv.h):
//   TINYPROP_CONV2D_POOL_FORWARD   in: x [B, H, W, C], w [KH, KW, C, O], window [7] (activation 1: ReLU),
//                                  optional bias [O]
//                              out: pooled [B, O] (TINYPROP_GLOBAL_AVERAGE_POOL of the ReLU output, which lives
//                                   only in scratch), mask [B, words]
//   TINYPROP_SELECT_CHANNELS_MASKED  in: g [B, O] (the pooling's input gradient per channel, divided by the
//                                  positions), mask [B, words], positions [1] int32, ymax [1], params [8], mode
//                              out: as SELECT_CHANNELS on delta = g broadcast over the positions where the mask
//                                   is set, +0 elsewhere (what RELU_BACKWARD gives), bit for bit
//   TINYPROP_CONV2D_BACKWARD_MASKED  in: x [1, H, W, C] (sample `sample`'s input), w, g [B, O], mask [B, words],
//                                  k [B], kept [B, O], window [7] (activation 0), sample [1] int32, wanted [3]
//                                  (wanted[1], dx, must be 0), then optionally dw_in, db_in (the sums of the
//                                  samples before)
//                              out: dw, dx (unwritten), db: dw_in + this sample's dW (CONV2D_BACKWARD's kernel
//                                   with Accumulate::kAdd: chained over the samples in order, the batched op's
//                                   bits), db likewise; without dw_in / db_in this sample's alone
//   TINYPROP_APPLY_GRADIENT    in: w, g (same size), mode int32, hyper [7] = (rule 0 SGD | 1 momentum | 2 Nesterov
//                                  | 3 Adam, lr, momentum or beta_1, beta_2, epsilon, 1 - beta_1, 1 - beta_2),
//                                  then the rule's state: velocity (momentum, Nesterov) or m, v, powers [2] =
//                                  (beta_1^t, beta_2^t) (Adam)
//                              out: w, then velocity or m, v: each its input itself (updated in place on a
//                                   training invoke, Keras 3's rules: micro/include/tinyprop/optimizer.h)
//   TINYPROP_COUNT_STEP        in: counter int32 [1], mode   out: counter itself, + 1 on a training invoke
//   TINYPROP_ASSIGN            in: state, value (same type and size), mode   out: state itself = value on a
//                                  training invoke
// Prepare checks that each in-place output is its input tensor itself: the exporter makes them TFLM variable
// tensors (persistent, never planned) that are also model outputs, so the application reads and writes the
// training state through interpreter.output(i) (converters/device_ops.py, `in_place_state`; the training app's
// micro/app/tflm/output_tensor_state.h).
// Errors of the kernels (tinyprop::Status) become kTfLiteError with the status name printed.
#ifndef TINYPROP_TFLM_TINYPROP_TFLM_H_
#define TINYPROP_TFLM_TINYPROP_TFLM_H_

#include "tensorflow/lite/micro/micro_common.h"

namespace tinyprop {
namespace tflm {

constexpr const char kDenseForwardOp[] = "TINYPROP_DENSE_FORWARD";
constexpr const char kReluBackwardOp[] = "TINYPROP_RELU_BACKWARD";
constexpr const char kSelectUnitsOp[] = "TINYPROP_SELECT_UNITS";
constexpr const char kDenseBackwardOp[] = "TINYPROP_DENSE_BACKWARD";
constexpr const char kDenseBackwardSgdOp[] = "TINYPROP_DENSE_BACKWARD_SGD";
constexpr const char kConv2DForwardOp[] = "TINYPROP_CONV2D_FORWARD";
constexpr const char kDepthwiseForwardOp[] = "TINYPROP_DEPTHWISE_FORWARD";
constexpr const char kGlobalAveragePoolOp[] = "TINYPROP_GLOBAL_AVERAGE_POOL";
constexpr const char kConv2DBackwardOp[] = "TINYPROP_CONV2D_BACKWARD";
constexpr const char kSelectChannelsOp[] = "TINYPROP_SELECT_CHANNELS";
constexpr const char kDepthwiseBackwardOp[] = "TINYPROP_DEPTHWISE_BACKWARD";
constexpr const char kApplyGradientOp[] = "TINYPROP_APPLY_GRADIENT";
constexpr const char kCountStepOp[] = "TINYPROP_COUNT_STEP";
constexpr const char kAssignOp[] = "TINYPROP_ASSIGN";
constexpr const char kConv2DPoolForwardOp[] = "TINYPROP_CONV2D_POOL_FORWARD";
constexpr const char kSelectChannelsMaskedOp[] = "TINYPROP_SELECT_CHANNELS_MASKED";
constexpr const char kConv2DBackwardMaskedOp[] = "TINYPROP_CONV2D_BACKWARD_MASKED";

// The layouts of the operators' parameter tensors, slot by slot (the exporter writes them: converters/step.py).
// The selection ops' params tensor (float32): converters/device_ops.py SELECT_PARAMS, the fields of
// tinyprop::RatioParams (rounding and min_kept as exact small integers).
enum SelectParam : int {
  kSMin,
  kSMax,
  kZetaPow,
  kRounding,      // 0 floor, 1 half to even
  kReference,     // 0 running maximum, 1 running mean, 2 running quantile
  kDecay,
  kPerSampleMax,  // 0 or 1
  kMinKept,
  kSkipBelow,     // 0: none; else a sample with y / R below it is skipped (k = 0)
  kQuantileShare,  // the running quantile's share (0 for the other references)
  kQuantileRate,   // and how far one step moves it
  kSelectParamCount
};

// The backward ops' wanted tensor (int32): 0 skips that output (left unwritten, any shape).
enum WantedOutput : int { kWantDw, kWantDx, kWantDb, kWantedCount };

// The conv ops' window tensor (int32; converters/device_ops.py WINDOW_PARAMS).
enum WindowParam : int {
  kStrideH,
  kStrideW,
  kDilationH,
  kDilationW,
  kPadding,     // 0 VALID, 1 SAME
  kActivation,  // the forward ops: tinyprop::Activation (0 linear, 1 ReLU); 0 in the backward ops
  kTrainOnly,   // the conv forward ops: 1 = the last input is the mode, nothing is computed on an inference
                // invoke (a prefix recomputed for a backward); 0 in the other ops
  kWindowParamCount
};

// TINYPROP_APPLY_GRADIENT's hyper tensor (float32).
enum HyperParam : int {
  kRule,  // 0 SGD, 1 momentum, 2 Nesterov, 3 Adam (converters/device_ops.py APPLY_RULES)
  kLearningRate,
  kMomentumOrBeta1,
  kBeta2,
  kEpsilon,
  kOneMinusBeta1,  // float32(1 - beta_1), 1 - beta_1 taken in double as Keras does
  kOneMinusBeta2,
  kHyperParamCount
};

TFLMRegistration Register_TINYPROP_DENSE_FORWARD();
TFLMRegistration Register_TINYPROP_RELU_BACKWARD();
TFLMRegistration Register_TINYPROP_SELECT_UNITS();
TFLMRegistration Register_TINYPROP_DENSE_BACKWARD();
TFLMRegistration Register_TINYPROP_DENSE_BACKWARD_SGD();
TFLMRegistration Register_TINYPROP_CONV2D_FORWARD();
TFLMRegistration Register_TINYPROP_DEPTHWISE_FORWARD();
TFLMRegistration Register_TINYPROP_GLOBAL_AVERAGE_POOL();
TFLMRegistration Register_TINYPROP_CONV2D_BACKWARD();
TFLMRegistration Register_TINYPROP_SELECT_CHANNELS();
TFLMRegistration Register_TINYPROP_DEPTHWISE_BACKWARD();
TFLMRegistration Register_TINYPROP_APPLY_GRADIENT();
TFLMRegistration Register_TINYPROP_COUNT_STEP();
TFLMRegistration Register_TINYPROP_ASSIGN();
TFLMRegistration Register_TINYPROP_CONV2D_POOL_FORWARD();
TFLMRegistration Register_TINYPROP_SELECT_CHANNELS_MASKED();
TFLMRegistration Register_TINYPROP_CONV2D_BACKWARD_MASKED();

// Registers every TinyProp operator above with a MicroMutableOpResolver (AddCustom copies each registration).
template <typename Resolver>
TfLiteStatus AddTinyPropOps(Resolver& resolver) {
  struct Op {
    const char* name;
    TFLMRegistration (*make)();
  };
  static constexpr Op kOps[] = {
      {kDenseForwardOp, Register_TINYPROP_DENSE_FORWARD},
      {kReluBackwardOp, Register_TINYPROP_RELU_BACKWARD},
      {kSelectUnitsOp, Register_TINYPROP_SELECT_UNITS},
      {kDenseBackwardOp, Register_TINYPROP_DENSE_BACKWARD},
      {kDenseBackwardSgdOp, Register_TINYPROP_DENSE_BACKWARD_SGD},
      {kConv2DForwardOp, Register_TINYPROP_CONV2D_FORWARD},
      {kDepthwiseForwardOp, Register_TINYPROP_DEPTHWISE_FORWARD},
      {kGlobalAveragePoolOp, Register_TINYPROP_GLOBAL_AVERAGE_POOL},
      {kConv2DBackwardOp, Register_TINYPROP_CONV2D_BACKWARD},
      {kSelectChannelsOp, Register_TINYPROP_SELECT_CHANNELS},
      {kDepthwiseBackwardOp, Register_TINYPROP_DEPTHWISE_BACKWARD},
      {kApplyGradientOp, Register_TINYPROP_APPLY_GRADIENT},
      {kCountStepOp, Register_TINYPROP_COUNT_STEP},
      {kAssignOp, Register_TINYPROP_ASSIGN},
      {kConv2DPoolForwardOp, Register_TINYPROP_CONV2D_POOL_FORWARD},
      {kSelectChannelsMaskedOp, Register_TINYPROP_SELECT_CHANNELS_MASKED},
      {kConv2DBackwardMaskedOp, Register_TINYPROP_CONV2D_BACKWARD_MASKED},
  };
  for (const Op& op : kOps) {
    TFLMRegistration registration = op.make();
    if (resolver.AddCustom(op.name, &registration) != kTfLiteOk) return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace tflm
}  // namespace tinyprop

#endif  // TINYPROP_TFLM_TINYPROP_TFLM_H_
