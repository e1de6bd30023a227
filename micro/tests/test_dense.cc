// Dense backward: sparse and reference kernels against textbook loops in double, written here independently.
#include "harness.h"

using namespace tinyprop;

namespace {

struct Kept {
  std::vector<int32_t> k, index;
  int32_t stride;
  KeptSet view() const { return KeptSet{k.data(), index.data(), stride}; }
  bool Has(int32_t b, int32_t j) const {
    const int32_t* row = index.data() + static_cast<size_t>(b) * stride;
    for (int32_t t = 0; t < k[b]; ++t) {
      if (row[t] == j) return true;
    }
    return false;
  }
};

// Random kept sets (any subset, not only top-k: the kernels must work for every valid set).
Kept RandomKept(tpt::Rng& rng, int32_t batch, int32_t n, bool shared) {
  Kept kept;
  kept.stride = shared ? 0 : n;
  kept.k.resize(batch);
  kept.index.assign(static_cast<size_t>(shared ? n : batch * n), -1);
  for (int32_t b = 0; b < (shared ? 1 : batch); ++b) {
    int32_t kb = rng.Int(0, n);
    if (!shared && b == 0) kb = n;  // k = N
    if (!shared && b == 1) kb = 1;  // k = 1
    if (!shared && b == 2) kb = 0;  // skipped sample
    const auto s = rng.Subset(n, kb);
    std::copy(s.begin(), s.end(), kept.index.begin() + static_cast<size_t>(b) * n);
    kept.k[b] = kb;
  }
  if (shared) {
    for (int32_t b = 1; b < batch; ++b) kept.k[b] = kept.k[0];
  }
  return kept;
}

struct Grads {
  std::vector<double> dw, dx, db;
};

// Textbook: dW[i][j] = sum_b x[b][i] m[b][j]; dx[b][i] = sum_j m[b][j] W[i][j]; m = delta masked to the kept set.
Grads Textbook(int32_t B, int32_t I, int32_t O, const std::vector<float>& x, const std::vector<float>& w,
               const std::vector<float>& delta, const Kept* kept, BiasGrad bias) {
  Grads g;
  g.dw.assign(static_cast<size_t>(I) * O, 0.0);
  g.dx.assign(static_cast<size_t>(B) * I, 0.0);
  g.db.assign(O, 0.0);
  for (int32_t b = 0; b < B; ++b) {
    for (int32_t j = 0; j < O; ++j) {
      const double dv = delta[b * O + j];
      const bool keep = kept == nullptr || kept->Has(b, j);
      if (bias == BiasGrad::kDense || keep) g.db[j] += dv;
      if (!keep) continue;
      for (int32_t i = 0; i < I; ++i) {
        g.dw[i * O + j] += static_cast<double>(x[b * I + i]) * dv;
        g.dx[b * I + i] += dv * w[i * O + j];
      }
    }
  }
  return g;
}

template <typename A, typename B>
int CountMismatch(const A& got, const B& want, double tol) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += !tpt::Near(got[i], want[i], tol);
  return bad;
}

}  // namespace

TP_TEST(DenseReferenceMatchesTextbook) {
  tpt::Rng rng(11);
  const int32_t batches[] = {1, 2, 5};
  const int32_t ins[] = {1, 3, 17};
  const int32_t outs[] = {1, 4, 33};
  for (int32_t B : batches)
    for (int32_t I : ins)
      for (int32_t O : outs) {
        const auto x = rng.Vec(B * I), w = rng.Vec(I * O), d = rng.Vec(B * O);
        std::vector<float> dw(I * O), dx(B * I), db(O);
        TP_CHECK_OK(DenseBackwardReference(DenseShape{B, I, O}, x.data(), w.data(), d.data(), dw.data(), dx.data(),
                                           db.data()));
        const Grads g = Textbook(B, I, O, x, w, d, nullptr, BiasGrad::kDense);
        TP_CHECK_EQ(CountMismatch(dw, g.dw, 1e-5), 0);
        TP_CHECK_EQ(CountMismatch(dx, g.dx, 1e-5), 0);
        TP_CHECK_EQ(CountMismatch(db, g.db, 1e-5), 0);
      }
}

TP_TEST(DenseForwardMatchesTextbookAndSumsInInputOrder) {
  tpt::Rng rng(13);
  const int32_t batches[] = {1, 3};
  const int32_t ins[] = {1, 5, 17};
  const int32_t outs[] = {1, 4, 33};
  for (int32_t B : batches)
    for (int32_t I : ins)
      for (int32_t O : outs) {
        const auto x = rng.Vec(B * I), w = rng.Vec(I * O), bias = rng.Vec(O);
        std::vector<float> z(B * O, 9.0f), z_nobias(B * O, 9.0f);
        TP_CHECK_OK(DenseForward(DenseShape{B, I, O}, x.data(), w.data(), bias.data(), z.data()));
        TP_CHECK_OK(DenseForward(DenseShape{B, I, O}, x.data(), w.data(), nullptr, z_nobias.data()));
        for (int32_t b = 0; b < B; ++b) {
          for (int32_t j = 0; j < O; ++j) {
            double want = 0.0;
            volatile float acc = 0.0f;  // the documented float32 order: input order, then the bias
            for (int32_t i = 0; i < I; ++i) {
              want += static_cast<double>(x[b * I + i]) * w[i * O + j];
              volatile float p = x[b * I + i] * w[i * O + j];
              acc = acc + p;
            }
            TP_CHECK_NEAR(z_nobias[b * O + j], want, 1e-5);
            TP_CHECK_NEAR(z[b * O + j], want + bias[j], 1e-5);
            TP_CHECK_EQ(z_nobias[b * O + j], static_cast<float>(acc));
            volatile float with_bias = acc + bias[j];
            TP_CHECK_EQ(z[b * O + j], static_cast<float>(with_bias));
          }
        }
      }
  const float one[1] = {1.0f};
  float out[1] = {7.0f};
  TP_CHECK_STATUS(DenseForward(DenseShape{0, 1, 1}, one, one, nullptr, out), Status::kBadShape);
  TP_CHECK_STATUS(DenseForward(DenseShape{1, 65536, 65536}, one, one, nullptr, out), Status::kBadShape);
  TP_CHECK_STATUS(DenseForward(DenseShape{1, 1, 1}, nullptr, one, nullptr, out), Status::kBadArgument);
  TP_CHECK_STATUS(DenseForward(DenseShape{1, 1, 1}, one, nullptr, nullptr, out), Status::kBadArgument);
  TP_CHECK_STATUS(DenseForward(DenseShape{1, 1, 1}, one, one, nullptr, nullptr), Status::kBadArgument);
  TP_CHECK_EQ(out[0], 7.0f);
}

TP_TEST(DenseSparseSgdIsTheUpdateOfTheSparseGradientBitForBit) {
  tpt::Rng rng(14);
  for (int rep = 0; rep < 40; ++rep) {
    const int32_t B = rng.Int(1, 11), I = rng.Int(1, 70), O = rng.Int(1, 20);  // B > 4: several sample blocks
    const auto x = rng.Vec(B * I), w = rng.Vec(I * O), d = rng.Vec(B * O), b = rng.Vec(O);
    std::vector<int32_t> k(B), idx(static_cast<size_t>(B) * O, -1);
    for (int32_t s = 0; s < B; ++s) {
      k[s] = rng.Int(0, O);
      const auto sub = rng.Subset(O, k[s]);
      std::copy(sub.begin(), sub.end(), idx.begin() + static_cast<size_t>(s) * O);
    }
    const KeptSet kept{k.data(), idx.data(), O};
    const float lr = rng.Uniform(1e-3f, 0.5f);
    std::vector<float> dw(I * O), dx(B * I), db(O);
    TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), w.data(), d.data(), kept, BiasGrad::kDense,
                                    Accumulate::kOverwrite, dw.data(), dx.data(), db.data()));
    // In place: w and b become the updated weights; dx is the backward's (from the weights before the update).
    std::vector<float> w2 = w, b2 = b, dx2(B * I, 5.0f);
    std::vector<int32_t> scratch(DenseSgdScratchBytes(B, I) / 4, 77);
    TP_CHECK_OK(DenseBackwardSparseSgd(DenseShape{B, I, O}, x.data(), w2.data(), b2.data(), d.data(), kept, lr,
                                       dx2.data(), scratch.data(), 4 * static_cast<int64_t>(scratch.size())));
    for (int32_t e = 0; e < I * O; ++e) {
      volatile float step = dw[e] * lr;  // Keras: variable.assign_sub(gradient * lr)
      TP_CHECK_EQ(tpt::Bits(w2[e]), tpt::Bits(static_cast<float>(w[e] - step)));
    }
    for (int32_t j = 0; j < O; ++j) {
      volatile float step = db[j] * lr;
      TP_CHECK_EQ(tpt::Bits(b2[j]), tpt::Bits(static_cast<float>(b[j] - step)));
    }
    TP_CHECK(dx2 == dx);
    // Without dx and bias.
    std::vector<float> w3 = w;
    TP_CHECK_OK(DenseBackwardSparseSgd(DenseShape{B, I, O}, x.data(), w3.data(), nullptr, d.data(), kept, lr,
                                       nullptr, scratch.data(), 4 * static_cast<int64_t>(scratch.size())));
    TP_CHECK(w3 == w2);
  }
  float one[4] = {1, 1, 1, 1};
  float w[4] = {7, 7, 7, 7};
  int32_t scratch[3];
  const int32_t k1[1] = {1}, i1[1] = {0};
  const KeptSet kept{k1, i1, 1};
  const DenseShape s{1, 1, 1};
  TP_CHECK_STATUS(DenseBackwardSparseSgd(s, one, w, nullptr, one, kept, INFINITY, nullptr, scratch, 12),
                  Status::kNonFinite);
  TP_CHECK_STATUS(DenseBackwardSparseSgd(s, nullptr, w, nullptr, one, kept, 0.1f, nullptr, scratch, 12),
                  Status::kBadArgument);
  TP_CHECK_STATUS(DenseBackwardSparseSgd(s, one, w, nullptr, one, kept, 0.1f, nullptr, scratch, 11),
                  Status::kBufferTooSmall);
  const int32_t k_bad[1] = {2};
  TP_CHECK_STATUS(DenseBackwardSparseSgd(s, one, w, nullptr, one, KeptSet{k_bad, i1, 1}, 0.1f, nullptr, scratch, 12),
                  Status::kBadIndex);
  TP_CHECK_EQ(w[0], 7.0f);  // untouched on every error
}

TP_TEST(DenseSparseMatchesMaskedTextbook) {
  tpt::Rng rng(12);
  const int32_t batches[] = {1, 2, 3, 6};
  const int32_t ins[] = {1, 2, 8, 17};
  const int32_t outs[] = {1, 3, 10, 33};
  for (int32_t B : batches)
    for (int32_t I : ins)
      for (int32_t O : outs)
        for (int variant = 0; variant < 4; ++variant) {
          const bool shared = variant == 3;
          const BiasGrad bias = (variant % 2) ? BiasGrad::kKeptOnly : BiasGrad::kDense;
          const auto x = rng.Vec(B * I), w = rng.Vec(I * O), d = rng.Vec(B * O);
          const Kept kept = RandomKept(rng, B, O, shared);
          std::vector<float> dw(I * O, 99.0f), dx(B * I, 99.0f), db(O, 99.0f);
          TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), w.data(), d.data(), kept.view(), bias,
                                          Accumulate::kOverwrite, dw.data(), dx.data(), db.data()));
          const Grads g = Textbook(B, I, O, x, w, d, &kept, bias);
          TP_CHECK_EQ(CountMismatch(dw, g.dw, 1e-5), 0);
          TP_CHECK_EQ(CountMismatch(dx, g.dx, 1e-5), 0);
          TP_CHECK_EQ(CountMismatch(db, g.db, 1e-5), 0);
          // Accumulate: adds onto existing values; columns no sample kept are not written at all.
          std::vector<float> dw2 = rng.Vec(I * O), dx2 = rng.Vec(B * I), db2 = rng.Vec(O);
          const auto dw0 = dw2, dx0 = dx2, db0 = db2;
          TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), w.data(), d.data(), kept.view(), bias,
                                          Accumulate::kAdd, dw2.data(), dx2.data(), db2.data()));
          for (int32_t j = 0; j < O; ++j) {
            bool any = false;
            for (int32_t b = 0; b < B; ++b) any = any || kept.Has(b, j);
            for (int32_t i = 0; i < I; ++i) {
              const size_t e = static_cast<size_t>(i) * O + j;
              if (any) {
                TP_CHECK_NEAR(dw2[e], dw0[e] + g.dw[e], 1e-5);
              } else {
                TP_CHECK_EQ(tpt::Bits(dw2[e]), tpt::Bits(dw0[e]));
              }
            }
            TP_CHECK_NEAR(db2[j], db0[j] + g.db[j], 1e-5);
          }
          for (size_t e = 0; e < dx2.size(); ++e) TP_CHECK_NEAR(dx2[e], dx0[e] + g.dx[e], 1e-5);
          // Optional outputs: each gradient alone gives the same numbers.
          std::vector<float> only_dw(I * O), only_dx(B * I), only_db(O);
          TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), nullptr, d.data(), kept.view(), bias,
                                          Accumulate::kOverwrite, only_dw.data(), nullptr, nullptr));
          TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, nullptr, w.data(), d.data(), kept.view(), bias,
                                          Accumulate::kOverwrite, nullptr, only_dx.data(), nullptr));
          TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, nullptr, nullptr, d.data(), kept.view(), bias,
                                          Accumulate::kOverwrite, nullptr, nullptr, only_db.data()));
          TP_CHECK(only_dw == dw);
          TP_CHECK(only_dx == dx);
          TP_CHECK(only_db == db);
        }
}

TP_TEST(DenseSparseWithAllKeptEqualsReference) {
  tpt::Rng rng(13);
  const int32_t B = 4, I = 9, O = 7;
  const auto x = rng.Vec(B * I), w = rng.Vec(I * O), d = rng.Vec(B * O);
  std::vector<int32_t> k(B, O), idx(B * O);
  for (int32_t b = 0; b < B; ++b)
    for (int32_t j = 0; j < O; ++j) idx[b * O + j] = j;
  std::vector<float> a(I * O), bx(B * I), c(O), ra(I * O), rb(B * I), rc(O);
  TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), w.data(), d.data(), KeptSet{k.data(), idx.data(), O},
                                  BiasGrad::kKeptOnly, Accumulate::kOverwrite, a.data(), bx.data(), c.data()));
  TP_CHECK_OK(DenseBackwardReference(DenseShape{B, I, O}, x.data(), w.data(), d.data(), ra.data(), rb.data(), rc.data()));
  TP_CHECK_EQ(CountMismatch(a, ra, 1e-6), 0);
  TP_CHECK_EQ(CountMismatch(bx, rb, 1e-6), 0);
  TP_CHECK_EQ(CountMismatch(c, rc, 1e-6), 0);
}

TP_TEST(DenseErrors) {
  const float x[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 2, 3, 4, 5, 6}, d[4] = {1, 2, 3, 4};
  float dw[6] = {7, 7, 7, 7, 7, 7}, dx[6], db[3];
  const int32_t k[2] = {1, 1}, idx[4] = {0, 9, 1, 9};
  const KeptSet kept{k, idx, 2};
  const DenseShape s{2, 3, 2};
  TP_CHECK_OK(DenseBackwardSparse(s, x, w, d, kept, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db));
  std::fill(dw, dw + 6, 7.0f);
  TP_CHECK_STATUS(DenseBackwardSparse(DenseShape{0, 3, 2}, x, w, d, kept, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db),
                  Status::kBadShape);
  TP_CHECK_STATUS(DenseBackwardSparse(DenseShape{2, -3, 2}, x, w, d, kept, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db),
                  Status::kBadShape);
  TP_CHECK_STATUS(DenseBackwardSparse(DenseShape{2, 65536, 65536}, x, w, d, kept, BiasGrad::kDense,
                                      Accumulate::kOverwrite, dw, dx, db),
                  Status::kBadShape);
  TP_CHECK_STATUS(DenseBackwardSparse(s, nullptr, w, d, kept, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db),
                  Status::kBadArgument);
  TP_CHECK_STATUS(DenseBackwardSparse(s, x, nullptr, d, kept, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db),
                  Status::kBadArgument);
  TP_CHECK_STATUS(DenseBackwardSparse(s, x, w, nullptr, kept, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db),
                  Status::kBadArgument);
  TP_CHECK_STATUS(DenseBackwardSparse(s, x, w, d, kept, static_cast<BiasGrad>(3), Accumulate::kOverwrite, dw, dx, db),
                  Status::kBadArgument);
  TP_CHECK_STATUS(DenseBackwardSparse(s, x, w, d, kept, BiasGrad::kDense, static_cast<Accumulate>(2), dw, dx, db),
                  Status::kBadArgument);
  const int32_t k_bad[2] = {3, 1};
  TP_CHECK_STATUS(DenseBackwardSparse(s, x, w, d, KeptSet{k_bad, idx, 2}, BiasGrad::kDense, Accumulate::kOverwrite, dw,
                                      dx, db),
                  Status::kBadIndex);
  const int32_t idx_bad[4] = {2, 9, 1, 9};  // 2 out of range for out = 2
  TP_CHECK_STATUS(DenseBackwardSparse(s, x, w, d, KeptSet{k, idx_bad, 2}, BiasGrad::kDense, Accumulate::kOverwrite,
                                      dw, dx, db),
                  Status::kBadIndex);
  for (float v : dw) TP_CHECK_EQ(v, 7.0f);  // untouched on every error
  TP_CHECK_STATUS(DenseBackwardReference(DenseShape{2, 3, 0}, x, w, d, dw, dx, db), Status::kBadShape);
}

TP_TEST(ReluBackwardMasksByOutput) {
  const float g[5] = {1, 2, 3, 4, 5}, a[5] = {0.5f, 0.0f, -1.0f, 2.0f, -0.0f};
  float out[5];
  TP_CHECK_OK(ReluBackward(g, a, 5, out));
  const float want[5] = {1, 0, 0, 4, 0};
  for (int i = 0; i < 5; ++i) TP_CHECK_EQ(out[i], want[i]);
  float inplace[5] = {1, 2, 3, 4, 5};
  TP_CHECK_OK(ReluBackward(inplace, a, 5, inplace));
  for (int i = 0; i < 5; ++i) TP_CHECK_EQ(inplace[i], want[i]);
  TP_CHECK_STATUS(ReluBackward(g, a, 0, out), Status::kBadShape);
  TP_CHECK_STATUS(ReluBackward(g, nullptr, 5, out), Status::kBadArgument);
}

// The blocked sparse kernel equals the straightforward per-row loop bit for bit (kAdd on non-zero outputs, and
// kOverwrite), across the 64-row dx chunk boundary and every remainder of k modulo the 4-column blocks.
TP_TEST(DenseSparseIsBitIdenticalToStraightforwardLoop) {
  tpt::Rng rng(4242);
  const int32_t shapes[][3] = {{1, 130, 9}, {3, 64, 7}, {2, 65, 16}, {1, 5, 3}};
  for (const auto& sh : shapes) {
    const int32_t B = sh[0], I = sh[1], O = sh[2];
    const auto x = rng.Vec(static_cast<size_t>(B) * I), w = rng.Vec(static_cast<size_t>(I) * O);
    const auto d = rng.Vec(static_cast<size_t>(B) * O);
    for (int32_t kk = 0; kk <= O; ++kk) {
      std::vector<int32_t> k(B), idx(static_cast<size_t>(B) * O, -1);
      for (int32_t b = 0; b < B; ++b) {
        k[b] = (b == 1) ? 0 : kk;
        const auto sub = rng.Subset(O, k[b]);
        for (int32_t t = 0; t < k[b]; ++t) idx[static_cast<size_t>(b) * O + t] = sub[t];
      }
      const KeptSet set{k.data(), idx.data(), O};
      auto dw = rng.Vec(static_cast<size_t>(I) * O), dx = rng.Vec(static_cast<size_t>(B) * I);
      auto dw_ref = dw, dx_ref = dx;
      for (int32_t b = 0; b < B; ++b) {
        for (int32_t i = 0; i < I; ++i) {
          float acc = 0.0f;
          for (int32_t t = 0; t < k[b]; ++t) {
            const int32_t j = idx[static_cast<size_t>(b) * O + t];
            dw_ref[static_cast<size_t>(i) * O + j] += x[static_cast<size_t>(b) * I + i] * d[static_cast<size_t>(b) * O + j];
            acc += w[static_cast<size_t>(i) * O + j] * d[static_cast<size_t>(b) * O + j];
          }
          dx_ref[static_cast<size_t>(b) * I + i] += acc;
        }
      }
      TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), w.data(), d.data(), set, BiasGrad::kDense,
                                      Accumulate::kAdd, dw.data(), dx.data(), nullptr));
      TP_CHECK(std::memcmp(dw.data(), dw_ref.data(), dw.size() * 4) == 0);
      TP_CHECK(std::memcmp(dx.data(), dx_ref.data(), dx.size() * 4) == 0);
      // kOverwrite == kAdd onto zeros (the same sums), dx of the k = 0 sample 0.
      std::vector<float> dw0(dw.size(), 0.0f), dx0(dx.size(), 0.0f), dw1(dw.size(), 7.0f), dx1(dx.size(), 7.0f);
      TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), w.data(), d.data(), set, BiasGrad::kDense,
                                      Accumulate::kAdd, dw0.data(), dx0.data(), nullptr));
      TP_CHECK_OK(DenseBackwardSparse(DenseShape{B, I, O}, x.data(), w.data(), d.data(), set, BiasGrad::kDense,
                                      Accumulate::kOverwrite, dw1.data(), dx1.data(), nullptr));
      TP_CHECK(std::memcmp(dw0.data(), dw1.data(), dw0.size() * 4) == 0);
      TP_CHECK(std::memcmp(dx0.data(), dx1.data(), dx0.size() * 4) == 0);
    }
  }
}
