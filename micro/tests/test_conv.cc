// Conv2D / DepthwiseConv2D backward against gather-form loops in double (written here independently of the
// kernels' scatter form), plus an adjoint check against a forward convolution: <m, conv(x, W)> = <dW, W> = <dx, x>;
// the forward kernels against that double forward (plus bias, ReLU).
#include <cstring>

#include "harness.h"

using namespace tinyprop;

namespace {

struct Geo {
  int32_t oh, ow, pt, pl;
  bool ok;
};

// TensorFlow's output size / padding, written from its documentation.
Geo RefGeometry(int32_t h, int32_t w, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw,
                bool same) {
  const int32_t ekh = (kh - 1) * dh + 1, ekw = (kw - 1) * dw + 1;
  Geo g{};
  if (same) {
    g.oh = (h + sh - 1) / sh;
    g.ow = (w + sw - 1) / sw;
    g.pt = std::max((g.oh - 1) * sh + ekh - h, 0) / 2;
    g.pl = std::max((g.ow - 1) * sw + ekw - w, 0) / 2;
    g.ok = true;
  } else {
    g.ok = h >= ekh && w >= ekw;
    g.oh = g.ok ? static_cast<int32_t>(std::ceil((h - ekh + 1) / static_cast<double>(sh))) : 0;
    g.ow = g.ok ? static_cast<int32_t>(std::ceil((w - ekw + 1) / static_cast<double>(sw))) : 0;
    g.pt = g.pl = 0;
  }
  return g;
}

struct Case {
  int32_t B, H, W, C, O, dm;  // O = out channels (conv) ; dm = depth multiplier (depthwise, O = C * dm)
  int32_t kh, kw, sh, sw, dh, dw;
  bool same, depthwise;
};

struct Data {
  std::vector<float> x, w, delta;
  std::vector<int32_t> k, idx;
  std::vector<uint8_t> keep;  // [B, O]
};

size_t KernelSize(const Case& c) {
  return static_cast<size_t>(c.kh) * c.kw * c.C * (c.depthwise ? c.dm : c.O);
}

double WAt(const Case& c, const std::vector<float>& w, int32_t r, int32_t s, int32_t ci, int32_t o) {
  if (c.depthwise) return w[((static_cast<size_t>(r) * c.kw + s) * c.C + ci) * c.dm + (o % c.dm)];
  return w[((static_cast<size_t>(r) * c.kw + s) * c.C + ci) * c.O + o];
}

// Forward conv (double), z[b, oh, ow, o].
std::vector<double> Forward(const Case& c, const Geo& g, const std::vector<float>& x, const std::vector<float>& w) {
  std::vector<double> z(static_cast<size_t>(c.B) * g.oh * g.ow * c.O, 0.0);
  for (int32_t b = 0; b < c.B; ++b)
    for (int32_t oh = 0; oh < g.oh; ++oh)
      for (int32_t ow = 0; ow < g.ow; ++ow)
        for (int32_t o = 0; o < c.O; ++o) {
          double acc = 0.0;
          for (int32_t r = 0; r < c.kh; ++r)
            for (int32_t s = 0; s < c.kw; ++s) {
              const int32_t ih = oh * c.sh + r * c.dh - g.pt, iw = ow * c.sw + s * c.dw - g.pl;
              if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
              for (int32_t ci = 0; ci < c.C; ++ci) {
                if (c.depthwise && ci != o / c.dm) continue;
                acc += x[((static_cast<size_t>(b) * c.H + ih) * c.W + iw) * c.C + ci] * WAt(c, w, r, s, ci, o);
              }
            }
          z[((static_cast<size_t>(b) * g.oh + oh) * g.ow + ow) * c.O + o] = acc;
        }
  return z;
}

struct Grads {
  std::vector<double> dw, dx, db;
};

// Gather form: every output element of dW / dx collects its own terms.
Grads Reference(const Case& c, const Geo& g, const Data& d, bool masked, BiasGrad bias) {
  Grads out;
  out.dw.assign(KernelSize(c), 0.0);
  out.dx.assign(static_cast<size_t>(c.B) * c.H * c.W * c.C, 0.0);
  out.db.assign(c.O, 0.0);
  auto m = [&](int32_t b, int32_t oh, int32_t ow, int32_t o) -> double {
    if (masked && !d.keep[static_cast<size_t>(b) * c.O + o]) return 0.0;
    return d.delta[((static_cast<size_t>(b) * g.oh + oh) * g.ow + ow) * c.O + o];
  };
  // dW
  for (int32_t r = 0; r < c.kh; ++r)
    for (int32_t s = 0; s < c.kw; ++s)
      for (int32_t ci = 0; ci < c.C; ++ci)
        for (int32_t o = 0; o < c.O; ++o) {
          if (c.depthwise && o / c.dm != ci) continue;
          double acc = 0.0;
          for (int32_t b = 0; b < c.B; ++b)
            for (int32_t oh = 0; oh < g.oh; ++oh)
              for (int32_t ow = 0; ow < g.ow; ++ow) {
                const int32_t ih = oh * c.sh + r * c.dh - g.pt, iw = ow * c.sw + s * c.dw - g.pl;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                acc += d.x[((static_cast<size_t>(b) * c.H + ih) * c.W + iw) * c.C + ci] * m(b, oh, ow, o);
              }
          const size_t e = c.depthwise ? ((static_cast<size_t>(r) * c.kw + s) * c.C + ci) * c.dm + o % c.dm
                                       : ((static_cast<size_t>(r) * c.kw + s) * c.C + ci) * c.O + o;
          out.dw[e] = acc;
        }
  // dx: the output rows oh with oh * sh + r * dh - pt == ih
  for (int32_t b = 0; b < c.B; ++b)
    for (int32_t ih = 0; ih < c.H; ++ih)
      for (int32_t iw = 0; iw < c.W; ++iw)
        for (int32_t ci = 0; ci < c.C; ++ci) {
          double acc = 0.0;
          for (int32_t r = 0; r < c.kh; ++r) {
            const int32_t nh = ih + g.pt - r * c.dh;
            if (nh < 0 || nh % c.sh != 0 || nh / c.sh >= g.oh) continue;
            for (int32_t s = 0; s < c.kw; ++s) {
              const int32_t nw = iw + g.pl - s * c.dw;
              if (nw < 0 || nw % c.sw != 0 || nw / c.sw >= g.ow) continue;
              for (int32_t o = 0; o < c.O; ++o) {
                if (c.depthwise && o / c.dm != ci) continue;
                acc += WAt(c, d.w, r, s, ci, o) * m(b, nh / c.sh, nw / c.sw, o);
              }
            }
          }
          out.dx[((static_cast<size_t>(b) * c.H + ih) * c.W + iw) * c.C + ci] = acc;
        }
  for (int32_t b = 0; b < c.B; ++b)
    for (int32_t oh = 0; oh < g.oh; ++oh)
      for (int32_t ow = 0; ow < g.ow; ++ow)
        for (int32_t o = 0; o < c.O; ++o) {
          const bool keep = !masked || d.keep[static_cast<size_t>(b) * c.O + o];
          if (bias == BiasGrad::kDense || keep)
            out.db[o] += d.delta[((static_cast<size_t>(b) * g.oh + oh) * g.ow + ow) * c.O + o];
        }
  return out;
}

Data MakeData(tpt::Rng& rng, const Case& c, const Geo& g) {
  Data d;
  d.x = rng.Vec(static_cast<size_t>(c.B) * c.H * c.W * c.C);
  d.w = rng.Vec(KernelSize(c));
  d.delta = rng.Vec(static_cast<size_t>(c.B) * g.oh * g.ow * c.O);
  d.k.resize(c.B);
  d.idx.assign(static_cast<size_t>(c.B) * c.O, -1);
  d.keep.assign(static_cast<size_t>(c.B) * c.O, 0);
  for (int32_t b = 0; b < c.B; ++b) {
    int32_t kb = rng.Int(0, c.O);
    if (b == 0) kb = rng.Int(0, 1) ? c.O : 1;
    if (b == 1) kb = 0;
    const auto s = rng.Subset(c.O, kb);
    d.k[b] = kb;
    for (int32_t t = 0; t < kb; ++t) {
      d.idx[static_cast<size_t>(b) * c.O + t] = s[t];
      d.keep[static_cast<size_t>(b) * c.O + s[t]] = 1;
    }
  }
  return d;
}

int Mismatches(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += !tpt::Near(got[i], want[i], tol);
  return bad;
}

Status RunSparse(const Case& c, const Data& d, BiasGrad bias, Accumulate mode, float* dw, float* dx, float* db) {
  const ConvWindow win{c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.same ? Padding::kSame : Padding::kValid};
  const KeptSet kept{d.k.data(), d.idx.data(), c.O};
  if (c.depthwise) {
    return DepthwiseConv2DBackwardSparse(DepthwiseShape{c.B, c.H, c.W, c.C, c.dm}, win, d.x.data(), d.w.data(),
                                         d.delta.data(), kept, bias, mode, dw, dx, db);
  }
  return Conv2DBackwardSparse(Conv2DShape{c.B, c.H, c.W, c.C, c.O}, win, d.x.data(), d.w.data(), d.delta.data(),
                              kept, bias, mode, dw, dx, db);
}

Status RunReference(const Case& c, const Data& d, float* dw, float* dx, float* db) {
  const ConvWindow win{c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.same ? Padding::kSame : Padding::kValid};
  if (c.depthwise) {
    return DepthwiseConv2DBackwardReference(DepthwiseShape{c.B, c.H, c.W, c.C, c.dm}, win, d.x.data(), d.w.data(),
                                            d.delta.data(), dw, dx, db);
  }
  return Conv2DBackwardReference(Conv2DShape{c.B, c.H, c.W, c.C, c.O}, win, d.x.data(), d.w.data(), d.delta.data(),
                                 dw, dx, db);
}

void RunCase(tpt::Rng& rng, const Case& c) {
  const Geo g = RefGeometry(c.H, c.W, c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.same);
  const ConvWindow win{c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.same ? Padding::kSame : Padding::kValid};
  ConvGeometry geo{};
  const Status gs = ComputeConvGeometry(c.H, c.W, win, &geo);
  if (!g.ok) {
    TP_CHECK_STATUS(gs, Status::kBadShape);
    return;
  }
  TP_CHECK_OK(gs);
  TP_CHECK(geo.out_h == g.oh && geo.out_w == g.ow && geo.pad_top == g.pt && geo.pad_left == g.pl);
  const Data d = MakeData(rng, c, g);
  const size_t nk = KernelSize(c), nx = d.x.size();
  for (int v = 0; v < 2; ++v) {
    const BiasGrad bias = v ? BiasGrad::kKeptOnly : BiasGrad::kDense;
    std::vector<float> dw(nk, 5.0f), dx(nx, 5.0f), db(c.O, 5.0f);
    TP_CHECK_OK(RunSparse(c, d, bias, Accumulate::kOverwrite, dw.data(), dx.data(), db.data()));
    const Grads ref = Reference(c, g, d, true, bias);
    TP_CHECK_EQ(Mismatches(dw, ref.dw, 1e-5), 0);
    TP_CHECK_EQ(Mismatches(dx, ref.dx, 1e-5), 0);
    TP_CHECK_EQ(Mismatches(db, ref.db, 1e-5), 0);
    // Accumulate mode adds on top.
    std::vector<float> dw2(nk, 1.0f), dx2(nx, 1.0f), db2(c.O, 1.0f);
    TP_CHECK_OK(RunSparse(c, d, bias, Accumulate::kAdd, dw2.data(), dx2.data(), db2.data()));
    for (size_t i = 0; i < nk; ++i) TP_CHECK_NEAR(dw2[i], 1.0 + ref.dw[i], 1e-5);
    for (size_t i = 0; i < nx; ++i) TP_CHECK_NEAR(dx2[i], 1.0 + ref.dx[i], 1e-5);
    for (int32_t i = 0; i < c.O; ++i) TP_CHECK_NEAR(db2[i], 1.0 + ref.db[i], 1e-5);
  }
  // Dense reference kernel vs the unmasked gather form, and the adjoint identities.
  std::vector<float> rw(nk), rx(nx), rb(c.O);
  TP_CHECK_OK(RunReference(c, d, rw.data(), rx.data(), rb.data()));
  // Every channel kept: the sparse kernels (whatever loop order they use, e.g. channel-outer depthwise) add the
  // same terms in the same order as the reference, so the results are equal bit for bit.
  {
    Data all = d;
    std::vector<int32_t> identity(c.O);
    for (int32_t o = 0; o < c.O; ++o) identity[o] = o;
    for (int32_t b = 0; b < c.B; ++b) {
      all.k[b] = c.O;
      std::copy(identity.begin(), identity.end(), all.idx.begin() + static_cast<size_t>(b) * c.O);
    }
    std::vector<float> sw(nk, 3.0f), sx(nx, 3.0f), sb(c.O, 3.0f);
    TP_CHECK_OK(RunSparse(c, all, BiasGrad::kDense, Accumulate::kOverwrite, sw.data(), sx.data(), sb.data()));
    TP_CHECK(std::memcmp(sw.data(), rw.data(), nk * sizeof(float)) == 0);
    TP_CHECK(std::memcmp(sx.data(), rx.data(), nx * sizeof(float)) == 0);
    TP_CHECK(std::memcmp(sb.data(), rb.data(), c.O * sizeof(float)) == 0);
    // The dW-only and dx-only variants (an exported step's first layer, a frozen layer) give the same bytes.
    std::vector<float> ow(nk, 3.0f), ox(nx, 3.0f);
    TP_CHECK_OK(RunSparse(c, all, BiasGrad::kDense, Accumulate::kOverwrite, ow.data(), nullptr, nullptr));
    TP_CHECK_OK(RunSparse(c, all, BiasGrad::kDense, Accumulate::kOverwrite, nullptr, ox.data(), nullptr));
    TP_CHECK(std::memcmp(ow.data(), rw.data(), nk * sizeof(float)) == 0);
    TP_CHECK(std::memcmp(ox.data(), rx.data(), nx * sizeof(float)) == 0);
  }
  const Grads full = Reference(c, g, d, false, BiasGrad::kDense);
  TP_CHECK_EQ(Mismatches(rw, full.dw, 1e-5), 0);
  TP_CHECK_EQ(Mismatches(rx, full.dx, 1e-5), 0);
  TP_CHECK_EQ(Mismatches(rb, full.db, 1e-5), 0);
  const std::vector<double> z = Forward(c, g, d.x, d.w);
  double zm = 0.0, ww = 0.0, xx = 0.0;
  for (size_t i = 0; i < z.size(); ++i) zm += z[i] * d.delta[i];
  for (size_t i = 0; i < nk; ++i) ww += full.dw[i] * d.w[i];
  for (size_t i = 0; i < nx; ++i) xx += full.dx[i] * d.x[i];
  TP_CHECK_NEAR(ww, zm, 1e-9);
  TP_CHECK_NEAR(xx, zm, 1e-9);
}

}  // namespace

TP_TEST(ConvGeometryMatchesTensorFlow) {
  ConvGeometry g{};
  TP_CHECK_OK(ComputeConvGeometry(5, 6, ConvWindow{3, 3, 2, 2, 1, 1, Padding::kSame}, &g));
  TP_CHECK(g.out_h == 3 && g.pad_top == 1 && g.out_w == 3 && g.pad_left == 0);  // totals 2 and 1
  TP_CHECK_OK(ComputeConvGeometry(7, 7, ConvWindow{3, 3, 1, 1, 2, 2, Padding::kValid}, &g));
  TP_CHECK(g.out_h == 3 && g.out_w == 3 && g.pad_top == 0);
  TP_CHECK_OK(ComputeConvGeometry(1, 1, ConvWindow{5, 5, 1, 1, 1, 1, Padding::kSame}, &g));
  TP_CHECK(g.out_h == 1 && g.pad_top == 2);
  TP_CHECK_OK(ComputeConvGeometry(4, 4, ConvWindow{2, 2, 3, 3, 1, 1, Padding::kSame}, &g));
  TP_CHECK(g.out_h == 2 && g.pad_top == 0);  // total max((2-1)*3 + 2 - 4, 0) = 1 -> before 0
  TP_CHECK_STATUS(ComputeConvGeometry(2, 5, ConvWindow{3, 3, 1, 1, 1, 1, Padding::kValid}, &g), Status::kBadShape);
  TP_CHECK_STATUS(ComputeConvGeometry(0, 5, ConvWindow{1, 1, 1, 1, 1, 1, Padding::kValid}, &g), Status::kBadShape);
  TP_CHECK_STATUS(ComputeConvGeometry(5, 5, ConvWindow{0, 1, 1, 1, 1, 1, Padding::kValid}, &g), Status::kBadArgument);
  TP_CHECK_STATUS(ComputeConvGeometry(5, 5, ConvWindow{1, 1, 0, 1, 1, 1, Padding::kValid}, &g), Status::kBadArgument);
  TP_CHECK_STATUS(ComputeConvGeometry(5, 5, ConvWindow{1, 1, 1, 1, -1, 1, Padding::kValid}, &g), Status::kBadArgument);
  TP_CHECK_STATUS(ComputeConvGeometry(5, 5, ConvWindow{1, 1, 1, 1, 1, 1, static_cast<Padding>(9)}, &g),
                  Status::kBadArgument);
  TP_CHECK_STATUS(ComputeConvGeometry(5, 5, ConvWindow{INT32_MAX, 1, 1, 1, INT32_MAX, 1, Padding::kSame}, &g),
                  Status::kBadShape);  // padding beyond int32
  TP_CHECK_STATUS(ComputeConvGeometry(5, 5, ConvWindow{1, 1, 1, 1, 1, 1, Padding::kSame}, nullptr),
                  Status::kBadArgument);
  TP_CHECK_OK(ComputeConvGeometry(INT32_MAX, 3, ConvWindow{3, 1, INT32_MAX, 1, 1, 1, Padding::kSame}, &g));
  TP_CHECK(g.out_h == 1 && g.pad_top == 0);
  TP_CHECK_OK(ComputeConvGeometry(1, 3, ConvWindow{3, 1, INT32_MAX, 1, 1, 1, Padding::kSame}, &g));
  TP_CHECK(g.out_h == 1 && g.pad_top == 1 && g.out_w == 3 && g.pad_left == 0);
}

TP_TEST(Conv2DSparseMatchesGatherReference) {
  tpt::Rng rng(21);
  int cases = 0;
  for (int it = 0; it < 160; ++it) {
    Case c{};
    c.B = rng.Int(1, 3);
    c.H = rng.Int(1, 7);
    c.W = rng.Int(1, 7);
    c.C = rng.Int(1, 3);
    c.O = rng.Int(1, 6);
    c.kh = rng.Int(1, 3);
    c.kw = rng.Int(1, 3);
    c.sh = rng.Int(1, 3);
    c.sw = rng.Int(1, 3);
    c.dh = rng.Int(1, 2);
    c.dw = rng.Int(1, 2);
    c.same = rng.Int(0, 1);
    c.dm = 1;
    c.depthwise = false;
    RunCase(rng, c);
    ++cases;
  }
  // Fixed shapes of typical MCU layers.
  RunCase(rng, Case{2, 8, 8, 3, 8, 1, 3, 3, 1, 1, 1, 1, true, false});
  RunCase(rng, Case{1, 9, 9, 4, 5, 1, 3, 3, 2, 2, 1, 1, false, false});
  RunCase(rng, Case{1, 1, 12, 2, 4, 1, 1, 5, 1, 2, 1, 2, true, false});  // Conv1D-like
  RunCase(rng, Case{3, 5, 3, 6, 7, 1, 1, 1, 1, 1, 1, 1, true, false});  // pointwise (the rows path)
  RunCase(rng, Case{2, 4, 4, 70, 9, 1, 1, 1, 1, 1, 1, 1, false, false});  // pointwise, C_in over a dx chunk
  TP_CHECK(cases > 0);
}

TP_TEST(DepthwiseSparseMatchesGatherReference) {
  tpt::Rng rng(22);
  for (int it = 0; it < 160; ++it) {
    Case c{};
    c.B = rng.Int(1, 3);
    c.H = rng.Int(1, 7);
    c.W = rng.Int(1, 7);
    c.C = rng.Int(1, 4);
    c.dm = rng.Int(1, 3);
    c.O = c.C * c.dm;
    c.kh = rng.Int(1, 3);
    c.kw = rng.Int(1, 3);
    c.sh = rng.Int(1, 3);
    c.sw = rng.Int(1, 3);
    c.dh = rng.Int(1, 2);
    c.dw = rng.Int(1, 2);
    c.same = rng.Int(0, 1);
    c.depthwise = true;
    RunCase(rng, c);
  }
  RunCase(rng, Case{2, 8, 8, 4, 4, 1, 3, 3, 1, 1, 1, 1, true, true});
  RunCase(rng, Case{1, 7, 7, 3, 6, 2, 3, 3, 2, 2, 1, 1, false, true});
}

// The forward kernels against the double forward, with and without bias and ReLU.
void RunForwardCase(tpt::Rng& rng, const Case& c) {
  const Geo g = RefGeometry(c.H, c.W, c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.same);
  if (!g.ok) return;
  const std::vector<float> x = rng.Vec(static_cast<size_t>(c.B) * c.H * c.W * c.C), w = rng.Vec(KernelSize(c));
  const std::vector<float> bias = rng.Vec(static_cast<size_t>(c.O));
  const std::vector<double> z = Forward(c, g, x, w);
  const ConvWindow win{c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, c.same ? Padding::kSame : Padding::kValid};
  for (const bool with_bias : {false, true}) {
    for (const Activation act : {Activation::kLinear, Activation::kRelu}) {
      std::vector<float> out(z.size(), 7.0f);
      const float* b = with_bias ? bias.data() : nullptr;
      TP_CHECK_OK(c.depthwise
                      ? DepthwiseConv2DForward(DepthwiseShape{c.B, c.H, c.W, c.C, c.dm}, win, x.data(), w.data(), b,
                                               act, out.data())
                      : Conv2DForward(Conv2DShape{c.B, c.H, c.W, c.C, c.O}, win, x.data(), w.data(), b, act,
                                      out.data()));
      for (size_t i = 0; i < z.size(); ++i) {
        double want = z[i] + (with_bias ? bias[i % c.O] : 0.0);
        if (act == Activation::kRelu) want = std::max(want, 0.0);
        TP_CHECK_NEAR(out[i], want, 1e-5);
      }
    }
  }
}

TP_TEST(ConvForwardMatchesDoubleReference) {
  tpt::Rng rng(23);
  for (int it = 0; it < 200; ++it) {
    Case c{};
    c.depthwise = it % 2 == 1;
    c.B = rng.Int(1, 3);
    c.H = rng.Int(1, 7);
    c.W = rng.Int(1, 7);
    c.C = rng.Int(1, 4);
    c.dm = c.depthwise ? rng.Int(1, 3) : 1;
    c.O = c.depthwise ? c.C * c.dm : rng.Int(1, 9);  // over and under the kernel's block of 4 channels
    c.kh = rng.Int(1, 3);
    c.kw = rng.Int(1, 3);
    c.sh = rng.Int(1, 3);
    c.sw = rng.Int(1, 3);
    c.dh = rng.Int(1, 2);
    c.dw = rng.Int(1, 2);
    c.same = rng.Int(0, 1);
    RunForwardCase(rng, c);
  }
  RunForwardCase(rng, Case{2, 25, 5, 16, 16, 1, 1, 1, 1, 1, 1, 1, true, false});  // a DS-CNN pointwise layer
  RunForwardCase(rng, Case{1, 25, 5, 16, 16, 1, 3, 3, 1, 1, 1, 1, true, true});  // and its depthwise layer
}

TP_TEST(GlobalAveragePoolIsTheMeanOverPositions) {
  tpt::Rng rng(24);
  for (const int32_t channels : {1, 5, 12, 64}) {
    const int32_t batch = 3, positions = 125;
    const std::vector<float> x = rng.Vec(static_cast<size_t>(batch) * positions * channels);
    std::vector<float> out(static_cast<size_t>(batch) * channels, 7.0f);
    TP_CHECK_OK(GlobalAveragePool(x.data(), batch, positions, channels, out.data()));
    for (int32_t b = 0; b < batch; ++b) {
      for (int32_t c = 0; c < channels; ++c) {
        double sum = 0.0;
        for (int32_t p = 0; p < positions; ++p) sum += x[(static_cast<size_t>(b) * positions + p) * channels + c];
        TP_CHECK_NEAR(out[static_cast<size_t>(b) * channels + c], sum / positions, 1e-6);
      }
    }
  }
  std::vector<float> x(8, 1.0f), out(2, 7.0f);
  TP_CHECK_STATUS(GlobalAveragePool(x.data(), 1, 0, 2, out.data()), Status::kBadShape);
  TP_CHECK_STATUS(GlobalAveragePool(nullptr, 1, 4, 2, out.data()), Status::kBadArgument);
  TP_CHECK(out[0] == 7.0f && out[1] == 7.0f);
}

TP_TEST(ConvForwardErrors) {
  const ConvWindow win{3, 3, 1, 1, 1, 1, Padding::kSame};
  std::vector<float> x(32, 1.0f), w(54, 1.0f), out(48, 7.0f);
  const Conv2DShape s{1, 4, 4, 2, 3};
  TP_CHECK_OK(Conv2DForward(s, win, x.data(), w.data(), nullptr, Activation::kRelu, out.data()));
  TP_CHECK_EQ(out[0], 8.0f);  // a corner: 2 x 2 taps in the input, 2 channels of ones
  std::fill(out.begin(), out.end(), 7.0f);
  TP_CHECK_STATUS(Conv2DForward(Conv2DShape{1, 4, 4, 2, 0}, win, x.data(), w.data(), nullptr, Activation::kRelu,
                                out.data()),
                  Status::kBadShape);
  TP_CHECK_STATUS(Conv2DForward(s, ConvWindow{5, 5, 1, 1, 1, 1, Padding::kValid}, x.data(), w.data(), nullptr,
                                Activation::kLinear, out.data()),
                  Status::kBadShape);
  TP_CHECK_STATUS(Conv2DForward(s, win, nullptr, w.data(), nullptr, Activation::kLinear, out.data()),
                  Status::kBadArgument);
  TP_CHECK_STATUS(Conv2DForward(s, win, x.data(), w.data(), nullptr, Activation::kLinear, nullptr),
                  Status::kBadArgument);
  TP_CHECK_STATUS(Conv2DForward(s, win, x.data(), w.data(), nullptr, static_cast<Activation>(3), out.data()),
                  Status::kBadArgument);
  TP_CHECK_STATUS(DepthwiseConv2DForward(DepthwiseShape{1, 4, 4, 2, 0}, win, x.data(), w.data(), nullptr,
                                         Activation::kLinear, out.data()),
                  Status::kBadShape);
  for (float v : out) TP_CHECK_EQ(v, 7.0f);
}

TP_TEST(ConvErrors) {
  const Conv2DShape s{1, 4, 4, 2, 3};
  const ConvWindow win{3, 3, 1, 1, 1, 1, Padding::kSame};
  std::vector<float> x(32, 1.0f), w(54, 1.0f), d(48, 1.0f), dw(54, 7.0f), dx(32, 7.0f), db(3, 7.0f);
  const int32_t k[1] = {2}, idx[3] = {0, 2, -1};
  const KeptSet kept{k, idx, 3};
  TP_CHECK_OK(Conv2DBackwardSparse(s, win, x.data(), w.data(), d.data(), kept, BiasGrad::kDense,
                                   Accumulate::kOverwrite, dw.data(), dx.data(), db.data()));
  std::fill(dw.begin(), dw.end(), 7.0f);
  auto run = [&](const Conv2DShape& sh, const ConvWindow& wi, const KeptSet& ks) {
    return Conv2DBackwardSparse(sh, wi, x.data(), w.data(), d.data(), ks, BiasGrad::kDense, Accumulate::kOverwrite,
                                dw.data(), dx.data(), db.data());
  };
  TP_CHECK_STATUS(run(Conv2DShape{0, 4, 4, 2, 3}, win, kept), Status::kBadShape);
  TP_CHECK_STATUS(run(Conv2DShape{1, 4, 4, 2, 0}, win, kept), Status::kBadShape);
  TP_CHECK_STATUS(run(Conv2DShape{1, 4, -4, 2, 3}, win, kept), Status::kBadShape);
  TP_CHECK_STATUS(run(s, ConvWindow{3, 3, 0, 1, 1, 1, Padding::kSame}, kept), Status::kBadArgument);
  TP_CHECK_STATUS(run(s, ConvWindow{5, 5, 1, 1, 1, 1, Padding::kValid}, kept), Status::kBadShape);
  TP_CHECK_STATUS(run(Conv2DShape{1, 4, 4, 65536, 65536}, win, kept), Status::kBadShape);
  const int32_t k_bad[1] = {4};
  TP_CHECK_STATUS(run(s, win, KeptSet{k_bad, idx, 3}), Status::kBadIndex);
  const int32_t idx_bad[3] = {2, 0, -1};
  TP_CHECK_STATUS(run(s, win, KeptSet{k, idx_bad, 3}), Status::kBadIndex);
  TP_CHECK_STATUS(Conv2DBackwardSparse(s, win, nullptr, w.data(), d.data(), kept, BiasGrad::kDense,
                                       Accumulate::kOverwrite, dw.data(), dx.data(), db.data()),
                  Status::kBadArgument);
  TP_CHECK_STATUS(Conv2DBackwardSparse(s, win, x.data(), w.data(), d.data(), kept, BiasGrad::kDense,
                                       static_cast<Accumulate>(5), dw.data(), dx.data(), db.data()),
                  Status::kBadArgument);
  for (float v : dw) TP_CHECK_EQ(v, 7.0f);
  const DepthwiseShape ds{1, 4, 4, 2, 0};
  TP_CHECK_STATUS(DepthwiseConv2DBackwardSparse(ds, win, x.data(), w.data(), d.data(), kept, BiasGrad::kDense,
                                                Accumulate::kOverwrite, dw.data(), dx.data(), db.data()),
                  Status::kBadShape);
  TP_CHECK_STATUS(DepthwiseConv2DBackwardReference(DepthwiseShape{1, 4, 4, 65536, 65536}, win, x.data(), w.data(),
                                                   d.data(), dw.data(), dx.data(), db.data()),
                  Status::kBadShape);
}

namespace {

// Bitwise equality of two float arrays (the recomputed block must give the batched path's very bits).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// One conv -> ReLU -> global average pooling block trained with channel selection, once batched (TINYPROP_
// CONV2D_FORWARD, GLOBAL_AVERAGE_POOL, RELU_BACKWARD of the broadcast pooling gradient, SELECT_CHANNELS,
// CONV2D_BACKWARD) and once as the recomputing graph runs it: per sample the ReLU's mask only, the scores from
// mask and pooling gradient, the backward per sample with its delta rebuilt from the mask, dW and db added up
// sample after sample. Both must agree bit for bit.
void RecomputedBlockCase(tpt::Rng& rng, int32_t kernel, int32_t out_c) {
  const int32_t B = 3, H = 5, W = 4, C = 6;
  const ConvWindow win{kernel, kernel, 1, 1, 1, 1, Padding::kSame};
  const int32_t P = H * W, per_sample = P * out_c;
  const std::vector<float> x = rng.Vec(static_cast<size_t>(B) * H * W * C);
  const std::vector<float> w = rng.Vec(static_cast<size_t>(kernel) * kernel * C * out_c);
  const std::vector<float> bias = rng.Vec(out_c, -0.2f, 0.2f);
  std::vector<float> g = rng.Vec(static_cast<size_t>(B) * out_c);
  g[1] = 0.0f;  // a zero gradient: its channel scores 0 wherever the mask is set
  const Conv2DShape shape{B, H, W, C, out_c};
  std::vector<float> out(static_cast<size_t>(B) * per_sample);
  TP_CHECK_OK(Conv2DForward(shape, win, x.data(), w.data(), bias.data(), Activation::kRelu, out.data()));
  // Batched: delta = ReLU backward of g broadcast over the positions.
  std::vector<float> delta(out.size());
  for (int32_t b = 0; b < B; ++b) {
    for (int32_t i = 0; i < per_sample; ++i) {
      const size_t e = static_cast<size_t>(b) * per_sample + i;
      delta[e] = out[e] > 0.0f ? g[static_cast<size_t>(b) * out_c + i % out_c] : 0.0f;
    }
  }
  const RatioParams params{0.1f, 0.9f, 1.0f, Rounding::kFloor};
  float ymax_batched = kYmaxInit, ymax_masked = kYmaxInit;
  std::vector<int32_t> k_batched(B), kept_batched(static_cast<size_t>(B) * out_c);
  std::vector<float> scratch(static_cast<size_t>(SelectChannelsScratchSize(B, out_c)));
  TP_CHECK_OK(SelectChannels(delta.data(), B, P, out_c, params, &ymax_batched, k_batched.data(), kept_batched.data(),
                             scratch.data(), static_cast<int64_t>(scratch.size())));
  // Recomputed: masks per sample, scores from masks and g.
  const int64_t words = MaskWords(per_sample);
  std::vector<uint32_t> mask(static_cast<size_t>(B * words), 0xdeadbeefu);
  for (int32_t b = 0; b < B; ++b) {
    TP_CHECK_OK(PositiveMask(out.data() + static_cast<size_t>(b) * per_sample, per_sample, mask.data() + b * words));
  }
  std::vector<float> scores(static_cast<size_t>(B) * out_c), y(B), scores_ref(scores.size()), y_ref(B);
  TP_CHECK_OK(MaskedChannelScores(g.data(), mask.data(), B, P, out_c, scores.data(), y.data()));
  TP_CHECK_OK(ChannelScores(delta.data(), B, P, out_c, scores_ref.data(), y_ref.data()));
  TP_CHECK(SameBits(scores, scores_ref) && SameBits(y, y_ref));
  std::vector<int32_t> k(B), kept(static_cast<size_t>(B) * out_c);
  TP_CHECK_OK(SelectChannelsFromScores(scores.data(), y.data(), B, out_c, params, &ymax_masked, k.data(), kept.data()));
  TP_CHECK(k == k_batched && kept == kept_batched);
  TP_CHECK_EQ(ymax_masked, ymax_batched);
  // Backward: batched, and per sample with dW and db added up in batch order.
  std::vector<float> dw_ref(w.size()), db_ref(out_c), dw(w.size(), 7.0f), db(out_c, 7.0f);
  const KeptSet kept_set{k.data(), kept.data(), out_c};
  TP_CHECK_OK(Conv2DBackwardSparse(shape, win, x.data(), w.data(), delta.data(), kept_set, BiasGrad::kDense,
                                   Accumulate::kOverwrite, dw_ref.data(), nullptr, db_ref.data()));
  std::vector<float> delta_b(static_cast<size_t>(per_sample));
  for (int32_t b = 0; b < B; ++b) {
    TP_CHECK_OK(MaskedDelta(g.data() + static_cast<size_t>(b) * out_c, mask.data() + b * words, P, out_c,
                            delta_b.data()));
    TP_CHECK(std::memcmp(delta_b.data(), delta.data() + static_cast<size_t>(b) * per_sample,
                         delta_b.size() * sizeof(float)) == 0);
    const KeptSet one{k.data() + b, kept.data() + static_cast<size_t>(b) * out_c, out_c};
    TP_CHECK_OK(Conv2DBackwardSparse(Conv2DShape{1, H, W, C, out_c}, win,
                                     x.data() + static_cast<size_t>(b) * H * W * C, w.data(), delta_b.data(), one,
                                     BiasGrad::kDense, b == 0 ? Accumulate::kOverwrite : Accumulate::kAdd, dw.data(),
                                     nullptr, db.data()));
  }
  TP_CHECK(SameBits(dw, dw_ref) && SameBits(db, db_ref));
}

}  // namespace

TP_TEST(RecomputedPooledBlockMatchesTheBatchedOne) {
  tpt::Rng rng(31);
  RecomputedBlockCase(rng, 1, 7);  // pointwise; 140 mask bits per sample (not a multiple of 32)
  RecomputedBlockCase(rng, 3, 8);
  const float out[3] = {1.0f, -0.0f, 0.0f};
  uint32_t bits = 0xffffffffu;
  TP_CHECK_OK(PositiveMask(out, 3, &bits));
  TP_CHECK_EQ(bits, 1u);
  TP_CHECK_STATUS(PositiveMask(out, 0, &bits), Status::kBadShape);
  float delta[3] = {7.0f, 7.0f, 7.0f};
  const float g[1] = {-2.0f};
  TP_CHECK_OK(MaskedDelta(g, &bits, 3, 1, delta));
  TP_CHECK(delta[0] == -2.0f && delta[1] == 0.0f && !std::signbit(delta[1]) && delta[2] == 0.0f);
  TP_CHECK_STATUS(MaskedDelta(g, nullptr, 3, 1, delta), Status::kBadArgument);
  float scores[1], y[1];
  TP_CHECK_STATUS(MaskedChannelScores(g, &bits, 1, -1, 1, scores, y), Status::kBadShape);
}
