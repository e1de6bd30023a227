// TFLM custom operators wrapping the TinyProp kernels (see tinyprop_tflm.h), one namespace per operator in the
// shape of TFLM's reference kernels: the tensor indices named once (Input, Output), an OpData allocated in Init,
// every check in Prepare, Eval fetching the tensors and calling the kernel.
#include "tinyprop_tflm.h"

#include <initializer_list>
#include <type_traits>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tinyprop/tinyprop.h"

namespace tinyprop {
namespace tflm {
namespace {

using tflite::micro::GetEvalInput;
using tflite::micro::GetEvalOutput;
using tflite::micro::GetOptionalTensorData;
using tflite::micro::GetTensorData;

// ---- shared by the operators ----------------------------------------------------------------------------------

// One input or output of a node as Prepare sees it (type, shape, allocation type, a constant's data), given back
// to TFLM's temp allocator when it goes out of scope (AllocateTensors fails if a Prepare leaves one allocated).
// Null for an optional input the node does not have.
template <bool kOutput>
class TempTensor {
 public:
  TempTensor(TfLiteContext* context, TfLiteNode* node, int index)
      : micro_context_(tflite::GetMicroContext(context)),
        tensor_(kOutput ? micro_context_->AllocateTempOutputTensor(node, index)
                        : micro_context_->AllocateTempInputTensor(node, index)) {}
  ~TempTensor() {
    if (tensor_ != nullptr) micro_context_->DeallocateTempTfLiteTensor(tensor_);
  }
  TempTensor(const TempTensor&) = delete;
  TempTensor& operator=(const TempTensor&) = delete;

  const TfLiteTensor* get() const { return tensor_; }
  const TfLiteTensor* operator->() const { return tensor_; }
  explicit operator bool() const { return tensor_ != nullptr; }

 private:
  tflite::MicroContext* micro_context_;
  TfLiteTensor* tensor_;
};
using TempInput = TempTensor<false>;
using TempOutput = TempTensor<true>;

// The node's required tensors are there (a flatbuffer may name no tensor, -1, at any position).
TfLiteStatus CheckPresent(TfLiteContext* context, std::initializer_list<const TfLiteTensor*> tensors) {
  for (const TfLiteTensor* t : tensors) {
    TF_LITE_ENSURE_MSG(context, t != nullptr, "TinyProp op: a required input or output is missing (-1)");
  }
  return kTfLiteOk;
}

int Rank(const TfLiteTensor* t) { return t->dims->size; }
// Dimension i, or -1 where the tensor has no such axis (so a rank mismatch fails the comparison that follows).
int Dim(const TfLiteTensor* t, int i) { return i < t->dims->size ? t->dims->data[i] : -1; }
int64_t Elements(const TfLiteTensor* t) { return tflite::NumElements(t); }

// Whether output `out` of the node is its input `in`: the same state tensor, updated in place.
bool InPlace(const TfLiteNode* node, int out, int in) {
  return in < node->inputs->size && out < node->outputs->size && node->outputs->data[out] == node->inputs->data[in];
}

// The step's mode input (int32 scalar or [1]): 1 is a training invoke, anything else inference.
TfLiteStatus CheckMode(TfLiteContext* context, const TfLiteTensor* mode) {
  TF_LITE_ENSURE_TYPES_EQ(context, mode->type, kTfLiteInt32);
  TF_LITE_ENSURE(context, Elements(mode) == 1);
  return kTfLiteOk;
}
bool Training(const TfLiteEvalTensor* mode) { return mode->data.i32[0] == 1; }

// A parameter tensor read once in Prepare (`what` names it): it must be a constant of the model with `count`
// elements of `type`.
TfLiteStatus CheckConstant(TfLiteContext* context, const TfLiteTensor* t, const char* what, TfLiteType type,
                           int count) {
  TF_LITE_ENSURE_MSG(context, tflite::IsConstantTensor(t), "TinyProp op: the %s input is not a constant tensor", what);
  TF_LITE_ENSURE_TYPES_EQ(context, t->type, type);
  TF_LITE_ENSURE_EQ(context, Rank(t), 1);
  TF_LITE_ENSURE_EQ(context, Dim(t, 0), count);
  return kTfLiteOk;
}

// The optional wanted input of the backward ops (WantedOutput): absent, every output is computed.
TfLiteStatus ReadWanted(TfLiteContext* context, const TempInput& wanted, bool want[kWantedCount]) {
  for (int i = 0; i < kWantedCount; ++i) want[i] = true;
  if (!wanted) return kTfLiteOk;
  TF_LITE_ENSURE_OK(context, CheckConstant(context, wanted.get(), "wanted", kTfLiteInt32, kWantedCount));
  for (int i = 0; i < kWantedCount; ++i) want[i] = wanted->data.i32[i] != 0;
  return kTfLiteOk;
}

TfLiteStatus ToTfLite(Status s, const char* op) {
  if (s == Status::kOk) return kTfLiteOk;
  MicroPrintf("%s: %s", op, StatusName(s));
  return kTfLiteError;
}

// Output `out` of a backward op, or null when the op's wanted input skips it (WantedOutput: its slots are the
// outputs, in order).
float* OutputIfWanted(TfLiteContext* context, TfLiteNode* node, const bool want[kWantedCount], int out) {
  return want[out] ? GetTensorData<float>(GetEvalOutput(context, node, out)) : nullptr;
}

// The conv ops' window input (WindowParam), the kernel's spatial size taken from w [KH, KW, ...].
TfLiteStatus ReadWindow(TfLiteContext* context, const TempInput& window, const TfLiteTensor* w, ConvWindow* out) {
  TF_LITE_ENSURE_OK(context, CheckConstant(context, window.get(), "window", kTfLiteInt32, kWindowParamCount));
  const int32_t* v = window->data.i32;
  *out = ConvWindow{Dim(w, 0),       Dim(w, 1),       v[kStrideH], v[kStrideW],
                    v[kDilationH], v[kDilationW], v[kPadding] == 1 ? Padding::kSame : Padding::kValid};
  return kTfLiteOk;
}

// Conv2D's shape, or DepthwiseConv2D's (its last field the depth multiplier).
template <bool kDepthwise>
using ConvShape = typename std::conditional<kDepthwise, DepthwiseShape, Conv2DShape>::type;

// What every conv op reads of x [B, H, W, C], w [KH, KW, C, O or DM] and its window input: the window, the
// kernels' shape and the output channels; `output` (the forward's z, the backward's delta) must be
// [B, OH, OW, out_c] of TensorFlow's geometry. `op` names the operator in a kernel error.
// `output` null: no output of that shape (the recomputed block's ops); `geometry` (may be null) gets the output's
// spatial size.
template <bool kDepthwise>
TfLiteStatus PrepareConvGeometry(TfLiteContext* context, const TfLiteTensor* x, const TfLiteTensor* w,
                                 const TempInput& window, const TfLiteTensor* output, const char* op,
                                 ConvWindow* conv_window, ConvShape<kDepthwise>* shape, int32_t* out_c,
                                 ConvGeometry* geometry = nullptr) {
  TF_LITE_ENSURE(context, Rank(x) == 4 && Rank(w) == 4 && (output == nullptr || Rank(output) == 4));
  TF_LITE_ENSURE_OK(context, ReadWindow(context, window, w, conv_window));
  ConvGeometry g{};
  TF_LITE_ENSURE_OK(context, ToTfLite(ComputeConvGeometry(Dim(x, 1), Dim(x, 2), *conv_window, &g), op));
  *out_c = kDepthwise ? Dim(x, 3) * Dim(w, 3) : Dim(w, 3);
  *shape = {Dim(x, 0), Dim(x, 1), Dim(x, 2), Dim(x, 3), Dim(w, 3)};
  TF_LITE_ENSURE_EQ(context, Dim(w, 2), Dim(x, 3));
  if (output != nullptr) {
    TF_LITE_ENSURE(context, Dim(output, 0) == Dim(x, 0) && Dim(output, 1) == g.out_h && Dim(output, 2) == g.out_w &&
                                Dim(output, 3) == *out_c);
  }
  if (geometry != nullptr) *geometry = g;
  return kTfLiteOk;
}

template <typename OpData>
void* InitOpData(TfLiteContext* context, const char* /*buffer*/, size_t /*length*/) {
  return context->AllocatePersistentBuffer(context, sizeof(OpData));
}

template <typename OpData>
OpData& DataOf(TfLiteNode* node) {
  return *static_cast<OpData*>(node->user_data);
}

// ---- TINYPROP_DENSE_FORWARD ---------------------------------------------------------------------------------
namespace dense_forward {

enum Input : int { kX, kW, kBias };  // bias optional
enum Output : int { kZ };

struct OpData {
  DenseShape shape;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size == kBias || node->inputs->size == kBias + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kZ + 1);
  TempInput x(context, node, kX), w(context, node, kW), bias(context, node, kBias);
  TempOutput z(context, node, kZ);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {x.get(), w.get(), z.get()}));
  TF_LITE_ENSURE_TYPES_EQ(context, x->type, kTfLiteFloat32);
  TF_LITE_ENSURE_TYPES_EQ(context, w->type, kTfLiteFloat32);
  TF_LITE_ENSURE_TYPES_EQ(context, z->type, kTfLiteFloat32);
  const DenseShape shape{Dim(x.get(), 0), Dim(x.get(), 1), Dim(w.get(), 1)};
  TF_LITE_ENSURE(context, Rank(x.get()) == 2 && Rank(w.get()) == 2 && Rank(z.get()) == 2);
  TF_LITE_ENSURE_EQ(context, Dim(w.get(), 0), shape.in);
  TF_LITE_ENSURE_EQ(context, Dim(z.get(), 0), shape.batch);
  TF_LITE_ENSURE_EQ(context, Dim(z.get(), 1), shape.out);
  if (bias) {
    TF_LITE_ENSURE_TYPES_EQ(context, bias->type, kTfLiteFloat32);
    TF_LITE_ENSURE_EQ(context, Rank(bias.get()), 1);
    TF_LITE_ENSURE_EQ(context, Dim(bias.get(), 0), shape.out);
  }
  DataOf<OpData>(node).shape = shape;
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  const TfLiteEvalTensor* x = GetEvalInput(context, node, kX);
  const TfLiteEvalTensor* w = GetEvalInput(context, node, kW);
  const TfLiteEvalTensor* bias = GetEvalInput(context, node, kBias);
  TfLiteEvalTensor* z = GetEvalOutput(context, node, kZ);
  return ToTfLite(DenseForward(data.shape, GetTensorData<float>(x), GetTensorData<float>(w),
                               GetOptionalTensorData<float>(bias), GetTensorData<float>(z)),
                  kDenseForwardOp);
}

}  // namespace dense_forward

// ---- TINYPROP_RELU_BACKWARD --------------------------------------------------------------------------------
namespace relu_backward {

enum Input : int { kGradient, kActivationOut };
enum Output : int { kPreGradient };

struct OpData {
  int32_t count;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_EQ(context, node->inputs->size, kActivationOut + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kPreGradient + 1);
  TempInput g(context, node, kGradient), out(context, node, kActivationOut);
  TempOutput d(context, node, kPreGradient);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {g.get(), out.get(), d.get()}));
  TF_LITE_ENSURE_TYPES_EQ(context, g->type, kTfLiteFloat32);
  TF_LITE_ENSURE_TYPES_EQ(context, out->type, kTfLiteFloat32);
  TF_LITE_ENSURE_TYPES_EQ(context, d->type, kTfLiteFloat32);
  TF_LITE_ENSURE(context, tflite::HaveSameShapes(g.get(), out.get()) && tflite::HaveSameShapes(g.get(), d.get()));
  TF_LITE_ENSURE(context, Elements(g.get()) <= kMaxElements);
  DataOf<OpData>(node).count = static_cast<int32_t>(Elements(g.get()));
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  const TfLiteEvalTensor* g = GetEvalInput(context, node, kGradient);
  const TfLiteEvalTensor* out = GetEvalInput(context, node, kActivationOut);
  TfLiteEvalTensor* d = GetEvalOutput(context, node, kPreGradient);
  return ToTfLite(ReluBackward(GetTensorData<float>(g), GetTensorData<float>(out), data.count,
                               GetTensorData<float>(d)),
                  kReluBackwardOp);
}

}  // namespace relu_backward

// ---- TINYPROP_SELECT_UNITS (delta [B, N]), TINYPROP_SELECT_CHANNELS (delta [B, positions..., C]) -------------
// Channels: one score per (sample, channel) = sum of |delta| over the positions. Scratch (arena): y [B] for
// units; scores [B, C] and y [B] for channels.
namespace selection {

enum Input : int { kDelta, kYmax, kParams, kMode };  // mode optional
enum Output : int { kYmaxOut, kK, kKept };

struct OpData {
  RatioParams params;
  int32_t batch;
  int32_t n;          // units or channels
  int32_t positions;  // channels: the product of the axes between batch and channels
  int scratch_index;
};

template <bool kChannels>
int64_t ScratchFloats(const OpData& data) {
  return kChannels ? SelectChannelsScratchSize(data.batch, data.n) : SelectUnitsScratchSize(data.batch);
}

RatioParams ReadRatioParams(const float* p) {
  return RatioParams{p[kSMin],
                     p[kSMax],
                     p[kZetaPow],
                     p[kRounding] == 1.0f ? Rounding::kHalfEven : Rounding::kFloor,
                     p[kReference] == 2.0f   ? Reference::kQuantile
                     : p[kReference] == 1.0f ? Reference::kMean
                                             : Reference::kMax,
                     p[kDecay],
                     p[kPerSampleMax] == 1.0f,
                     static_cast<int32_t>(p[kMinKept]),
                     p[kSkipBelow],
                     p[kQuantileShare],
                     p[kQuantileRate]};
}

template <bool kChannels>
TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  const char* op = kChannels ? kSelectChannelsOp : kSelectUnitsOp;
  TF_LITE_ENSURE(context, node->inputs->size == kMode || node->inputs->size == kMode + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kKept + 1);
  OpData& data = DataOf<OpData>(node);
  {
    TempInput delta(context, node, kDelta), ymax(context, node, kYmax), params(context, node, kParams),
        mode(context, node, kMode);
    TempOutput ymax_out(context, node, kYmaxOut), k(context, node, kK), kept(context, node, kKept);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {delta.get(), ymax.get(), params.get(), ymax_out.get(), k.get(),
                                                      kept.get()}));
    TF_LITE_ENSURE_TYPES_EQ(context, delta->type, kTfLiteFloat32);
    TF_LITE_ENSURE(context, kChannels ? Rank(delta.get()) >= 3 : Rank(delta.get()) == 2);
    int64_t positions = 1;
    for (int i = 1; i + 1 < Rank(delta.get()); ++i) positions *= Dim(delta.get(), i);
    TF_LITE_ENSURE(context, positions <= kMaxElements);
    data.batch = Dim(delta.get(), 0);
    data.n = Dim(delta.get(), Rank(delta.get()) - 1);
    data.positions = static_cast<int32_t>(positions);
    for (const TfLiteTensor* y : {ymax.get(), ymax_out.get()}) {
      TF_LITE_ENSURE_TYPES_EQ(context, y->type, kTfLiteFloat32);
      TF_LITE_ENSURE_EQ(context, Dim(y, 0), 1);
    }
    TF_LITE_ENSURE_OK(context, CheckConstant(context, params.get(), "params", kTfLiteFloat32, kSelectParamCount));
    data.params = ReadRatioParams(params->data.f);
    TF_LITE_ENSURE_OK(context, ToTfLite(CheckRatioParams(data.params), op));
    if (mode) TF_LITE_ENSURE_OK(context, CheckMode(context, mode.get()));
    TF_LITE_ENSURE_TYPES_EQ(context, k->type, kTfLiteInt32);
    TF_LITE_ENSURE_TYPES_EQ(context, kept->type, kTfLiteInt32);
    TF_LITE_ENSURE_EQ(context, Dim(k.get(), 0), data.batch);
    TF_LITE_ENSURE_EQ(context, Dim(kept.get(), 0), data.batch);
    TF_LITE_ENSURE_EQ(context, Dim(kept.get(), 1), data.n);
  }
  return context->RequestScratchBufferInArena(
      context, static_cast<size_t>(ScratchFloats<kChannels>(data)) * sizeof(float), &data.scratch_index);
}

// A selection op on an inference invoke: nothing kept (the backward ops then do no work), the running max
// unchanged.
TfLiteStatus KeepNothing(int32_t batch, int32_t n, const TfLiteEvalTensor* ymax, TfLiteEvalTensor* ymax_out,
                         int32_t* k, int32_t* kept) {
  for (int32_t b = 0; b < batch; ++b) k[b] = 0;
  for (int64_t e = 0; e < static_cast<int64_t>(batch) * n; ++e) kept[e] = -1;
  ymax_out->data.f[0] = ymax->data.f[0];
  return kTfLiteOk;
}

template <bool kChannels>
TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, kDelta);
  const TfLiteEvalTensor* ymax = GetEvalInput(context, node, kYmax);
  TfLiteEvalTensor* ymax_out = GetEvalOutput(context, node, kYmaxOut);
  int32_t* k = GetTensorData<int32_t>(GetEvalOutput(context, node, kK));
  int32_t* kept = GetTensorData<int32_t>(GetEvalOutput(context, node, kKept));
  const TfLiteEvalTensor* mode = GetEvalInput(context, node, kMode);  // null when the node has none
  if (mode != nullptr && !Training(mode)) return KeepNothing(data.batch, data.n, ymax, ymax_out, k, kept);
  float m = ymax->data.f[0];
  float* scratch = static_cast<float*>(context->GetScratchBuffer(context, data.scratch_index));
  const int64_t scratch_len = ScratchFloats<kChannels>(data);
  const Status s = kChannels ? SelectChannels(GetTensorData<float>(delta), data.batch, data.positions, data.n,
                                              data.params, &m, k, kept, scratch, scratch_len)
                             : SelectUnits(GetTensorData<float>(delta), data.batch, data.n, data.params, &m, k, kept,
                                           scratch, scratch_len);
  ymax_out->data.f[0] = m;  // ymax_out may be ymax itself (the in-place training state)
  return ToTfLite(s, kChannels ? kSelectChannelsOp : kSelectUnitsOp);
}

}  // namespace selection

// ---- TINYPROP_DENSE_BACKWARD, TINYPROP_DENSE_BACKWARD_SGD ----------------------------------------------------
// Outputs dW-or-w_new [I, O], dx [B, I], db-or-b_new [O]. An output that is not wanted is never written, so the
// graph may give it any shape (one element: no arena).
// DENSE_BACKWARD_SGD: inputs as DENSE_BACKWARD with wanted given, then lr, mode and the optional bias; outputs w
// (input kW itself), dx, bias (input kBias itself, or one unused element). Scratch: DenseSgdScratchBytes.
namespace dense_backward {

enum Input : int { kX, kW, kDelta, kK, kKept, kWanted, kLearningRate, kMode, kBias };  // DENSE_BACKWARD: to kWanted
// SGD: kDw is the updated w, kDb the updated bias. Wanted's slots are the outputs, in order.
enum Output : int { kDw = kWantDw, kDx = kWantDx, kDb = kWantDb };

struct OpData {
  DenseShape shape;
  bool want[kWantedCount];
  float learning_rate;  // SGD
  int scratch_index;    // SGD
  int64_t scratch_bytes;
};

// The inputs and outputs both ops share (kX .. kWanted, the outputs): types, shapes and wanted into `data`.
TfLiteStatus PrepareShared(TfLiteContext* context, TfLiteNode* node, OpData* data) {
  TempInput x(context, node, kX), w(context, node, kW), delta(context, node, kDelta), k(context, node, kK),
      kept(context, node, kKept), wanted(context, node, kWanted);
  TempOutput dw(context, node, kDw), dx(context, node, kDx), db(context, node, kDb);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {x.get(), w.get(), delta.get(), k.get(), kept.get(), dw.get(),
                                                    dx.get(), db.get()}));
  for (const TfLiteTensor* t : {x.get(), w.get(), delta.get(), dw.get(), dx.get(), db.get()}) {
    TF_LITE_ENSURE_TYPES_EQ(context, t->type, kTfLiteFloat32);
  }
  TF_LITE_ENSURE_TYPES_EQ(context, k->type, kTfLiteInt32);
  TF_LITE_ENSURE_TYPES_EQ(context, kept->type, kTfLiteInt32);
  TF_LITE_ENSURE_OK(context, ReadWanted(context, wanted, data->want));
  const DenseShape s{Dim(x.get(), 0), Dim(x.get(), 1), Dim(w.get(), 1)};
  TF_LITE_ENSURE(context, Rank(x.get()) == 2 && Rank(w.get()) == 2 && Rank(delta.get()) == 2);
  TF_LITE_ENSURE_EQ(context, Dim(w.get(), 0), s.in);
  TF_LITE_ENSURE(context, Dim(delta.get(), 0) == s.batch && Dim(delta.get(), 1) == s.out);
  TF_LITE_ENSURE_EQ(context, Dim(k.get(), 0), s.batch);
  TF_LITE_ENSURE(context, Dim(kept.get(), 0) == s.batch && Dim(kept.get(), 1) == s.out);
  if (data->want[kWantDw]) TF_LITE_ENSURE(context, Dim(dw.get(), 0) == s.in && Dim(dw.get(), 1) == s.out);
  if (data->want[kWantDx]) TF_LITE_ENSURE(context, Dim(dx.get(), 0) == s.batch && Dim(dx.get(), 1) == s.in);
  if (data->want[kWantDb]) TF_LITE_ENSURE_EQ(context, Dim(db.get(), 0), s.out);
  data->shape = s;
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size == kWanted || node->inputs->size == kWanted + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kDb + 1);
  return PrepareShared(context, node, &DataOf<OpData>(node));
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  const TfLiteEvalTensor* x = GetEvalInput(context, node, kX);
  const TfLiteEvalTensor* w = GetEvalInput(context, node, kW);
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, kDelta);
  const KeptSet kept{GetTensorData<int32_t>(GetEvalInput(context, node, kK)),
                     GetTensorData<int32_t>(GetEvalInput(context, node, kKept)), data.shape.out};
  return ToTfLite(DenseBackwardSparse(data.shape, GetTensorData<float>(x), GetTensorData<float>(w),
                                      GetTensorData<float>(delta), kept, BiasGrad::kDense, Accumulate::kOverwrite,
                                      OutputIfWanted(context, node, data.want, kDw),
                                      OutputIfWanted(context, node, data.want, kDx),
                                      OutputIfWanted(context, node, data.want, kDb)),
                  kDenseBackwardOp);
}

TfLiteStatus SgdPrepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size == kBias || node->inputs->size == kBias + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kDb + 1);
  OpData& data = DataOf<OpData>(node);
  TF_LITE_ENSURE_OK(context, PrepareShared(context, node, &data));
  {
    TempInput wanted(context, node, kWanted), lr(context, node, kLearningRate), mode(context, node, kMode),
        bias(context, node, kBias);
    TF_LITE_ENSURE_MSG(context, wanted, "TINYPROP_DENSE_BACKWARD_SGD: the wanted input is required");
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {lr.get(), mode.get()}));
    TF_LITE_ENSURE_MSG(context, data.want[kWantDw], "TINYPROP_DENSE_BACKWARD_SGD: wanted[0] (the update) must be 1");
    TF_LITE_ENSURE_MSG(context, data.want[kWantDb] == static_cast<bool>(bias),
                       "TINYPROP_DENSE_BACKWARD_SGD: wanted[2] must say whether the bias input is given");
    TF_LITE_ENSURE_OK(context, CheckConstant(context, lr.get(), "lr", kTfLiteFloat32, 1));
    data.learning_rate = lr->data.f[0];
    TF_LITE_ENSURE_OK(context, CheckMode(context, mode.get()));
    if (bias) {
      TF_LITE_ENSURE_TYPES_EQ(context, bias->type, kTfLiteFloat32);
      TF_LITE_ENSURE_EQ(context, Dim(bias.get(), 0), data.shape.out);
    }
  }
  TF_LITE_ENSURE_MSG(context, InPlace(node, kDw, kW) && (!data.want[kWantDb] || InPlace(node, kDb, kBias)),
                     "TINYPROP_DENSE_BACKWARD_SGD: outputs 0 and 2 must be inputs 1 and 8 (updated in place)");
  TF_LITE_ENSURE(context, data.shape.batch >= 1 && data.shape.in >= 1);
  data.scratch_bytes = DenseSgdScratchBytes(data.shape.batch, data.shape.in);
  return context->RequestScratchBufferInArena(context, static_cast<size_t>(data.scratch_bytes), &data.scratch_index);
}

TfLiteStatus SgdEval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  if (!Training(GetEvalInput(context, node, kMode))) return kTfLiteOk;
  const TfLiteEvalTensor* x = GetEvalInput(context, node, kX);
  const TfLiteEvalTensor* delta = GetEvalInput(context, node, kDelta);
  const KeptSet kept{GetTensorData<int32_t>(GetEvalInput(context, node, kK)),
                     GetTensorData<int32_t>(GetEvalInput(context, node, kKept)), data.shape.out};
  void* scratch = context->GetScratchBuffer(context, data.scratch_index);
  return ToTfLite(DenseBackwardSparseSgd(data.shape, GetTensorData<float>(x),
                                         OutputIfWanted(context, node, data.want, kDw),
                                         OutputIfWanted(context, node, data.want, kDb), GetTensorData<float>(delta),
                                         kept, data.learning_rate, OutputIfWanted(context, node, data.want, kDx),
                                         scratch, data.scratch_bytes),
                  kDenseBackwardSgdOp);
}

}  // namespace dense_backward

// ---- TINYPROP_CONV2D_FORWARD, TINYPROP_DEPTHWISE_FORWARD ----------------------------------------------------
namespace conv_forward {

enum Input : int { kX, kW, kWindow, kBias };  // bias optional; then the mode when the window says train_only
enum Output : int { kZ };

template <bool kDepthwise>
struct OpData {
  ConvShape<kDepthwise> shape;
  ConvWindow window;
  Activation activation;
  bool has_bias;
  int mode_index;  // -1: not train_only
};

template <bool kDepthwise>
TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kZ + 1);
  TF_LITE_ENSURE(context, node->inputs->size > kWindow);
  OpData<kDepthwise>& data = DataOf<OpData<kDepthwise>>(node);
  bool train_only;
  {
    TempInput window(context, node, kWindow);
    TF_LITE_ENSURE(context, window);
    TF_LITE_ENSURE_OK(context, CheckConstant(context, window.get(), "window", kTfLiteInt32, kWindowParamCount));
    train_only = window->data.i32[kTrainOnly] == 1;
  }
  const int inputs = node->inputs->size - (train_only ? 1 : 0);
  TF_LITE_ENSURE(context, inputs == kBias || inputs == kBias + 1);
  data.has_bias = inputs == kBias + 1;
  data.mode_index = train_only ? inputs : -1;
  if (train_only) {
    TempInput mode(context, node, data.mode_index);
    TF_LITE_ENSURE(context, mode);
    TF_LITE_ENSURE_OK(context, CheckMode(context, mode.get()));
  }
  TempInput x(context, node, kX), w(context, node, kW), window(context, node, kWindow),
      bias(context, node, data.has_bias ? kBias : -1);
  TempOutput z(context, node, kZ);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {x.get(), w.get(), window.get(), z.get()}));
  for (const TfLiteTensor* t : {x.get(), w.get(), z.get()}) TF_LITE_ENSURE_TYPES_EQ(context, t->type, kTfLiteFloat32);
  int32_t out_c;
  TF_LITE_ENSURE_OK(context, PrepareConvGeometry<kDepthwise>(context, x.get(), w.get(), window, z.get(),
                                                             kDepthwise ? kDepthwiseForwardOp : kConv2DForwardOp,
                                                             &data.window, &data.shape, &out_c));
  const int32_t activation = window->data.i32[kActivation];
  TF_LITE_ENSURE_MSG(context, activation == 0 || activation == 1, "TinyProp conv forward: activation not 0 or 1");
  data.activation = static_cast<Activation>(activation);
  if (bias) {
    TF_LITE_ENSURE_TYPES_EQ(context, bias->type, kTfLiteFloat32);
    TF_LITE_ENSURE(context, Rank(bias.get()) == 1 && Dim(bias.get(), 0) == out_c);
  }
  return kTfLiteOk;
}

template <bool kDepthwise>
TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData<kDepthwise>& data = DataOf<OpData<kDepthwise>>(node);
  if (data.mode_index >= 0 && !Training(GetEvalInput(context, node, data.mode_index))) return kTfLiteOk;
  const float* x = GetTensorData<float>(GetEvalInput(context, node, kX));
  const float* w = GetTensorData<float>(GetEvalInput(context, node, kW));
  const float* bias = data.has_bias ? GetTensorData<float>(GetEvalInput(context, node, kBias)) : nullptr;
  float* z = GetTensorData<float>(GetEvalOutput(context, node, kZ));
  if constexpr (kDepthwise) {
    return ToTfLite(DepthwiseConv2DForward(data.shape, data.window, x, w, bias, data.activation, z),
                    kDepthwiseForwardOp);
  } else {
    return ToTfLite(Conv2DForward(data.shape, data.window, x, w, bias, data.activation, z), kConv2DForwardOp);
  }
}

}  // namespace conv_forward

// ---- TINYPROP_GLOBAL_AVERAGE_POOL ------------------------------------------------------------------------------
namespace global_average_pool {

enum Input : int { kX };
enum Output : int { kOut };

struct OpData {
  int32_t batch, positions, channels;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_EQ(context, node->inputs->size, kX + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kOut + 1);
  TempInput x(context, node, kX);
  TempOutput out(context, node, kOut);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {x.get(), out.get()}));
  TF_LITE_ENSURE_TYPES_EQ(context, x->type, kTfLiteFloat32);
  TF_LITE_ENSURE_TYPES_EQ(context, out->type, kTfLiteFloat32);
  TF_LITE_ENSURE(context, Rank(x.get()) >= 3 && Elements(x.get()) <= kMaxElements);
  const int32_t batch = Dim(x.get(), 0), channels = Dim(x.get(), Rank(x.get()) - 1);
  TF_LITE_ENSURE(context, Dim(out.get(), 0) == batch && Dim(out.get(), Rank(out.get()) - 1) == channels &&
                              Elements(out.get()) == static_cast<int64_t>(batch) * channels);
  DataOf<OpData>(node) = {batch, static_cast<int32_t>(Elements(x.get()) / (static_cast<int64_t>(batch) * channels)),
                          channels};
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  return ToTfLite(GlobalAveragePool(GetTensorData<float>(GetEvalInput(context, node, kX)), data.batch,
                                    data.positions, data.channels,
                                    GetTensorData<float>(GetEvalOutput(context, node, kOut))),
                  kGlobalAveragePoolOp);
}

}  // namespace global_average_pool

// ---- TINYPROP_CONV2D_BACKWARD, TINYPROP_DEPTHWISE_BACKWARD --------------------------------------------------
// Conv2D and DepthwiseConv2D share inputs, checks and outputs; only the output channel count and the kernel differ.
namespace conv_backward {

enum Input : int { kX, kW, kDelta, kK, kKept, kWindow, kWanted };  // wanted optional
enum Output : int { kDw = kWantDw, kDx = kWantDx, kDb = kWantDb };

template <bool kDepthwise>
struct OpData {
  ConvShape<kDepthwise> shape;
  ConvWindow window;
  int32_t out_c;
  bool want[kWantedCount];
};

template <bool kDepthwise>
TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size == kWanted || node->inputs->size == kWanted + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kDb + 1);
  OpData<kDepthwise>& data = DataOf<OpData<kDepthwise>>(node);
  TempInput x(context, node, kX), w(context, node, kW), delta(context, node, kDelta), k(context, node, kK),
      kept(context, node, kKept), window(context, node, kWindow), wanted(context, node, kWanted);
  TempOutput dw(context, node, kDw), dx(context, node, kDx), db(context, node, kDb);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {x.get(), w.get(), delta.get(), k.get(), kept.get(), window.get(),
                                                    dw.get(), dx.get(), db.get()}));
  for (const TfLiteTensor* t : {x.get(), w.get(), delta.get(), dw.get(), dx.get(), db.get()}) {
    TF_LITE_ENSURE_TYPES_EQ(context, t->type, kTfLiteFloat32);
  }
  TF_LITE_ENSURE_TYPES_EQ(context, k->type, kTfLiteInt32);
  TF_LITE_ENSURE_TYPES_EQ(context, kept->type, kTfLiteInt32);
  TF_LITE_ENSURE_OK(context, ReadWanted(context, wanted, data.want));
  TF_LITE_ENSURE_OK(context, PrepareConvGeometry<kDepthwise>(context, x.get(), w.get(), window, delta.get(),
                                                             kDepthwise ? kDepthwiseBackwardOp : kConv2DBackwardOp,
                                                             &data.window, &data.shape, &data.out_c));
  const int32_t batch = Dim(x.get(), 0);
  TF_LITE_ENSURE_EQ(context, Dim(k.get(), 0), batch);
  TF_LITE_ENSURE(context, Dim(kept.get(), 0) == batch && Dim(kept.get(), 1) == data.out_c);
  if (data.want[kWantDw]) TF_LITE_ENSURE(context, tflite::HaveSameShapes(dw.get(), w.get()));
  if (data.want[kWantDx]) TF_LITE_ENSURE(context, tflite::HaveSameShapes(dx.get(), x.get()));
  if (data.want[kWantDb]) TF_LITE_ENSURE_EQ(context, Dim(db.get(), 0), data.out_c);
  return kTfLiteOk;
}

template <bool kDepthwise>
TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData<kDepthwise>& data = DataOf<OpData<kDepthwise>>(node);
  const float* x = GetTensorData<float>(GetEvalInput(context, node, kX));
  const float* w = GetTensorData<float>(GetEvalInput(context, node, kW));
  const float* delta = GetTensorData<float>(GetEvalInput(context, node, kDelta));
  const KeptSet kept{GetTensorData<int32_t>(GetEvalInput(context, node, kK)),
                     GetTensorData<int32_t>(GetEvalInput(context, node, kKept)), data.out_c};
  float* dw = OutputIfWanted(context, node, data.want, kDw);
  float* dx = OutputIfWanted(context, node, data.want, kDx);
  float* db = OutputIfWanted(context, node, data.want, kDb);
  if constexpr (kDepthwise) {
    return ToTfLite(DepthwiseConv2DBackwardSparse(data.shape, data.window, x, w, delta, kept, BiasGrad::kDense,
                                                  Accumulate::kOverwrite, dw, dx, db),
                    kDepthwiseBackwardOp);
  } else {
    return ToTfLite(Conv2DBackwardSparse(data.shape, data.window, x, w, delta, kept, BiasGrad::kDense,
                                         Accumulate::kOverwrite, dw, dx, db),
                    kConv2DBackwardOp);
  }
}

}  // namespace conv_backward

// ---- The recomputed conv -> ReLU -> global average pooling block ---------------------------------------------
// TINYPROP_CONV2D_POOL_FORWARD, TINYPROP_SELECT_CHANNELS_MASKED, TINYPROP_CONV2D_BACKWARD_MASKED (tinyprop_tflm.h):
// the trained conv's output is never a tensor; the ReLU's mask (MaskWords bits per sample) stands for it.
namespace masked_block {

// The mask input or output: int32 [B, MaskWords(elements)].
TfLiteStatus CheckMask(TfLiteContext* context, const TfLiteTensor* mask, int32_t batch, int64_t elements) {
  TF_LITE_ENSURE_TYPES_EQ(context, mask->type, kTfLiteInt32);
  TF_LITE_ENSURE(context, Rank(mask) == 2 && Dim(mask, 0) == batch && Dim(mask, 1) == MaskWords(elements));
  return kTfLiteOk;
}

const uint32_t* MaskData(const TfLiteEvalTensor* t) { return reinterpret_cast<const uint32_t*>(t->data.i32); }

namespace pool_forward {

enum Input : int { kX, kW, kWindow, kBias };  // bias optional
enum Output : int { kPooled, kMask };

struct OpData {
  Conv2DShape shape;
  ConvWindow window;
  int32_t positions;  // OH * OW
  int scratch_index;  // the ReLU output, B * positions * O floats
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size == kBias || node->inputs->size == kBias + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kMask + 1);
  OpData& data = DataOf<OpData>(node);
  int64_t scratch_floats;
  {
    TempInput x(context, node, kX), w(context, node, kW), window(context, node, kWindow), bias(context, node, kBias);
    TempOutput pooled(context, node, kPooled), mask(context, node, kMask);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {x.get(), w.get(), window.get(), pooled.get(), mask.get()}));
    for (const TfLiteTensor* t : {x.get(), w.get(), pooled.get()}) {
      TF_LITE_ENSURE_TYPES_EQ(context, t->type, kTfLiteFloat32);
    }
    int32_t out_c;
    ConvGeometry g{};
    TF_LITE_ENSURE_OK(context, PrepareConvGeometry<false>(context, x.get(), w.get(), window, nullptr,
                                                          kConv2DPoolForwardOp, &data.window, &data.shape, &out_c,
                                                          &g));
    TF_LITE_ENSURE_MSG(context, window->data.i32[kActivation] == 1,
                       "TINYPROP_CONV2D_POOL_FORWARD: the activation must be ReLU (1): its mask is the output");
    if (bias) {
      TF_LITE_ENSURE_TYPES_EQ(context, bias->type, kTfLiteFloat32);
      TF_LITE_ENSURE(context, Rank(bias.get()) == 1 && Dim(bias.get(), 0) == out_c);
    }
    const int64_t positions = static_cast<int64_t>(g.out_h) * g.out_w;
    scratch_floats = static_cast<int64_t>(data.shape.batch) * positions * out_c;
    TF_LITE_ENSURE(context, scratch_floats >= 1 && scratch_floats <= kMaxElements);
    data.positions = static_cast<int32_t>(positions);
    TF_LITE_ENSURE(context, Rank(pooled.get()) == 2 && Dim(pooled.get(), 0) == data.shape.batch &&
                                Dim(pooled.get(), 1) == out_c);
    TF_LITE_ENSURE_OK(context, CheckMask(context, mask.get(), data.shape.batch, positions * out_c));
  }
  return context->RequestScratchBufferInArena(context, static_cast<size_t>(scratch_floats) * sizeof(float),
                                              &data.scratch_index);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  float* out = static_cast<float*>(context->GetScratchBuffer(context, data.scratch_index));
  Status s = Conv2DForward(data.shape, data.window, GetTensorData<float>(GetEvalInput(context, node, kX)),
                           GetTensorData<float>(GetEvalInput(context, node, kW)),
                           GetOptionalTensorData<float>(GetEvalInput(context, node, kBias)), Activation::kRelu, out);
  const int32_t O = data.shape.out_c;
  if (s == Status::kOk) {
    s = GlobalAveragePool(out, data.shape.batch, data.positions, O,
                          GetTensorData<float>(GetEvalOutput(context, node, kPooled)));
  }
  const int64_t elements = static_cast<int64_t>(data.positions) * O;
  uint32_t* mask = reinterpret_cast<uint32_t*>(GetEvalOutput(context, node, kMask)->data.i32);
  for (int32_t b = 0; b < data.shape.batch && s == Status::kOk; ++b) {
    s = PositiveMask(out + b * elements, elements, mask + b * MaskWords(elements));
  }
  return ToTfLite(s, kConv2DPoolForwardOp);
}

}  // namespace pool_forward

namespace select_masked {

enum Input : int { kG, kMask, kPositions, kYmax, kParams, kMode };
enum Output : int { kYmaxOut, kK, kKept };

struct OpData {
  RatioParams params;
  int32_t batch, positions, channels;
  int scratch_index;  // scores [B, C], y [B]
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_EQ(context, node->inputs->size, kMode + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kKept + 1);
  OpData& data = DataOf<OpData>(node);
  {
    TempInput g(context, node, kG), mask(context, node, kMask), positions(context, node, kPositions),
        ymax(context, node, kYmax), params(context, node, kParams), mode(context, node, kMode);
    TempOutput ymax_out(context, node, kYmaxOut), k(context, node, kK), kept(context, node, kKept);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {g.get(), mask.get(), positions.get(), ymax.get(), params.get(),
                                                      mode.get(), ymax_out.get(), k.get(), kept.get()}));
    TF_LITE_ENSURE_TYPES_EQ(context, g->type, kTfLiteFloat32);
    TF_LITE_ENSURE_EQ(context, Rank(g.get()), 2);
    data.batch = Dim(g.get(), 0);
    data.channels = Dim(g.get(), 1);
    TF_LITE_ENSURE_OK(context, CheckConstant(context, positions.get(), "positions", kTfLiteInt32, 1));
    data.positions = positions->data.i32[0];
    TF_LITE_ENSURE(context, data.positions >= 1 &&
                                static_cast<int64_t>(data.positions) * data.channels <= kMaxElements);
    TF_LITE_ENSURE_OK(context, CheckMask(context, mask.get(), data.batch,
                                         static_cast<int64_t>(data.positions) * data.channels));
    for (const TfLiteTensor* y : {ymax.get(), ymax_out.get()}) {
      TF_LITE_ENSURE_TYPES_EQ(context, y->type, kTfLiteFloat32);
      TF_LITE_ENSURE_EQ(context, Dim(y, 0), 1);
    }
    TF_LITE_ENSURE_OK(context, CheckConstant(context, params.get(), "params", kTfLiteFloat32, kSelectParamCount));
    data.params = selection::ReadRatioParams(params->data.f);
    TF_LITE_ENSURE_OK(context, ToTfLite(CheckRatioParams(data.params), kSelectChannelsMaskedOp));
    TF_LITE_ENSURE_OK(context, CheckMode(context, mode.get()));
    TF_LITE_ENSURE_TYPES_EQ(context, k->type, kTfLiteInt32);
    TF_LITE_ENSURE_TYPES_EQ(context, kept->type, kTfLiteInt32);
    TF_LITE_ENSURE_EQ(context, Dim(k.get(), 0), data.batch);
    TF_LITE_ENSURE(context, Dim(kept.get(), 0) == data.batch && Dim(kept.get(), 1) == data.channels);
  }
  return context->RequestScratchBufferInArena(
      context, static_cast<size_t>(SelectChannelsScratchSize(data.batch, data.channels)) * sizeof(float),
      &data.scratch_index);
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  const TfLiteEvalTensor* ymax = GetEvalInput(context, node, kYmax);
  TfLiteEvalTensor* ymax_out = GetEvalOutput(context, node, kYmaxOut);
  int32_t* k = GetTensorData<int32_t>(GetEvalOutput(context, node, kK));
  int32_t* kept = GetTensorData<int32_t>(GetEvalOutput(context, node, kKept));
  if (!Training(GetEvalInput(context, node, kMode))) {
    return selection::KeepNothing(data.batch, data.channels, ymax, ymax_out, k, kept);
  }
  float* scores = static_cast<float*>(context->GetScratchBuffer(context, data.scratch_index));
  float* y = scores + static_cast<int64_t>(data.batch) * data.channels;
  float m = ymax->data.f[0];
  Status s = MaskedChannelScores(GetTensorData<float>(GetEvalInput(context, node, kG)),
                                 MaskData(GetEvalInput(context, node, kMask)), data.batch, data.positions,
                                 data.channels, scores, y);
  if (s == Status::kOk) s = SelectChannelsFromScores(scores, y, data.batch, data.channels, data.params, &m, k, kept);
  ymax_out->data.f[0] = m;  // ymax_out may be ymax itself (the in-place training state)
  return ToTfLite(s, kSelectChannelsMaskedOp);
}

}  // namespace select_masked

namespace backward_masked {

enum Input : int { kX, kW, kG, kMask, kK, kKept, kWindow, kSample, kWanted, kDwIn, kDbIn };  // dw_in, db_in: both or none
enum Output : int { kDw = kWantDw, kDx = kWantDx, kDb = kWantDb };

struct OpData {
  Conv2DShape shape;  // batch 1: this sample
  ConvWindow window;
  int32_t batch;      // of g, mask, k, kept
  int32_t sample;
  int32_t positions;
  bool want[kWantedCount];
  bool chained;       // adds to dw_in, db_in
  int scratch_index;  // this sample's delta, positions * O floats
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size == kDwIn || node->inputs->size == kDbIn + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kDb + 1);
  OpData& data = DataOf<OpData>(node);
  data.chained = node->inputs->size == kDbIn + 1;
  int64_t elements;
  {
    TempInput x(context, node, kX), w(context, node, kW), g(context, node, kG), mask(context, node, kMask),
        k(context, node, kK), kept(context, node, kKept), window(context, node, kWindow),
        sample(context, node, kSample), wanted(context, node, kWanted), dw_in(context, node, kDwIn),
        db_in(context, node, kDbIn);
    TempOutput dw(context, node, kDw), dx(context, node, kDx), db(context, node, kDb);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {x.get(), w.get(), g.get(), mask.get(), k.get(), kept.get(),
                                                      window.get(), sample.get(), wanted.get(), dw.get(), dx.get(),
                                                      db.get()}));
    for (const TfLiteTensor* t : {x.get(), w.get(), g.get(), dw.get(), db.get()}) {
      TF_LITE_ENSURE_TYPES_EQ(context, t->type, kTfLiteFloat32);
    }
    TF_LITE_ENSURE_TYPES_EQ(context, k->type, kTfLiteInt32);
    TF_LITE_ENSURE_TYPES_EQ(context, kept->type, kTfLiteInt32);
    TF_LITE_ENSURE_OK(context, ReadWanted(context, wanted, data.want));
    TF_LITE_ENSURE_MSG(context, !data.want[kWantDx],
                       "TINYPROP_CONV2D_BACKWARD_MASKED: computes no dx (wanted[1] must be 0)");
    int32_t out_c;
    ConvGeometry geometry{};
    TF_LITE_ENSURE_OK(context, PrepareConvGeometry<false>(context, x.get(), w.get(), window, nullptr,
                                                          kConv2DBackwardMaskedOp, &data.window, &data.shape, &out_c,
                                                          &geometry));
    TF_LITE_ENSURE_MSG(context, data.shape.batch == 1, "TINYPROP_CONV2D_BACKWARD_MASKED: x is one sample's");
    data.positions = geometry.out_h * geometry.out_w;
    elements = static_cast<int64_t>(data.positions) * out_c;
    TF_LITE_ENSURE(context, Rank(g.get()) == 2 && Dim(g.get(), 1) == out_c);
    data.batch = Dim(g.get(), 0);
    TF_LITE_ENSURE_OK(context, CheckMask(context, mask.get(), data.batch, elements));
    TF_LITE_ENSURE_EQ(context, Dim(k.get(), 0), data.batch);
    TF_LITE_ENSURE(context, Dim(kept.get(), 0) == data.batch && Dim(kept.get(), 1) == out_c);
    TF_LITE_ENSURE_OK(context, CheckConstant(context, sample.get(), "sample", kTfLiteInt32, 1));
    data.sample = sample->data.i32[0];
    TF_LITE_ENSURE(context, data.sample >= 0 && data.sample < data.batch);
    if (data.want[kWantDw]) TF_LITE_ENSURE(context, tflite::HaveSameShapes(dw.get(), w.get()));
    if (data.want[kWantDb]) TF_LITE_ENSURE_EQ(context, Dim(db.get(), 0), out_c);
    if (data.chained) {
      TF_LITE_ENSURE_OK(context, CheckPresent(context, {dw_in.get(), db_in.get()}));
      TF_LITE_ENSURE(context, tflite::HaveSameShapes(dw_in.get(), dw.get()) &&
                                  tflite::HaveSameShapes(db_in.get(), db.get()));
    }
  }
  return context->RequestScratchBufferInArena(context, static_cast<size_t>(elements) * sizeof(float),
                                              &data.scratch_index);
}

void Copy(const TfLiteEvalTensor* from, TfLiteEvalTensor* to, int64_t count) {
  for (int64_t i = 0; i < count; ++i) to->data.f[i] = from->data.f[i];
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  const int32_t O = data.shape.out_c, b = data.sample;
  const int64_t words = MaskWords(static_cast<int64_t>(data.positions) * O);
  float* delta = static_cast<float*>(context->GetScratchBuffer(context, data.scratch_index));
  Status s = MaskedDelta(GetTensorData<float>(GetEvalInput(context, node, kG)) + static_cast<int64_t>(b) * O,
                         MaskData(GetEvalInput(context, node, kMask)) + b * words, data.positions, O, delta);
  float* dw = OutputIfWanted(context, node, data.want, kDw);
  float* db = OutputIfWanted(context, node, data.want, kDb);
  if (data.chained) {  // the samples before this one: their sums go on (the batched kernel's order, so its bits)
    const int64_t weights = static_cast<int64_t>(data.window.kernel_h) * data.window.kernel_w * data.shape.in_c * O;
    if (dw != nullptr) Copy(GetEvalInput(context, node, kDwIn), GetEvalOutput(context, node, kDw), weights);
    if (db != nullptr) Copy(GetEvalInput(context, node, kDbIn), GetEvalOutput(context, node, kDb), O);
  }
  const KeptSet kept{GetTensorData<int32_t>(GetEvalInput(context, node, kK)) + b,
                     GetTensorData<int32_t>(GetEvalInput(context, node, kKept)) + static_cast<int64_t>(b) * O, O};
  if (s == Status::kOk) {
    s = Conv2DBackwardSparse(data.shape, data.window, GetTensorData<float>(GetEvalInput(context, node, kX)),
                             GetTensorData<float>(GetEvalInput(context, node, kW)), delta, kept, BiasGrad::kDense,
                             data.chained ? Accumulate::kAdd : Accumulate::kOverwrite, dw, nullptr, db);
  }
  return ToTfLite(s, kConv2DBackwardMaskedOp);
}

}  // namespace backward_masked
}  // namespace masked_block

// ---- TINYPROP_APPLY_GRADIENT --------------------------------------------------------------------------------
// in: w, g, mode, hyper (HyperParam), then the rule's state: momentum SGD velocity; Adam m, v and powers [2] =
// (beta_1^t, beta_2^t). out: w, then the state tensors, each its input itself (updated in place).
namespace apply_gradient {

enum Input : int { kW, kGradient, kMode, kHyper, kFirstState };
// The rule's state inputs from kFirstState: velocity; or m, v, powers.
enum StateInput : int { kVelocity = kFirstState, kAdamM = kFirstState, kAdamV, kAdamPowers };
enum Output : int { kWOut, kVelocityOut, kAdamMOut = kVelocityOut, kAdamVOut };

enum class Rule : int32_t { kSgd = 0, kMomentum = 1, kNesterov = 2, kAdam = 3 };

struct OpData {
  Rule rule;
  int32_t count;
  union {
    SgdParams sgd;    // kSgd, kMomentum, kNesterov
    AdamParams adam;  // kAdam
  };
};

int StateInputs(Rule rule) { return rule == Rule::kAdam ? 3 : (rule == Rule::kSgd ? 0 : 1); }
int StateOutputs(Rule rule) { return rule == Rule::kAdam ? 2 : StateInputs(rule); }

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE(context, node->inputs->size >= kFirstState);
  OpData& data = DataOf<OpData>(node);
  {
    TempInput hyper(context, node, kHyper), mode(context, node, kMode);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {hyper.get(), mode.get()}));
    TF_LITE_ENSURE_OK(context, CheckConstant(context, hyper.get(), "hyper", kTfLiteFloat32, kHyperParamCount));
    const float* h = hyper->data.f;
    TF_LITE_ENSURE_MSG(context, h[kRule] >= 0.0f && h[kRule] <= 3.0f,
                       "TINYPROP_APPLY_GRADIENT: hyper[0] (the rule) must be 0 to 3");
    data.rule = static_cast<Rule>(static_cast<int32_t>(h[kRule]));
    if (data.rule == Rule::kAdam) {
      data.adam = AdamParams{h[kLearningRate], h[kMomentumOrBeta1], h[kBeta2],
                             h[kEpsilon],      h[kOneMinusBeta1],   h[kOneMinusBeta2]};
    } else {
      data.sgd = SgdParams{h[kLearningRate], data.rule == Rule::kSgd ? 0.0f : h[kMomentumOrBeta1],
                           data.rule == Rule::kNesterov};
    }
    TF_LITE_ENSURE_OK(context, CheckMode(context, mode.get()));
  }
  TF_LITE_ENSURE_EQ(context, node->inputs->size, kFirstState + StateInputs(data.rule));
  TF_LITE_ENSURE_EQ(context, node->outputs->size, 1 + StateOutputs(data.rule));
  {
    TempInput g(context, node, kGradient);
    TempOutput w(context, node, kWOut);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {g.get(), w.get()}));
    TF_LITE_ENSURE_TYPES_EQ(context, g->type, kTfLiteFloat32);
    TF_LITE_ENSURE_TYPES_EQ(context, w->type, kTfLiteFloat32);
    TF_LITE_ENSURE(context, Elements(w.get()) <= kMaxElements && Elements(g.get()) == Elements(w.get()));
    data.count = static_cast<int32_t>(Elements(w.get()));
  }
  TF_LITE_ENSURE_MSG(context, InPlace(node, kWOut, kW), "TINYPROP_APPLY_GRADIENT: output 0 must be input 0");
  for (int i = kVelocityOut; i < node->outputs->size; ++i) {
    const int state_input = kFirstState + (i - kVelocityOut);
    TF_LITE_ENSURE_MSG(context, InPlace(node, i, state_input),
                       "TINYPROP_APPLY_GRADIENT: the state outputs must be the state inputs (in place)");
    TempOutput state(context, node, i);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {state.get()}));
    TF_LITE_ENSURE_TYPES_EQ(context, state->type, kTfLiteFloat32);
    TF_LITE_ENSURE(context, Elements(state.get()) == data.count);
  }
  if (data.rule == Rule::kAdam) {
    TempInput powers(context, node, kAdamPowers);
    TF_LITE_ENSURE_OK(context, CheckPresent(context, {powers.get()}));
    TF_LITE_ENSURE_TYPES_EQ(context, powers->type, kTfLiteFloat32);
    TF_LITE_ENSURE(context, Elements(powers.get()) == 2);
  }
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData& data = DataOf<OpData>(node);
  if (!Training(GetEvalInput(context, node, kMode))) return kTfLiteOk;
  float* w = GetTensorData<float>(GetEvalOutput(context, node, kWOut));
  const float* g = GetTensorData<float>(GetEvalInput(context, node, kGradient));
  if (data.rule == Rule::kAdam) {
    const float* powers = GetTensorData<float>(GetEvalInput(context, node, kAdamPowers));
    return ToTfLite(AdamUpdate(data.adam, powers[0], powers[1], w, g,
                               GetTensorData<float>(GetEvalOutput(context, node, kAdamMOut)),
                               GetTensorData<float>(GetEvalOutput(context, node, kAdamVOut)), data.count),
                    kApplyGradientOp);
  }
  float* velocity =
      data.rule == Rule::kSgd ? nullptr : GetTensorData<float>(GetEvalOutput(context, node, kVelocityOut));
  return ToTfLite(SgdUpdate(data.sgd, w, g, velocity, data.count), kApplyGradientOp);
}

}  // namespace apply_gradient

// ---- TINYPROP_COUNT_STEP ----------------------------------------------------------------------------------
// in: counter int32 [] or [1], mode; out: counter (itself) + 1 on a training invoke.
namespace count_step {

enum Input : int { kCounter, kMode };
enum Output : int { kCounterOut };

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_EQ(context, node->inputs->size, kMode + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kCounterOut + 1);
  TempInput mode(context, node, kMode);
  TempOutput counter(context, node, kCounterOut);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {mode.get(), counter.get()}));
  TF_LITE_ENSURE_TYPES_EQ(context, counter->type, kTfLiteInt32);
  TF_LITE_ENSURE(context, Elements(counter.get()) == 1);
  TF_LITE_ENSURE_MSG(context, InPlace(node, kCounterOut, kCounter), "TINYPROP_COUNT_STEP: output 0 must be input 0");
  return CheckMode(context, mode.get());
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  if (Training(GetEvalInput(context, node, kMode))) {
    GetTensorData<int32_t>(GetEvalOutput(context, node, kCounterOut))[0] += 1;
  }
  return kTfLiteOk;
}

}  // namespace count_step

// ---- TINYPROP_ASSIGN --------------------------------------------------------------------------------------
// in: state, value (same type and size), mode; out: state (itself) = value on a training invoke.
namespace assign {

enum Input : int { kState, kValue, kMode };
enum Output : int { kStateOut };

struct OpData {
  size_t bytes;
};

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  TF_LITE_ENSURE_EQ(context, node->inputs->size, kMode + 1);
  TF_LITE_ENSURE_EQ(context, node->outputs->size, kStateOut + 1);
  TempInput value(context, node, kValue), mode(context, node, kMode);
  TempOutput state(context, node, kStateOut);
  TF_LITE_ENSURE_OK(context, CheckPresent(context, {value.get(), mode.get(), state.get()}));
  TF_LITE_ENSURE_TYPES_EQ(context, value->type, state->type);
  TF_LITE_ENSURE(context, Elements(value.get()) == Elements(state.get()));
  TF_LITE_ENSURE_MSG(context, InPlace(node, kStateOut, kState), "TINYPROP_ASSIGN: output 0 must be input 0");
  DataOf<OpData>(node).bytes = state->bytes;
  return CheckMode(context, mode.get());
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  if (!Training(GetEvalInput(context, node, kMode))) return kTfLiteOk;
  const char* src = GetTensorData<char>(GetEvalInput(context, node, kValue));
  char* dst = GetTensorData<char>(GetEvalOutput(context, node, kStateOut));
  const size_t bytes = DataOf<OpData>(node).bytes;
  for (size_t i = 0; i < bytes; ++i) dst[i] = src[i];
  return kTfLiteOk;
}

}  // namespace assign

}  // namespace

TFLMRegistration Register_TINYPROP_DENSE_FORWARD() {
  return tflite::micro::RegisterOp(InitOpData<dense_forward::OpData>, dense_forward::Prepare, dense_forward::Eval);
}

TFLMRegistration Register_TINYPROP_RELU_BACKWARD() {
  return tflite::micro::RegisterOp(InitOpData<relu_backward::OpData>, relu_backward::Prepare, relu_backward::Eval);
}

TFLMRegistration Register_TINYPROP_SELECT_UNITS() {
  return tflite::micro::RegisterOp(InitOpData<selection::OpData>, selection::Prepare<false>, selection::Eval<false>);
}

TFLMRegistration Register_TINYPROP_SELECT_CHANNELS() {
  return tflite::micro::RegisterOp(InitOpData<selection::OpData>, selection::Prepare<true>, selection::Eval<true>);
}

TFLMRegistration Register_TINYPROP_DENSE_BACKWARD() {
  return tflite::micro::RegisterOp(InitOpData<dense_backward::OpData>, dense_backward::Prepare,
                                   dense_backward::Eval);
}

TFLMRegistration Register_TINYPROP_DENSE_BACKWARD_SGD() {
  return tflite::micro::RegisterOp(InitOpData<dense_backward::OpData>, dense_backward::SgdPrepare,
                                   dense_backward::SgdEval);
}

TFLMRegistration Register_TINYPROP_CONV2D_FORWARD() {
  return tflite::micro::RegisterOp(InitOpData<conv_forward::OpData<false>>, conv_forward::Prepare<false>,
                                   conv_forward::Eval<false>);
}

TFLMRegistration Register_TINYPROP_DEPTHWISE_FORWARD() {
  return tflite::micro::RegisterOp(InitOpData<conv_forward::OpData<true>>, conv_forward::Prepare<true>,
                                   conv_forward::Eval<true>);
}

TFLMRegistration Register_TINYPROP_GLOBAL_AVERAGE_POOL() {
  return tflite::micro::RegisterOp(InitOpData<global_average_pool::OpData>, global_average_pool::Prepare,
                                   global_average_pool::Eval);
}

TFLMRegistration Register_TINYPROP_CONV2D_BACKWARD() {
  return tflite::micro::RegisterOp(InitOpData<conv_backward::OpData<false>>, conv_backward::Prepare<false>,
                                   conv_backward::Eval<false>);
}

TFLMRegistration Register_TINYPROP_DEPTHWISE_BACKWARD() {
  return tflite::micro::RegisterOp(InitOpData<conv_backward::OpData<true>>, conv_backward::Prepare<true>,
                                   conv_backward::Eval<true>);
}

TFLMRegistration Register_TINYPROP_CONV2D_POOL_FORWARD() {
  return tflite::micro::RegisterOp(InitOpData<masked_block::pool_forward::OpData>, masked_block::pool_forward::Prepare,
                                   masked_block::pool_forward::Eval);
}

TFLMRegistration Register_TINYPROP_SELECT_CHANNELS_MASKED() {
  return tflite::micro::RegisterOp(InitOpData<masked_block::select_masked::OpData>,
                                   masked_block::select_masked::Prepare, masked_block::select_masked::Eval);
}

TFLMRegistration Register_TINYPROP_CONV2D_BACKWARD_MASKED() {
  return tflite::micro::RegisterOp(InitOpData<masked_block::backward_masked::OpData>,
                                   masked_block::backward_masked::Prepare, masked_block::backward_masked::Eval);
}

TFLMRegistration Register_TINYPROP_APPLY_GRADIENT() {
  return tflite::micro::RegisterOp(InitOpData<apply_gradient::OpData>, apply_gradient::Prepare,
                                   apply_gradient::Eval);
}

TFLMRegistration Register_TINYPROP_COUNT_STEP() {
  return tflite::micro::RegisterOp(/*init=*/nullptr, count_step::Prepare, count_step::Eval);
}

TFLMRegistration Register_TINYPROP_ASSIGN() {
  return tflite::micro::RegisterOp(InitOpData<assign::OpData>, assign::Prepare, assign::Eval);
}

}  // namespace tflm
}  // namespace tinyprop
