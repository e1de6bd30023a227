// TFLM custom operators wrapping the TinyProp kernels (see tinyprop_tflm.h). Prepare checks tensor types and
// ranks; shapes and index data are validated by the kernels themselves on every Eval.
#include "tinyprop_tflm.h"

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tinyprop/tinyprop.h"

namespace tinyprop {
namespace tflm {
namespace {

using tflite::micro::GetEvalInput;
using tflite::micro::GetEvalOutput;

int32_t Dim(const TfLiteEvalTensor* t, int i) {
  return (t->dims != nullptr && i < t->dims->size) ? t->dims->data[i] : -1;
}
int Rank(const TfLiteEvalTensor* t) { return t->dims != nullptr ? t->dims->size : -1; }

TfLiteStatus ToTfLite(Status s, const char* op) {
  if (s == Status::kOk) return kTfLiteOk;
  MicroPrintf("%s: %s", op, StatusName(s));
  return kTfLiteError;
}

// Checks input/output counts and that every tensor has the expected type.
TfLiteStatus CheckTypes(TfLiteContext* context, TfLiteNode* node, const TfLiteType* in, int n_in,
                        const TfLiteType* out, int n_out) {
  TF_LITE_ENSURE_EQ(context, node->inputs->size, n_in);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, n_out);
  for (int i = 0; i < n_in; ++i) TF_LITE_ENSURE_EQ(context, GetEvalInput(context, node, i)->type, in[i]);
  for (int i = 0; i < n_out; ++i) TF_LITE_ENSURE_EQ(context, GetEvalOutput(context, node, i)->type, out[i]);
  return kTfLiteOk;
}

// ---- TINYPROP_SELECT_UNITS -------------------------------------------------------------------------------
constexpr TfLiteType kSelectIn[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32};
constexpr TfLiteType kSelectOut[] = {kTfLiteFloat32, kTfLiteInt32, kTfLiteInt32};

TfLiteStatus SelectPrepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_OK(context, CheckTypes(context, node, kSelectIn, 3, kSelectOut, 3));
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, 0);
  TF_LITE_ENSURE_EQ(context, Rank(delta), 2);
  // y [B] lives in the arena's scratch space.
  int scratch_index = -1;
  TF_LITE_ENSURE_OK(context, context->RequestScratchBufferInArena(
                                 context, static_cast<size_t>(Dim(delta, 0)) * sizeof(float), &scratch_index));
  node->user_data = reinterpret_cast<void*>(static_cast<intptr_t>(scratch_index));
  return kTfLiteOk;
}

TfLiteStatus SelectEval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* ymax = GetEvalInput(context, node, 1);
  const TfLiteEvalTensor* params = GetEvalInput(context, node, 2);
  TfLiteEvalTensor* ymax_out = GetEvalOutput(context, node, 0);
  TfLiteEvalTensor* k = GetEvalOutput(context, node, 1);
  TfLiteEvalTensor* kept = GetEvalOutput(context, node, 2);
  const int32_t batch = Dim(delta, 0), n = Dim(delta, 1);
  if (Dim(params, 0) != 4 || Dim(ymax, 0) != 1 || Dim(ymax_out, 0) != 1 || Dim(k, 0) != batch ||
      Dim(kept, 0) != batch || Dim(kept, 1) != n) {
    return ToTfLite(Status::kBadShape, kSelectUnitsOp);
  }
  const float* p = params->data.f;
  const RatioParams rp{p[0], p[1], p[2], p[3] == 1.0f ? Rounding::kHalfEven : Rounding::kFloor};
  float m = ymax->data.f[0];
  const int scratch_index = static_cast<int>(reinterpret_cast<intptr_t>(node->user_data));
  float* scratch = static_cast<float*>(context->GetScratchBuffer(context, scratch_index));
  const Status s = SelectUnits(delta->data.f, batch, n, rp, &m, k->data.i32, kept->data.i32, scratch,
                               SelectUnitsScratchSize(batch));
  ymax_out->data.f[0] = m;
  return ToTfLite(s, kSelectUnitsOp);
}

// ---- TINYPROP_DENSE_BACKWARD -----------------------------------------------------------------------------
constexpr TfLiteType kDenseIn[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32, kTfLiteInt32, kTfLiteInt32,
                                   kTfLiteInt32};
constexpr TfLiteType kGradOut[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32};

// Optional last input "wanted" [3] int32: 0 skips dW, dx or db (their outputs are then left unwritten), e.g. dx
// of the first layer, which nothing consumes.
TfLiteStatus DensePrepare(TfLiteContext* context, TfLiteNode* node) {
  const int n_in = node->inputs->size == 6 ? 6 : 5;
  return CheckTypes(context, node, kDenseIn, n_in, kGradOut, 3);
}

TfLiteStatus DenseEval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* x = GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* w = GetEvalInput(context, node, 1);
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, 2);
  const TfLiteEvalTensor* k = GetEvalInput(context, node, 3);
  const TfLiteEvalTensor* kept = GetEvalInput(context, node, 4);
  TfLiteEvalTensor* dw = GetEvalOutput(context, node, 0);
  TfLiteEvalTensor* dx = GetEvalOutput(context, node, 1);
  TfLiteEvalTensor* db = GetEvalOutput(context, node, 2);
  const DenseShape shape{Dim(x, 0), Dim(x, 1), Dim(w, 1)};
  if (Dim(w, 0) != shape.in || Dim(delta, 0) != shape.batch || Dim(delta, 1) != shape.out ||
      Dim(k, 0) != shape.batch || Dim(kept, 0) != shape.batch || Dim(kept, 1) != shape.out ||
      Dim(dw, 0) != shape.in || Dim(dw, 1) != shape.out || Dim(dx, 0) != shape.batch || Dim(dx, 1) != shape.in ||
      Dim(db, 0) != shape.out) {
    return ToTfLite(Status::kBadShape, kDenseBackwardOp);
  }
  bool want[3] = {true, true, true};
  if (node->inputs->size == 6) {
    const TfLiteEvalTensor* wanted = GetEvalInput(context, node, 5);
    if (Dim(wanted, 0) != 3) return ToTfLite(Status::kBadShape, kDenseBackwardOp);
    for (int i = 0; i < 3; ++i) want[i] = wanted->data.i32[i] != 0;
  }
  return ToTfLite(DenseBackwardSparse(shape, x->data.f, w->data.f, delta->data.f,
                                      KeptSet{k->data.i32, kept->data.i32, shape.out}, BiasGrad::kDense,
                                      Accumulate::kOverwrite, want[0] ? dw->data.f : nullptr,
                                      want[1] ? dx->data.f : nullptr, want[2] ? db->data.f : nullptr),
                  kDenseBackwardOp);
}

// ---- TINYPROP_CONV2D_BACKWARD ----------------------------------------------------------------------------
constexpr TfLiteType kConvIn[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32,
                                  kTfLiteInt32,   kTfLiteInt32,   kTfLiteInt32};

TfLiteStatus ConvPrepare(TfLiteContext* context, TfLiteNode* node) {
  return CheckTypes(context, node, kConvIn, 6, kGradOut, 3);
}

TfLiteStatus ConvEval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* x = GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* w = GetEvalInput(context, node, 1);
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, 2);
  const TfLiteEvalTensor* k = GetEvalInput(context, node, 3);
  const TfLiteEvalTensor* kept = GetEvalInput(context, node, 4);
  const TfLiteEvalTensor* window = GetEvalInput(context, node, 5);
  TfLiteEvalTensor* dw = GetEvalOutput(context, node, 0);
  TfLiteEvalTensor* dx = GetEvalOutput(context, node, 1);
  TfLiteEvalTensor* db = GetEvalOutput(context, node, 2);
  if (Rank(x) != 4 || Rank(w) != 4 || Rank(delta) != 4 || Dim(window, 0) != 7) {
    return ToTfLite(Status::kBadShape, kConv2DBackwardOp);
  }
  const int32_t* v = window->data.i32;
  const Conv2DShape shape{Dim(x, 0), Dim(x, 1), Dim(x, 2), Dim(x, 3), Dim(w, 3)};
  const ConvWindow win{Dim(w, 0), Dim(w, 1), v[0], v[1], v[2], v[3], v[4] == 1 ? Padding::kSame : Padding::kValid};
  ConvGeometry g{};
  const Status gs = ComputeConvGeometry(shape.in_h, shape.in_w, win, &g);
  if (gs != Status::kOk) return ToTfLite(gs, kConv2DBackwardOp);
  if (Dim(w, 2) != shape.in_c || Dim(delta, 0) != shape.batch || Dim(delta, 1) != g.out_h ||
      Dim(delta, 2) != g.out_w || Dim(delta, 3) != shape.out_c || Dim(k, 0) != shape.batch ||
      Dim(kept, 0) != shape.batch || Dim(kept, 1) != shape.out_c || Rank(dw) != 4 || Rank(dx) != 4 ||
      Dim(db, 0) != shape.out_c) {
    return ToTfLite(Status::kBadShape, kConv2DBackwardOp);
  }
  for (int i = 0; i < 4; ++i) {
    if (Dim(dw, i) != Dim(w, i) || Dim(dx, i) != Dim(x, i)) return ToTfLite(Status::kBadShape, kConv2DBackwardOp);
  }
  return ToTfLite(Conv2DBackwardSparse(shape, win, x->data.f, w->data.f, delta->data.f,
                                       KeptSet{k->data.i32, kept->data.i32, shape.out_c}, BiasGrad::kDense,
                                       Accumulate::kOverwrite, dw->data.f, dx->data.f, db->data.f),
                  kConv2DBackwardOp);
}

}  // namespace

TFLMRegistration Register_TINYPROP_SELECT_UNITS() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, SelectPrepare, SelectEval);
}

TFLMRegistration Register_TINYPROP_DENSE_BACKWARD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, DensePrepare, DenseEval);
}

TFLMRegistration Register_TINYPROP_CONV2D_BACKWARD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, ConvPrepare, ConvEval);
}

}  // namespace tflm
}  // namespace tinyprop
