// TFLM custom operators wrapping the TinyProp kernels (see tinyprop_tflm.h). Prepare checks tensor types and
// ranks; shapes and index data are validated by the kernels themselves on every Eval.
#include "tinyprop_tflm.h"

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/memory_helpers.h"
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

// The step's mode input (int32 scalar or [1]): 1 is a training invoke, anything else inference.
bool Training(const TfLiteEvalTensor* mode) { return mode->data.i32[0] == 1; }

// Whether output `out` of the node is its input `in` (the same state tensor: updated in place).
bool InPlace(TfLiteContext* context, TfLiteNode* node, int out, int in) {
  return node->outputs->data[out] == node->inputs->data[in] &&
         GetEvalOutput(context, node, out)->data.raw == GetEvalInput(context, node, in)->data.raw;
}

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

// ---- TINYPROP_DENSE_FORWARD ---------------------------------------------------------------------------------
constexpr TfLiteType kForwardTypes[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32};

TfLiteStatus DenseForwardPrepare(TfLiteContext* context, TfLiteNode* node) {
  const int n_in = node->inputs->size == 3 ? 3 : 2;
  return CheckTypes(context, node, kForwardTypes, n_in, kForwardTypes, 1);
}

TfLiteStatus DenseForwardEval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* x = GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* w = GetEvalInput(context, node, 1);
  const TfLiteEvalTensor* bias = node->inputs->size == 3 ? GetEvalInput(context, node, 2) : nullptr;
  TfLiteEvalTensor* z = GetEvalOutput(context, node, 0);
  const DenseShape shape{Dim(x, 0), Dim(x, 1), Dim(w, 1)};
  if (Rank(x) != 2 || Rank(w) != 2 || Rank(z) != 2 || Dim(w, 0) != shape.in || Dim(z, 0) != shape.batch ||
      Dim(z, 1) != shape.out || (bias != nullptr && (Rank(bias) != 1 || Dim(bias, 0) != shape.out))) {
    return ToTfLite(Status::kBadShape, kDenseForwardOp);
  }
  return ToTfLite(DenseForward(shape, x->data.f, w->data.f, bias != nullptr ? bias->data.f : nullptr, z->data.f),
                  kDenseForwardOp);
}

// ---- TINYPROP_RELU_BACKWARD --------------------------------------------------------------------------------
constexpr TfLiteType kReluTypes[] = {kTfLiteFloat32, kTfLiteFloat32};

TfLiteStatus ReluBackwardPrepare(TfLiteContext* context, TfLiteNode* node) {
  return CheckTypes(context, node, kReluTypes, 2, kReluTypes, 1);
}

int64_t Elements(const TfLiteEvalTensor* t) {
  int64_t n = 1;
  for (int i = 0; i < Rank(t); ++i) n *= Dim(t, i);
  return n;
}

TfLiteStatus ReluBackwardEval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* g = GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* out = GetEvalInput(context, node, 1);
  TfLiteEvalTensor* d = GetEvalOutput(context, node, 0);
  const int64_t n = Elements(g);
  bool same = Rank(g) == Rank(out) && Rank(g) == Rank(d);
  for (int i = 0; same && i < Rank(g); ++i) same = Dim(g, i) == Dim(out, i) && Dim(g, i) == Dim(d, i);
  if (!same || n > INT32_MAX) return ToTfLite(Status::kBadShape, kReluBackwardOp);
  return ToTfLite(ReluBackward(g->data.f, out->data.f, static_cast<int32_t>(n), d->data.f), kReluBackwardOp);
}

// ---- TINYPROP_SELECT_UNITS (delta [B, N]), TINYPROP_SELECT_CHANNELS (delta [B, positions..., C]) -------------
// Channels: one score per (sample, channel) = sum of |delta| over the positions. Scratch (arena): y [B] for
// units; scores [B, C] and y [B] for channels.
constexpr TfLiteType kSelectIn[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32, kTfLiteInt32};
constexpr TfLiteType kSelectOut[] = {kTfLiteFloat32, kTfLiteInt32, kTfLiteInt32};

int64_t Positions(const TfLiteEvalTensor* t) {
  int64_t p = 1;
  for (int i = 1; i + 1 < Rank(t); ++i) p *= Dim(t, i);
  return p;
}

template <bool kChannels>
int64_t SelectScratchFloats(const TfLiteEvalTensor* delta) {
  const int32_t batch = Dim(delta, 0), n = Dim(delta, Rank(delta) - 1);
  return kChannels ? SelectChannelsScratchSize(batch, n) : SelectUnitsScratchSize(batch);
}

template <bool kChannels>
TfLiteStatus SelectPrepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_OK(context, CheckTypes(context, node, kSelectIn, node->inputs->size == 4 ? 4 : 3, kSelectOut, 3));
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, 0);
  TF_LITE_ENSURE(context, kChannels ? Rank(delta) >= 3 : Rank(delta) == 2);
  int scratch_index = -1;
  TF_LITE_ENSURE_OK(context, context->RequestScratchBufferInArena(
                                 context, static_cast<size_t>(SelectScratchFloats<kChannels>(delta)) * sizeof(float),
                                 &scratch_index));
  node->user_data = reinterpret_cast<void*>(static_cast<intptr_t>(scratch_index));
  return kTfLiteOk;
}

template <bool kChannels>
TfLiteStatus SelectEval(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kChannels ? kSelectChannelsOp : kSelectUnitsOp;
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* ymax = GetEvalInput(context, node, 1);
  const TfLiteEvalTensor* params = GetEvalInput(context, node, 2);
  TfLiteEvalTensor* ymax_out = GetEvalOutput(context, node, 0);
  TfLiteEvalTensor* k = GetEvalOutput(context, node, 1);
  TfLiteEvalTensor* kept = GetEvalOutput(context, node, 2);
  const int32_t batch = Dim(delta, 0), n = Dim(delta, Rank(delta) - 1);
  const int64_t positions = Positions(delta);
  if (positions > INT32_MAX || Dim(params, 0) != kSelectParamCount || Dim(ymax, 0) != 1 || Dim(ymax_out, 0) != 1 ||
      Dim(k, 0) != batch || Dim(kept, 0) != batch || Dim(kept, 1) != n) {
    return ToTfLite(Status::kBadShape, op);
  }
  if (node->inputs->size == 4 && !Training(GetEvalInput(context, node, 3))) {
    // Not a training invoke: nothing kept (the backward ops then do no work) and the running max unchanged.
    for (int32_t b = 0; b < batch; ++b) k->data.i32[b] = 0;
    for (int64_t e = 0; e < static_cast<int64_t>(batch) * n; ++e) kept->data.i32[e] = -1;
    ymax_out->data.f[0] = ymax->data.f[0];
    return kTfLiteOk;
  }
  const float* p = params->data.f;
  const RatioParams rp{p[kSMin],
                       p[kSMax],
                       p[kZetaPow],
                       p[kRounding] == 1.0f ? Rounding::kHalfEven : Rounding::kFloor,
                       p[kReference] == 1.0f ? Reference::kMean : Reference::kMax,
                       p[kDecay],
                       p[kPerSampleMax] == 1.0f,
                       static_cast<int32_t>(p[kMinKept])};
  float m = ymax->data.f[0];
  const int scratch_index = static_cast<int>(reinterpret_cast<intptr_t>(node->user_data));
  float* scratch = static_cast<float*>(context->GetScratchBuffer(context, scratch_index));
  const int64_t scratch_len = SelectScratchFloats<kChannels>(delta);
  const Status s = kChannels ? SelectChannels(delta->data.f, batch, static_cast<int32_t>(positions), n, rp, &m,
                                              k->data.i32, kept->data.i32, scratch, scratch_len)
                             : SelectUnits(delta->data.f, batch, n, rp, &m, k->data.i32, kept->data.i32, scratch,
                                           scratch_len);
  ymax_out->data.f[0] = m;  // ymax_out may be ymax itself (the in-place training state)
  return ToTfLite(s, op);
}

// Optional last input "wanted" [3] int32 of the backward ops: 0 skips dW, dx or db (that output is left
// unwritten), e.g. dx of the first layer, which nothing consumes.
TfLiteStatus ReadWanted(TfLiteContext* context, TfLiteNode* node, int index, bool want[3]) {
  want[0] = want[1] = want[2] = true;
  if (node->inputs->size <= index) return kTfLiteOk;
  const TfLiteEvalTensor* wanted = GetEvalInput(context, node, index);
  if (Dim(wanted, 0) != 3) return kTfLiteError;
  for (int i = 0; i < 3; ++i) want[i] = wanted->data.i32[i] != 0;
  return kTfLiteOk;
}

// ---- TINYPROP_DENSE_BACKWARD -----------------------------------------------------------------------------
constexpr TfLiteType kDenseIn[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32, kTfLiteInt32, kTfLiteInt32,
                                   kTfLiteInt32};
constexpr TfLiteType kGradOut[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32};

TfLiteStatus DensePrepare(TfLiteContext* context, TfLiteNode* node) {
  const int n_in = node->inputs->size == 6 ? 6 : 5;
  return CheckTypes(context, node, kDenseIn, n_in, kGradOut, 3);
}

// Inputs 0-5 and outputs 0-2 of the Dense backward ops, read and checked once: outputs dW-or-w_new [I, O],
// dx [B, I], db-or-b_new [O]. An output that is not wanted is never written, so the graph may give it any shape
// (one element: no arena).
struct DenseBackwardIo {
  const TfLiteEvalTensor* x;
  const TfLiteEvalTensor* w;
  const TfLiteEvalTensor* delta;
  const TfLiteEvalTensor* k;
  const TfLiteEvalTensor* kept;
  TfLiteEvalTensor* out[3];
  DenseShape shape;
  bool want[3];
};

bool ReadDenseBackwardIo(TfLiteContext* context, TfLiteNode* node, DenseBackwardIo* io) {
  io->x = GetEvalInput(context, node, 0);
  io->w = GetEvalInput(context, node, 1);
  io->delta = GetEvalInput(context, node, 2);
  io->k = GetEvalInput(context, node, 3);
  io->kept = GetEvalInput(context, node, 4);
  for (int i = 0; i < 3; ++i) io->out[i] = GetEvalOutput(context, node, i);
  io->shape = DenseShape{Dim(io->x, 0), Dim(io->x, 1), Dim(io->w, 1)};
  if (ReadWanted(context, node, 5, io->want) != kTfLiteOk) return false;
  const DenseShape& s = io->shape;
  return Dim(io->w, 0) == s.in && Dim(io->delta, 0) == s.batch && Dim(io->delta, 1) == s.out &&
         Dim(io->k, 0) == s.batch && Dim(io->kept, 0) == s.batch && Dim(io->kept, 1) == s.out &&
         (!io->want[0] || (Dim(io->out[0], 0) == s.in && Dim(io->out[0], 1) == s.out)) &&
         (!io->want[1] || (Dim(io->out[1], 0) == s.batch && Dim(io->out[1], 1) == s.in)) &&
         (!io->want[2] || Dim(io->out[2], 0) == s.out);
}

float* Wanted(const DenseBackwardIo& io, int i) { return io.want[i] ? io.out[i]->data.f : nullptr; }

TfLiteStatus DenseEval(TfLiteContext* context, TfLiteNode* node) {
  DenseBackwardIo io;
  if (!ReadDenseBackwardIo(context, node, &io)) return ToTfLite(Status::kBadShape, kDenseBackwardOp);
  return ToTfLite(DenseBackwardSparse(io.shape, io.x->data.f, io.w->data.f, io.delta->data.f,
                                      KeptSet{io.k->data.i32, io.kept->data.i32, io.shape.out}, BiasGrad::kDense,
                                      Accumulate::kOverwrite, Wanted(io, 0), Wanted(io, 1), Wanted(io, 2)),
                  kDenseBackwardOp);
}

// ---- TINYPROP_DENSE_BACKWARD_SGD --------------------------------------------------------------------------
// Inputs as DENSE_BACKWARD, then lr [1], mode and the optional bias [O]; outputs w (input 1 itself), dx, bias
// (input 8 itself, or one unused element). Scratch: DenseSgdScratchBytes(batch, in).
constexpr TfLiteType kDenseSgdIn[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32, kTfLiteInt32, kTfLiteInt32,
                                      kTfLiteInt32,   kTfLiteFloat32, kTfLiteInt32,   kTfLiteFloat32};

TfLiteStatus DenseSgdPrepare(TfLiteContext* context, TfLiteNode* node) {
  const int n_in = node->inputs->size == 9 ? 9 : 8;
  TF_LITE_ENSURE_OK(context, CheckTypes(context, node, kDenseSgdIn, n_in, kGradOut, 3));
  const TfLiteEvalTensor* x = GetEvalInput(context, node, 0);
  TF_LITE_ENSURE(context, Rank(x) == 2 && Dim(x, 0) >= 1 && Dim(x, 1) >= 1);
  int scratch_index = -1;
  TF_LITE_ENSURE_OK(context, context->RequestScratchBufferInArena(
                                 context, static_cast<size_t>(DenseSgdScratchBytes(Dim(x, 0), Dim(x, 1))),
                                 &scratch_index));
  node->user_data = reinterpret_cast<void*>(static_cast<intptr_t>(scratch_index));
  return kTfLiteOk;
}

TfLiteStatus DenseSgdEval(TfLiteContext* context, TfLiteNode* node) {
  DenseBackwardIo io;
  const TfLiteEvalTensor* lr = GetEvalInput(context, node, 6);
  const TfLiteEvalTensor* mode = GetEvalInput(context, node, 7);
  const bool has_bias = node->inputs->size == 9;
  const bool ok = ReadDenseBackwardIo(context, node, &io);
  if (!ok || !io.want[0] || io.want[2] != has_bias || Dim(lr, 0) != 1 ||
      (has_bias && Dim(GetEvalInput(context, node, 8), 0) != io.shape.out)) {
    return ToTfLite(Status::kBadShape, kDenseBackwardSgdOp);
  }
  if (!InPlace(context, node, 0, 1) || (has_bias && !InPlace(context, node, 2, 8))) {
    MicroPrintf("%s: outputs 0 and 2 must be inputs 1 and 8 (weights updated in place)", kDenseBackwardSgdOp);
    return kTfLiteError;
  }
  if (!Training(mode)) return kTfLiteOk;
  const int scratch_index = static_cast<int>(reinterpret_cast<intptr_t>(node->user_data));
  void* scratch = context->GetScratchBuffer(context, scratch_index);
  return ToTfLite(DenseBackwardSparseSgd(io.shape, io.x->data.f, io.out[0]->data.f,
                                         has_bias ? io.out[2]->data.f : nullptr, io.delta->data.f,
                                         KeptSet{io.k->data.i32, io.kept->data.i32, io.shape.out}, lr->data.f[0],
                                         Wanted(io, 1), scratch, DenseSgdScratchBytes(io.shape.batch, io.shape.in)),
                  kDenseBackwardSgdOp);
}

// ---- TINYPROP_CONV2D_BACKWARD, TINYPROP_DEPTHWISE_BACKWARD --------------------------------------------------
constexpr TfLiteType kConvIn[] = {kTfLiteFloat32, kTfLiteFloat32, kTfLiteFloat32, kTfLiteInt32,
                                  kTfLiteInt32,   kTfLiteInt32,   kTfLiteInt32};

TfLiteStatus ConvPrepare(TfLiteContext* context, TfLiteNode* node) {
  return CheckTypes(context, node, kConvIn, node->inputs->size == 7 ? 7 : 6, kGradOut, 3);
}

ConvWindow WindowOf(const TfLiteEvalTensor* w, const int32_t* v) {
  return ConvWindow{Dim(w, 0), Dim(w, 1), v[0], v[1], v[2], v[3], v[4] == 1 ? Padding::kSame : Padding::kValid};
}

// Conv2D and DepthwiseConv2D share inputs, checks and outputs; only the output channel count and the kernel differ.
template <bool kDepthwise>
TfLiteStatus ConvBackwardEval(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kDepthwise ? kDepthwiseBackwardOp : kConv2DBackwardOp;
  const TfLiteEvalTensor* x = GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* w = GetEvalInput(context, node, 1);
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, 2);
  const TfLiteEvalTensor* k = GetEvalInput(context, node, 3);
  const TfLiteEvalTensor* kept = GetEvalInput(context, node, 4);
  const TfLiteEvalTensor* window = GetEvalInput(context, node, 5);
  TfLiteEvalTensor* dw = GetEvalOutput(context, node, 0);
  TfLiteEvalTensor* dx = GetEvalOutput(context, node, 1);
  TfLiteEvalTensor* db = GetEvalOutput(context, node, 2);
  bool want[3];
  if (ReadWanted(context, node, 6, want) != kTfLiteOk) return ToTfLite(Status::kBadShape, op);
  if (Rank(x) != 4 || Rank(w) != 4 || Rank(delta) != 4 || Dim(window, 0) != 7) {
    return ToTfLite(Status::kBadShape, op);
  }
  const ConvWindow win = WindowOf(w, window->data.i32);
  ConvGeometry g{};
  const Status gs = ComputeConvGeometry(Dim(x, 1), Dim(x, 2), win, &g);
  if (gs != Status::kOk) return ToTfLite(gs, op);
  const int32_t batch = Dim(x, 0), out_c = kDepthwise ? Dim(x, 3) * Dim(w, 3) : Dim(w, 3);
  if (Dim(w, 2) != Dim(x, 3) || Dim(delta, 0) != batch || Dim(delta, 1) != g.out_h || Dim(delta, 2) != g.out_w ||
      Dim(delta, 3) != out_c || Dim(k, 0) != batch || Dim(kept, 0) != batch || Dim(kept, 1) != out_c ||
      (want[0] && Rank(dw) != 4) || (want[1] && Rank(dx) != 4) || (want[2] && Dim(db, 0) != out_c)) {
    return ToTfLite(Status::kBadShape, op);  // unwanted outputs are never written: any shape will do
  }
  for (int i = 0; i < 4; ++i) {
    if ((want[0] && Dim(dw, i) != Dim(w, i)) || (want[1] && Dim(dx, i) != Dim(x, i))) {
      return ToTfLite(Status::kBadShape, op);
    }
  }
  const KeptSet kept_set{k->data.i32, kept->data.i32, out_c};
  float* dw_out = want[0] ? dw->data.f : nullptr;
  float* dx_out = want[1] ? dx->data.f : nullptr;
  float* db_out = want[2] ? db->data.f : nullptr;
  if (kDepthwise) {
    const DepthwiseShape shape{batch, Dim(x, 1), Dim(x, 2), Dim(x, 3), Dim(w, 3)};
    return ToTfLite(DepthwiseConv2DBackwardSparse(shape, win, x->data.f, w->data.f, delta->data.f, kept_set,
                                                  BiasGrad::kDense, Accumulate::kOverwrite, dw_out, dx_out, db_out),
                    op);
  }
  const Conv2DShape shape{batch, Dim(x, 1), Dim(x, 2), Dim(x, 3), Dim(w, 3)};
  return ToTfLite(Conv2DBackwardSparse(shape, win, x->data.f, w->data.f, delta->data.f, kept_set, BiasGrad::kDense,
                                       Accumulate::kOverwrite, dw_out, dx_out, db_out),
                  op);
}

// ---- TINYPROP_APPLY_GRADIENT --------------------------------------------------------------------------------
// in: w, g, mode, hyper [7] = (rule, lr, momentum or beta_1, beta_2, epsilon, 1 - beta_1, 1 - beta_2), then the
// rule's state: momentum SGD velocity; Adam m, v and powers [2] = (beta_1^t, beta_2^t). out: w, then the state
// tensors, each its input itself (updated in place).
enum class Rule : int32_t { kSgd = 0, kMomentum = 1, kNesterov = 2, kAdam = 3 };

int StateInputs(Rule rule) { return rule == Rule::kAdam ? 3 : (rule == Rule::kSgd ? 0 : 1); }

TfLiteStatus ApplyPrepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size >= 4);
  const TfLiteEvalTensor* hyper = GetEvalInput(context, node, 3);
  TF_LITE_ENSURE(context, hyper->type == kTfLiteFloat32 && Dim(hyper, 0) == 7);
  return kTfLiteOk;
}

TfLiteStatus ApplyEval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* g = GetEvalInput(context, node, 1);
  const TfLiteEvalTensor* mode = GetEvalInput(context, node, 2);
  const float* h = GetEvalInput(context, node, 3)->data.f;
  const Rule rule = static_cast<Rule>(static_cast<int32_t>(h[0]));
  if (h[0] < 0.0f || h[0] > 3.0f || node->inputs->size != 4 + StateInputs(rule) ||
      node->outputs->size != 1 + (rule == Rule::kAdam ? 2 : StateInputs(rule))) {
    return ToTfLite(Status::kBadArgument, kApplyGradientOp);
  }
  TfLiteEvalTensor* w = GetEvalOutput(context, node, 0);
  const int64_t n = Elements(w);
  bool ok = n <= INT32_MAX && Elements(g) == n && InPlace(context, node, 0, 0);
  for (int i = 1; i < node->outputs->size; ++i) {
    ok = ok && InPlace(context, node, i, 3 + i) && Elements(GetEvalOutput(context, node, i)) == n;
  }
  if (!ok) {
    MicroPrintf("%s: outputs must be the weight and state inputs (in place), all of the gradient's size",
                kApplyGradientOp);
    return kTfLiteError;
  }
  if (!Training(mode)) return kTfLiteOk;
  const int32_t count = static_cast<int32_t>(n);
  if (rule == Rule::kAdam) {
    const float* powers = GetEvalInput(context, node, 6)->data.f;
    const AdamParams p{h[1], h[2], h[3], h[4], h[5], h[6]};
    return ToTfLite(AdamUpdate(p, powers[0], powers[1], w->data.f, g->data.f, GetEvalOutput(context, node, 1)->data.f,
                               GetEvalOutput(context, node, 2)->data.f, count),
                    kApplyGradientOp);
  }
  const SgdParams p{h[1], rule == Rule::kSgd ? 0.0f : h[2], rule == Rule::kNesterov};
  float* velocity = rule == Rule::kSgd ? nullptr : GetEvalOutput(context, node, 1)->data.f;
  return ToTfLite(SgdUpdate(p, w->data.f, g->data.f, velocity, count), kApplyGradientOp);
}

// ---- TINYPROP_COUNT_STEP, TINYPROP_ASSIGN ---------------------------------------------------------------------
// COUNT_STEP in: counter int32 [] or [1], mode; out: counter (itself) + 1 on a training invoke.
// ASSIGN in: state, value (same type and size), mode; out: state (itself) = value on a training invoke.
TfLiteStatus CountStepEval(TfLiteContext* context, TfLiteNode* node) {
  TfLiteEvalTensor* counter = GetEvalOutput(context, node, 0);
  if (node->inputs->size != 2 || counter->type != kTfLiteInt32 || Elements(counter) != 1 ||
      !InPlace(context, node, 0, 0)) {
    return ToTfLite(Status::kBadArgument, kCountStepOp);
  }
  if (Training(GetEvalInput(context, node, 1))) counter->data.i32[0] += 1;
  return kTfLiteOk;
}

TfLiteStatus AssignEval(TfLiteContext* context, TfLiteNode* node) {
  TfLiteEvalTensor* state = GetEvalOutput(context, node, 0);
  const TfLiteEvalTensor* value = GetEvalInput(context, node, 1);
  if (node->inputs->size != 3 || value->type != state->type || Elements(value) != Elements(state) ||
      !InPlace(context, node, 0, 0)) {
    return ToTfLite(Status::kBadArgument, kAssignOp);
  }
  if (!Training(GetEvalInput(context, node, 2))) return kTfLiteOk;
  size_t bytes = 0;
  TF_LITE_ENSURE_OK(context, tflite::TfLiteEvalTensorByteLength(state, &bytes));
  const char* src = value->data.raw;
  char* dst = state->data.raw;
  for (size_t i = 0; i < bytes; ++i) dst[i] = src[i];
  return kTfLiteOk;
}

}  // namespace

TFLMRegistration Register_TINYPROP_APPLY_GRADIENT() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, ApplyPrepare, ApplyEval);
}

TFLMRegistration Register_TINYPROP_COUNT_STEP() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, /*prepare=*/nullptr, CountStepEval);
}

TFLMRegistration Register_TINYPROP_ASSIGN() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, /*prepare=*/nullptr, AssignEval);
}

TFLMRegistration Register_TINYPROP_DENSE_FORWARD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, DenseForwardPrepare, DenseForwardEval);
}

TFLMRegistration Register_TINYPROP_RELU_BACKWARD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, ReluBackwardPrepare, ReluBackwardEval);
}

TFLMRegistration Register_TINYPROP_SELECT_UNITS() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, SelectPrepare<false>, SelectEval<false>);
}

TFLMRegistration Register_TINYPROP_DENSE_BACKWARD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, DensePrepare, DenseEval);
}

TFLMRegistration Register_TINYPROP_DENSE_BACKWARD_SGD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, DenseSgdPrepare, DenseSgdEval);
}

TFLMRegistration Register_TINYPROP_CONV2D_BACKWARD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, ConvPrepare, ConvBackwardEval<false>);
}

TFLMRegistration Register_TINYPROP_SELECT_CHANNELS() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, SelectPrepare<true>, SelectEval<true>);
}

TFLMRegistration Register_TINYPROP_DEPTHWISE_BACKWARD() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, ConvPrepare, ConvBackwardEval<true>);  // same inputs
}

}  // namespace tflm
}  // namespace tinyprop
