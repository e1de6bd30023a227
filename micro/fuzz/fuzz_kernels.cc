// Fuzz target for every entry point of the TinyProp kernels: random shapes and parameters (valid and invalid,
// null pointers, NaN/Inf, huge and negative sizes). Built with libFuzzer (clang) or with driver_main.cc
// (any compiler), always under ASan + UBSan. Buffers are allocated with their exact sizes, so any read or
// write past what the documented shapes allow is reported by ASan. A call that must be rejected (invalid
// shape) but returns kOk aborts.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tinyprop/tinyprop.h"

using namespace tinyprop;

namespace {

constexpr int64_t kCap = int64_t{1} << 16;  // largest buffer (elements) the fuzzer allocates

[[noreturn]] void Die(const char* what, int line) {
  std::fprintf(stderr, "fuzz invariant violated (line %d): %s\n", line, what);
  std::abort();
}
#define FUZZ_ASSERT(c)            \
  do {                            \
    if (!(c)) Die(#c, __LINE__);  \
  } while (0)

struct Input {
  const uint8_t* data;
  size_t size;
  size_t pos = 0;
  uint8_t U8() { return pos < size ? data[pos++] : 0; }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | U8();
    return v;
  }
  bool Bit() { return U8() & 1; }
  // Mostly small positive sizes; sometimes 0, negative or huge.
  int32_t Dim(int32_t small_max = 8) {
    const uint8_t sel = U8();
    switch (sel % 20) {
      case 0: return 0;
      case 1: return -1 - static_cast<int32_t>(U8() % 4);
      case 2: return INT32_MAX;
      case 3: return INT32_MIN;
      case 4: return 1 << 16;
      case 5: return 46341;  // ceil(sqrt(2^31))
      case 6: return static_cast<int32_t>(U32());
      default: return 1 + static_cast<int32_t>(U8() % small_max);
    }
  }
  float Float() {
    const uint8_t sel = U8();
    switch (sel % 16) {
      case 0: return NAN;
      case 1: return INFINITY;
      case 2: return -INFINITY;
      case 3: return 0.0f;
      case 4: return -0.0f;
      case 5: return FLT_MIN / 4;  // subnormal
      case 6: return FLT_MAX;
      case 7: {
        uint32_t u = U32();
        float f;
        std::memcpy(&f, &u, 4);
        return f;
      }
      default: return static_cast<float>(static_cast<int32_t>(U8()) - 128) / 64.0f;
    }
  }
  float Unit() {  // mostly in [0, 1]
    return (U8() % 4) ? static_cast<float>(U8()) / 255.0f : Float();
  }
  void Fill(std::vector<float>& v) {
    const uint8_t mode = U8() % 4;
    for (auto& x : v) {
      if (mode == 0) x = Float();
      else if (mode == 1) x = static_cast<float>(U8() % 3);  // ties
      else x = static_cast<float>(static_cast<int32_t>(U8()) - 128) / 32.0f;
    }
  }
};

// Product of dims if every dim >= 1 and the product fits int32; -1 if the shape is invalid.
int64_t Elements(std::initializer_list<int64_t> dims) {
  int64_t p = 1;
  for (int64_t d : dims) {
    if (d < 1 || d > INT32_MAX / p) return -1;
    p *= d;
  }
  return p;
}

// A float buffer of n elements (exact size), or null when asked; n < 0 (invalid shape) gives a 1-element buffer.
struct FBuf {
  std::vector<float> v;
  bool null = false;
  float* ptr() { return null ? nullptr : v.data(); }
};
FBuf MakeF(Input& in, int64_t n) {
  FBuf b;
  b.null = (in.U8() % 16) == 0;
  b.v.resize(static_cast<size_t>(n > 0 ? n : 1));
  in.Fill(b.v);
  return b;
}

// Expectation helper: an invalid shape must not return kOk.
void ExpectRejected(Status s) { FUZZ_ASSERT(s != Status::kOk); }

struct KeptBuf {
  std::vector<int32_t> k, index;
  int32_t stride = 0;
  bool ok_shape = false;
  KeptSet view() const { return KeptSet{k.data(), index.data(), stride}; }
};

// Kept sets over [batch, n] (batch, n valid and small): valid top-k rows or garbage.
KeptBuf MakeKept(Input& in, int32_t batch, int32_t n) {
  KeptBuf kb;
  kb.k.resize(static_cast<size_t>(batch));
  const uint8_t mode = in.U8() % 4;
  const uint8_t stride_mode = in.U8() % 4;
  kb.stride = stride_mode == 0 ? 0 : stride_mode == 1 ? static_cast<int32_t>(in.U8() % (n + 3)) - 1 : n;
  for (auto& v : kb.k) v = (mode == 3) ? static_cast<int32_t>(in.U32()) % (n + 3) - 1 : static_cast<int32_t>(in.U8() % (n + 1));
  const int64_t rows = kb.stride > 0 ? static_cast<int64_t>(batch - 1) * kb.stride + n : n;
  kb.index.assign(static_cast<size_t>(rows), -1);
  if (mode == 2) {
    for (auto& v : kb.index) v = static_cast<int32_t>(in.U8() % (n + 2)) - 1;  // garbage indices
  } else {
    // ascending valid rows: pick entries by bits
    for (int32_t b = 0; b < (kb.stride > 0 ? batch : 1); ++b) {
      int32_t t = 0;
      for (int32_t j = 0; j < n; ++j) {
        if (in.Bit()) kb.index[static_cast<size_t>(b) * (kb.stride > 0 ? kb.stride : 0) + t++] = j;
        if (kb.stride > 0 && t >= kb.stride) break;
      }
      if (kb.stride > 0) {
        if (kb.k[b] > t) kb.k[b] = t;
      } else {
        for (auto& v : kb.k) v = v > t ? t : v;
      }
    }
  }
  return kb;
}

void FuzzRatio(Input& in) {
  RatioParams p{in.Unit(), in.Unit(), in.Unit(), static_cast<Rounding>(in.U8() % 3)};
  float bpr = 0;
  int32_t k = 0;
  const int32_t n = in.Dim(1000);
  if (AdaptiveRatio(in.Float(), in.Float(), p, &bpr) == Status::kOk) {
    FUZZ_ASSERT(!std::isnan(bpr));
  }
  if (RatioToK(in.Float(), n, p.rounding, &k) == Status::kOk) FUZZ_ASSERT(k >= 1 && k <= n);
  if (StaticK(in.Unit(), in.Unit(), n, p.rounding, &k) == Status::kOk) FUZZ_ASSERT(k >= 1 && k <= n);
  float zp = 0;
  (void)ZetaPow(static_cast<double>(in.Float()), static_cast<int32_t>(in.U8()) - 3, &zp);
  (void)CheckRatioParams(p);
  const int32_t batch = in.Dim();
  const int64_t nb = Elements({batch});
  if (nb < 0) {
    float y = 1, m = 1;
    ExpectRejected(UpdateRunningMax(&y, batch, &m));
    ExpectRejected(AdaptiveK(&y, batch, n, p, &m, &bpr, &k));
    return;
  }
  if (nb > kCap) return;
  FBuf y = MakeF(in, nb);
  float ymax = in.Bit() ? kYmaxInit : in.Float();
  std::vector<float> bprs(static_cast<size_t>(nb));
  std::vector<int32_t> ks(static_cast<size_t>(nb));
  (void)UpdateRunningMax(y.ptr(), batch, in.Bit() ? &ymax : nullptr);
  if (AdaptiveK(y.ptr(), batch, n, p, &ymax, in.Bit() ? bprs.data() : nullptr, ks.data()) == Status::kOk) {
    for (int32_t v : ks) FUZZ_ASSERT(v >= 1 && v <= n);
  }
}

void FuzzScores(Input& in) {
  const int32_t b = in.Dim(), p = in.Dim(), c = in.Dim();
  const int64_t total = Elements({b, p, c});
  const int64_t bc = Elements({b, c});
  if (total < 0) {
    float one = 0;
    ExpectRejected(ChannelScores(&one, b, p, c, &one, nullptr));
    ExpectRejected(SharedChannelScores(&one, b, p, c, &one));
    return;
  }
  if (total > kCap) return;
  FBuf d = MakeF(in, total);
  std::vector<float> scores(static_cast<size_t>(bc)), y(static_cast<size_t>(b)), shared(static_cast<size_t>(c));
  (void)ChannelScores(d.ptr(), b, p, c, scores.data(), in.Bit() ? y.data() : nullptr);
  (void)SharedChannelScores(d.ptr(), b, p, c, shared.data());
  (void)LocalError(d.ptr(), b, p * c, y.data());
}

void FuzzTopK(Input& in) {
  const int32_t n = in.Dim(40), batch = in.Dim(4);
  const int64_t total = Elements({batch, n});
  if (total < 0 || total > kCap) {
    float s = 0;
    int32_t kk = 1, out = 0;
    if (Elements({n}) < 0) {
      ExpectRejected(TopKIndices(&s, n, kk, &out));
      ExpectRejected(TopKAbsIndices(&s, n, kk, &out));
    }
    if (total < 0) ExpectRejected(TopKBatch(&s, batch, n, &kk, &out));
    return;
  }
  FBuf s = MakeF(in, total);
  const int32_t k = (in.U8() % 4) ? 1 + static_cast<int32_t>(in.U8() % n) : static_cast<int32_t>(in.U32());
  std::vector<int32_t> kept(static_cast<size_t>(k >= 1 && k <= n ? k : 1));
  if (k < 1 || k > n) {
    ExpectRejected(TopKIndices(s.ptr(), n, k, kept.data()));
  } else if (TopKIndices(s.ptr(), n, k, kept.data()) == Status::kOk) {
    for (int32_t t = 0; t < k; ++t) FUZZ_ASSERT(kept[t] >= 0 && kept[t] < n && (t == 0 || kept[t] > kept[t - 1]));
  }
  if (k >= 1 && k <= n) (void)TopKAbsIndices(s.ptr(), n, k, kept.data());
  std::vector<int32_t> ks(static_cast<size_t>(batch));
  for (auto& v : ks) v = (in.U8() % 8) ? static_cast<int32_t>(in.U8() % (n + 1)) : static_cast<int32_t>(in.U32());
  std::vector<int32_t> rows(static_cast<size_t>(total));
  if (TopKBatch(s.ptr(), batch, n, ks.data(), rows.data()) == Status::kOk) {
    FUZZ_ASSERT(CheckKeptSet(KeptSet{ks.data(), rows.data(), n}, batch, n) == Status::kOk);
  }
}

void FuzzKeptHelpers(Input& in) {
  const int32_t n = in.Dim(30), batch = in.Dim(4);
  if (Elements({batch, n}) < 0 || Elements({batch, n}) > kCap) {
    int32_t k = 1, idx = 0;
    if (Elements({batch, n}) < 0) ExpectRejected(CheckKeptSet(KeptSet{&k, &idx, 1}, batch, n));
    return;
  }
  KeptBuf kb = MakeKept(in, batch, n);
  (void)CheckKeptSet(kb.view(), batch, n);
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  std::vector<int32_t> uni(static_cast<size_t>(n));
  int32_t count = -1;
  if (KeptUnion(kb.view(), batch, n, mask.data(), uni.data(), &count) == Status::kOk) {
    FUZZ_ASSERT(count >= 0 && count <= n);
  }
  const int32_t k0 = kb.k[0];
  const size_t avail = kb.index.size();
  if (k0 >= 0 && static_cast<size_t>(k0) <= avail) {
    (void)KeptToMask(kb.index.data(), k0, n, mask.data());
    std::vector<float> v(static_cast<size_t>(n), 1.0f);
    (void)ZeroUnkept(v.data(), n, kb.index.data(), k0);
  } else {
    ExpectRejected(KeptToMask(kb.index.data(), k0, n, mask.data()));
  }
}

void FuzzSelect(Input& in) {
  const bool channels = in.Bit();
  const int32_t b = in.Dim(4), p = channels ? in.Dim(6) : 1, n = in.Dim(24);
  const int64_t total = Elements({b, p, n});
  RatioParams params{in.Unit(), in.Unit(), in.Unit(), static_cast<Rounding>(in.U8() % 3)};
  float ymax = in.Bit() ? kYmaxInit : in.Float();
  if (total < 0) {
    float one = 1;
    int32_t k = 0, kept = 0;
    if (channels) {
      ExpectRejected(SelectChannels(&one, b, p, n, params, &ymax, &k, &kept, &one, 1));
    } else {
      ExpectRejected(SelectUnits(&one, b, n, params, &ymax, &k, &kept, &one, 1));
    }
    return;
  }
  if (total > kCap) return;
  FBuf d = MakeF(in, total);
  std::vector<int32_t> k(static_cast<size_t>(b)), kept(static_cast<size_t>(b) * n);
  const int64_t need = channels ? SelectChannelsScratchSize(b, n) : SelectUnitsScratchSize(b);
  const int64_t have = need - static_cast<int64_t>(in.U8() % 4 == 0);  // sometimes one short
  std::vector<float> scratch(static_cast<size_t>(have > 0 ? have : 1));
  const Status s = channels ? SelectChannels(d.ptr(), b, p, n, params, &ymax, k.data(), kept.data(), scratch.data(), have)
                            : SelectUnits(d.ptr(), b, n, params, &ymax, k.data(), kept.data(), scratch.data(), have);
  if (s == Status::kOk) {
    FUZZ_ASSERT(CheckKeptSet(KeptSet{k.data(), kept.data(), n}, b, n) == Status::kOk);
    FUZZ_ASSERT(have >= need);
  }
}

void FuzzDense(Input& in) {
  const DenseShape s{in.Dim(4), in.Dim(12), in.Dim(12)};
  const int64_t nx = Elements({s.batch, s.in}), nw = Elements({s.in, s.out}), nd = Elements({s.batch, s.out});
  const BiasGrad bias = static_cast<BiasGrad>(in.U8() % 3);
  const Accumulate mode = static_cast<Accumulate>(in.U8() % 3);
  if (nx < 0 || nw < 0 || nd < 0) {
    float one = 0;
    int32_t k = 0, idx = 0;
    ExpectRejected(DenseBackwardReference(s, &one, &one, &one, &one, &one, &one));
    ExpectRejected(DenseForward(s, &one, &one, &one, &one));
    ExpectRejected(DenseBackwardSparse(s, &one, &one, &one, KeptSet{&k, &idx, 1}, bias, mode, &one, &one, &one));
    return;
  }
  if (nx > kCap || nw > kCap || nd > kCap || Elements({s.batch, s.in, s.out}) < 0 ||
      Elements({s.batch, s.in, s.out}) > (int64_t{1} << 20)) {
    return;  // valid but too big to allocate / too slow for one fuzz input
  }
  FBuf x = MakeF(in, int64_t{s.batch} * s.in), w = MakeF(in, int64_t{s.in} * s.out), d = MakeF(in, int64_t{s.batch} * s.out);
  FBuf dw = MakeF(in, int64_t{s.in} * s.out), dx = MakeF(in, int64_t{s.batch} * s.in), db = MakeF(in, s.out);
  const KeptBuf kb = MakeKept(in, s.batch, s.out);
  (void)DenseBackwardSparse(s, x.ptr(), w.ptr(), d.ptr(), kb.view(), bias, mode, dw.ptr(), dx.ptr(), db.ptr());
  (void)DenseBackwardReference(s, x.ptr(), w.ptr(), d.ptr(), dw.ptr(), dx.ptr(), db.ptr());
  (void)DenseForward(s, x.ptr(), w.ptr(), in.U8() % 2 ? db.ptr() : nullptr, d.ptr());
  FBuf b = MakeF(in, s.out);
  const bool with_bias = in.U8() % 2;
  std::vector<int32_t> scratch(static_cast<size_t>(
      DenseSgdScratchBytes(s.batch > 0 ? s.batch : 0, s.in > 0 ? s.in : 0) / 4));
  (void)DenseBackwardSparseSgd(s, x.ptr(), w.ptr(), with_bias ? b.ptr() : nullptr, d.ptr(), kb.view(), in.Float(),
                               in.U8() % 2 ? dx.ptr() : nullptr, scratch.data(),
                               4 * static_cast<int64_t>(scratch.size()) - (in.U8() % 4 == 0));
  FBuf a = MakeF(in, int64_t{s.batch} * s.out);
  (void)ReluBackward(d.ptr(), a.ptr(), s.batch * s.out, d.ptr());
}

// Independent geometry (int64) to size the buffers; false when the window/shape must be rejected.
bool Geometry(int64_t in, int64_t k, int64_t stride, int64_t dil, bool same, int64_t* out) {
  if (in < 1 || k < 1 || stride < 1 || dil < 1) return false;
  const int64_t ek = (k - 1) * dil + 1;
  if (same) {
    *out = (in + stride - 1) / stride;
    const int64_t total = (*out - 1) * stride + ek - in;
    if (total / 2 > INT32_MAX) return false;
  } else {
    if (in < ek) return false;
    *out = (in - ek) / stride + 1;
  }
  return true;
}

void FuzzConv(Input& in, bool depthwise) {
  const int32_t B = in.Dim(3), H = in.Dim(7), W = in.Dim(7), C = in.Dim(4), O = in.Dim(depthwise ? 3 : 6);
  const uint8_t pad_sel = in.U8() % 5;
  const ConvWindow win{in.Dim(3), in.Dim(3), in.Dim(3), in.Dim(3), in.Dim(2), in.Dim(2),
                       static_cast<Padding>(pad_sel == 4 ? 7 : pad_sel % 2)};
  const bool same = win.padding == Padding::kSame;
  int64_t oh = 0, ow = 0;
  bool valid = pad_sel != 4 && Geometry(H, win.kernel_h, win.stride_h, win.dilation_h, same, &oh) &&
               Geometry(W, win.kernel_w, win.stride_w, win.dilation_w, same, &ow);
  ConvGeometry g{};
  const Status gs = ComputeConvGeometry(H, W, win, &g);
  if (!valid) ExpectRejected(gs);
  if (valid && gs == Status::kOk) FUZZ_ASSERT(g.out_h == oh && g.out_w == ow);
  const int64_t out_c = depthwise ? Elements({C, O}) : Elements({O});
  const int64_t nx = Elements({B, H, W, C});
  const int64_t nk = Elements({win.kernel_h, win.kernel_w, C, O});
  const int64_t nd = valid && out_c > 0 ? Elements({B, oh, ow, out_c}) : -1;
  valid = valid && out_c > 0 && nx > 0 && nk > 0 && nd > 0;
  const BiasGrad bias = static_cast<BiasGrad>(in.U8() % 3);
  const Accumulate mode = static_cast<Accumulate>(in.U8() % 3);
  if (!valid) {
    float one = 0;
    int32_t k = 0, idx = 0;
    const KeptSet ks{&k, &idx, 1};
    if (depthwise) {
      const DepthwiseShape s{B, H, W, C, O};
      ExpectRejected(DepthwiseConv2DBackwardReference(s, win, &one, &one, &one, &one, &one, &one));
      ExpectRejected(DepthwiseConv2DBackwardSparse(s, win, &one, &one, &one, ks, bias, mode, &one, &one, &one));
    } else {
      const Conv2DShape s{B, H, W, C, O};
      ExpectRejected(Conv2DBackwardReference(s, win, &one, &one, &one, &one, &one, &one));
      ExpectRejected(Conv2DBackwardSparse(s, win, &one, &one, &one, ks, bias, mode, &one, &one, &one));
    }
    return;
  }
  if (nx > kCap || nk > kCap || nd > kCap) return;
  const int64_t work = nd * win.kernel_h * win.kernel_w * (depthwise ? 1 : C);
  if (work > (int64_t{1} << 20)) return;  // keep each input fast
  FBuf x = MakeF(in, nx), w = MakeF(in, nk), d = MakeF(in, nd);
  FBuf dw = MakeF(in, nk), dx = MakeF(in, nx), db = MakeF(in, out_c);
  const KeptBuf kb = MakeKept(in, B, static_cast<int32_t>(out_c));
  if (depthwise) {
    const DepthwiseShape s{B, H, W, C, O};
    (void)DepthwiseConv2DBackwardSparse(s, win, x.ptr(), w.ptr(), d.ptr(), kb.view(), bias, mode, dw.ptr(), dx.ptr(), db.ptr());
    (void)DepthwiseConv2DBackwardReference(s, win, x.ptr(), w.ptr(), d.ptr(), dw.ptr(), dx.ptr(), db.ptr());
  } else {
    const Conv2DShape s{B, H, W, C, O};
    (void)Conv2DBackwardSparse(s, win, x.ptr(), w.ptr(), d.ptr(), kb.view(), bias, mode, dw.ptr(), dx.ptr(), db.ptr());
    (void)Conv2DBackwardReference(s, win, x.ptr(), w.ptr(), d.ptr(), dw.ptr(), dx.ptr(), db.ptr());
  }
}

void FuzzLoss(Input& in) {
  const int32_t B = in.Dim(6), C = in.Dim(12);
  const int64_t n = Elements({B, C});
  float loss = 0;
  if (n < 0) {
    float one = 0;
    int32_t label = 0;
    ExpectRejected(SoftmaxCrossEntropy(&one, &label, B, C, &loss, &one));
    ExpectRejected(SoftmaxCrossEntropyDense(&one, &one, B, C, &loss, &one));
    ExpectRejected(MeanSquaredError(&one, &one, B, C, &loss, &one));
    return;
  }
  if (n > kCap) return;
  FBuf z = MakeF(in, n), t = MakeF(in, n), g = MakeF(in, n);
  std::vector<int32_t> labels(static_cast<size_t>(B));
  for (auto& l : labels) l = (in.U8() % 8) ? static_cast<int32_t>(in.U8() % C) : static_cast<int32_t>(in.U32());
  (void)SoftmaxCrossEntropy(z.ptr(), labels.data(), B, C, in.Bit() ? &loss : nullptr, g.ptr());
  (void)SoftmaxCrossEntropyDense(z.ptr(), t.ptr(), B, C, &loss, g.ptr());
  (void)MeanSquaredError(z.ptr(), t.ptr(), B, C, &loss, g.ptr());
}

void FuzzOptimizer(Input& in) {
  const int32_t rows = in.Dim(6), cols = in.Dim(10);
  const int64_t n = Elements({rows, cols});
  if (n < 0 || n > kCap) {
    float one = 0;
    int32_t c = 0;
    if (n < 0) ExpectRejected(SgdUpdateColumns(0.1f, &one, &one, rows, cols, &c, 1));
    return;
  }
  FBuf w = MakeF(in, n), g = MakeF(in, n), v = MakeF(in, n), m = MakeF(in, n);
  const SgdParams sp{in.Bit() ? 0.01f : in.Float(), in.Bit() ? 0.9f : in.Unit(), in.Bit()};
  (void)SgdUpdate(sp, w.ptr(), g.ptr(), v.ptr(), static_cast<int32_t>(n));
  std::vector<int32_t> columns(static_cast<size_t>(cols));
  int32_t count = 0;
  for (int32_t c = 0; c < cols; ++c) {
    if (in.Bit()) columns[count++] = c;
  }
  if (in.U8() % 8 == 0 && count > 0) columns[0] = static_cast<int32_t>(in.U32());
  (void)SgdUpdateColumns(sp.learning_rate, w.ptr(), g.ptr(), rows, cols, columns.data(), count);
  AdamParams ap{};
  if (MakeAdamParams(in.Float(), in.Bit() ? 0.9 : in.Unit(), in.Bit() ? 0.999 : in.Unit(), in.Float(), &ap) !=
      Status::kOk) {
    ap = AdamParams{in.Float(), in.Unit(), in.Unit(), in.Float(), in.Unit(), in.Unit()};
  }
  float b1p = 0.5f, b2p = 0.5f;
  (void)AdamPowers(ap, static_cast<int64_t>(static_cast<int32_t>(in.U32())), &b1p, &b2p);
  (void)AdamUpdate(ap, in.Bit() ? b1p : in.Unit(), in.Bit() ? b2p : in.Unit(), w.ptr(), g.ptr(), m.ptr(), v.ptr(),
                   static_cast<int32_t>(n));
  (void)StatusName(static_cast<Status>(in.U8() % 8));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in{data, size};
  switch (in.U8() % 11) {
    case 0: FuzzRatio(in); break;
    case 1: FuzzScores(in); break;
    case 2: FuzzTopK(in); break;
    case 3: FuzzKeptHelpers(in); break;
    case 4: FuzzSelect(in); break;
    case 5: FuzzDense(in); break;
    case 6: FuzzConv(in, false); break;
    case 7: FuzzConv(in, true); break;
    case 8: FuzzLoss(in); break;
    case 9: FuzzOptimizer(in); break;
    default: {
      ConvGeometry g{};
      const ConvWindow w{in.Dim(), in.Dim(), in.Dim(), in.Dim(), in.Dim(), in.Dim(), static_cast<Padding>(in.U8() % 3)};
      (void)ComputeConvGeometry(in.Dim(), in.Dim(), w, in.Bit() ? &g : nullptr);
    }
  }
  return 0;
}
