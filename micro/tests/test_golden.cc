// Runs every golden test-vector file (*.tpv) found in the --golden directory (tests/golden by default in ctest).
// Format and kernels: tests/golden/README.md. No files -> the test passes with a note.
#include <algorithm>
#include <filesystem>

#include "harness.h"
#include "vector_file.h"

using namespace tinyprop;
namespace fs = std::filesystem;

namespace {

struct Runner {
  const tpv::Case& c;
  int errors = 0;

  void Error(const std::string& what) {
    ++errors;
    tpt::Fail(__FILE__, __LINE__, "golden case '" + c.name + "' (" + c.kernel + "): " + what);
  }
  const std::vector<int32_t>* I32(const std::string& n, bool required = true) {
    const tpv::Array* a = c.Find(n, "i32");
    if (a == nullptr && required) Error("missing i32 array '" + n + "'");
    return a ? &a->i32 : nullptr;
  }
  const std::vector<float>* F32(const std::string& n, bool required = true) {
    const tpv::Array* a = c.Find(n, "f32");
    if (a == nullptr && required) Error("missing f32 array '" + n + "'");
    return a ? &a->f32 : nullptr;
  }
  const std::vector<double>* F64(const std::string& n, bool required = true) {
    const tpv::Array* a = c.Find(n, "f64");
    if (a == nullptr && required) Error("missing f64 array '" + n + "'");
    return a ? &a->f64 : nullptr;
  }
  bool Sized(const std::string& n, size_t got, size_t want) {
    if (got != want) {
      Error("array '" + n + "' has " + std::to_string(got) + " values, expected " + std::to_string(want));
      return false;
    }
    return true;
  }
  float Tolerance(float fallback) {
    const auto* t = F32("tolerance", false);
    return (t && !t->empty()) ? (*t)[0] : fallback;
  }
  bool Exact() {
    const auto* e = I32("exact", false);
    return e && !e->empty() && (*e)[0] != 0;
  }
  void ExpectOk(tinyprop::Status s) {
    if (s != tinyprop::Status::kOk) Error(std::string("kernel returned ") + StatusName(s));
  }
  // Compares an output with its expected array if the case provides one.
  void Compare(const std::string& n, const float* got, size_t count, double tol, bool exact) {
    const auto* want = F32(n, false);
    if (want == nullptr || !Sized(n, want->size(), count)) return;
    int bad = 0;
    for (size_t i = 0; i < count; ++i) {
      const bool ok = exact ? tpt::Bits(got[i]) == tpt::Bits((*want)[i]) : tpt::Near(got[i], (*want)[i], tol);
      if (!ok && ++bad <= 3) {
        std::ostringstream os;
        os.precision(9);
        os << n << "[" << i << "] = " << got[i] << ", expected " << (*want)[i];
        Error(os.str());
      }
    }
    if (bad > 3) Error(n + ": " + std::to_string(bad) + " mismatches in total");
  }
  void CompareInt(const std::string& n, const int32_t* got, size_t count) {
    const auto* want = I32(n, false);
    if (want == nullptr || !Sized(n, want->size(), count)) return;
    for (size_t i = 0; i < count; ++i) {
      if (got[i] != (*want)[i]) {
        Error(n + "[" + std::to_string(i) + "] = " + std::to_string(got[i]) + ", expected " +
              std::to_string((*want)[i]));
        return;
      }
    }
  }
  // mask [B, n] (0/1) -> KeptSet rows with stride n
  bool MaskToKept(const std::vector<int32_t>& mask, int32_t batch, int32_t n, std::vector<int32_t>* k,
                  std::vector<int32_t>* idx) {
    if (!Sized("mask", mask.size(), static_cast<size_t>(batch) * n)) return false;
    k->assign(batch, 0);
    idx->assign(static_cast<size_t>(batch) * n, -1);
    for (int32_t b = 0; b < batch; ++b)
      for (int32_t j = 0; j < n; ++j)
        if (mask[static_cast<size_t>(b) * n + j]) (*idx)[static_cast<size_t>(b) * n + (*k)[b]++] = j;
    return true;
  }
  std::vector<int32_t> KeptToMaskRows(const std::vector<int32_t>& k, const std::vector<int32_t>& kept, int32_t batch,
                                      int32_t n) {
    std::vector<int32_t> mask(static_cast<size_t>(batch) * n, 0);
    for (int32_t b = 0; b < batch; ++b)
      for (int32_t t = 0; t < k[b]; ++t) mask[static_cast<size_t>(b) * n + kept[static_cast<size_t>(b) * n + t]] = 1;
    return mask;
  }
  RatioParams Params() {
    const auto* s_min = F32("s_min");
    const auto* s_max = F32("s_max");
    const auto* zp = F32("zeta_pow");
    const auto* r = I32("rounding", false);
    const auto* reference = I32("reference", false);
    const auto* decay = F32("decay", false);
    const auto* per_sample_max = I32("per_sample_max", false);
    const auto* min_kept = I32("min_kept", false);
    const auto* skip_below = F32("skip_below", false);
    const auto* quantile_share = F32("quantile_share", false);
    const auto* quantile_rate = F32("quantile_rate", false);
    RatioParams p{0, 0, 0, Rounding::kFloor};
    if (s_min && s_max && zp && !s_min->empty() && !s_max->empty() && !zp->empty()) {
      p = RatioParams{(*s_min)[0], (*s_max)[0], (*zp)[0],
                      (r && !r->empty() && (*r)[0] == 1) ? Rounding::kHalfEven : Rounding::kFloor};
    }
    if (reference && !reference->empty() && (*reference)[0] == 1) p.reference = Reference::kMean;
    if (reference && !reference->empty() && (*reference)[0] == 2) p.reference = Reference::kQuantile;
    if (decay && !decay->empty()) p.decay = (*decay)[0];
    if (per_sample_max && !per_sample_max->empty()) p.per_sample_max = (*per_sample_max)[0] == 1;
    if (min_kept && !min_kept->empty()) p.min_kept = (*min_kept)[0];
    if (skip_below && !skip_below->empty()) p.skip_below = (*skip_below)[0];
    if (quantile_share && !quantile_share->empty()) p.quantile_share = (*quantile_share)[0];
    if (quantile_rate && !quantile_rate->empty()) p.quantile_rate = (*quantile_rate)[0];
    return p;
  }

  void Run();
  void RunAdaptiveK();
  void RunTopK();
  void RunSelect(bool channels);
  void RunDense();
  void RunConv(bool depthwise);
  void RunLoss(int which);
  void RunSgd();
  void RunAdam();
};

void Runner::RunAdaptiveK() {
  const auto* y = F32("y");
  const auto* ymax = F32("ymax");
  const auto* n = I32("n");
  if (!y || !ymax || !n || ymax->size() != 1 || n->size() != 1) return Error("needs y, ymax[1], n[1]");
  const int32_t B = static_cast<int32_t>(y->size());
  float m = (*ymax)[0];
  std::vector<float> bpr(B);
  std::vector<int32_t> k(B);
  ExpectOk(AdaptiveK(y->data(), B, (*n)[0], Params(), &m, bpr.data(), k.data()));
  Compare("ymax_out", &m, 1, 0, true);
  Compare("bpr", bpr.data(), B, 0, true);
  CompareInt("k", k.data(), B);
}

void Runner::RunTopK() {
  const auto* shape = I32("shape");
  const auto* scores = F32("scores");
  const auto* k = I32("k");
  if (!shape || !scores || !k || shape->size() != 2) return Error("needs shape[2], scores, k");
  const int32_t B = (*shape)[0], N = (*shape)[1];
  if (!Sized("scores", scores->size(), static_cast<size_t>(B) * N) || !Sized("k", k->size(), B)) return;
  std::vector<int32_t> kept(static_cast<size_t>(B) * N);
  ExpectOk(TopKBatch(scores->data(), B, N, k->data(), kept.data()));
  if (errors) return;
  const auto mask = KeptToMaskRows(*k, kept, B, N);
  CompareInt("mask", mask.data(), mask.size());
}

void Runner::RunSelect(bool channels) {
  const auto* shape = I32("shape");
  const auto* delta = F32("delta");
  const auto* ymax = F32("ymax");
  if (!shape || !delta || !ymax || ymax->size() != 1) return Error("needs shape, delta, ymax[1]");
  if (shape->size() != (channels ? 4u : 2u)) return Error("bad shape rank");
  const int32_t B = (*shape)[0];
  const int32_t P = channels ? (*shape)[1] * (*shape)[2] : 1;
  const int32_t N = channels ? (*shape)[3] : (*shape)[1];
  if (!Sized("delta", delta->size(), static_cast<size_t>(B) * P * N)) return;
  float m = (*ymax)[0];
  std::vector<int32_t> k(B), kept(static_cast<size_t>(B) * N);
  std::vector<float> scratch(static_cast<size_t>(channels ? SelectChannelsScratchSize(B, N) : SelectUnitsScratchSize(B)));
  if (channels) {
    ExpectOk(SelectChannels(delta->data(), B, P, N, Params(), &m, k.data(), kept.data(), scratch.data(),
                          static_cast<int64_t>(scratch.size())));
  } else {
    ExpectOk(SelectUnits(delta->data(), B, N, Params(), &m, k.data(), kept.data(), scratch.data(),
                       static_cast<int64_t>(scratch.size())));
  }
  if (errors) return;
  Compare("y", scratch.data() + (channels ? static_cast<size_t>(B) * N : 0), B, 0, true);
  Compare("ymax_out", &m, 1, 0, true);
  CompareInt("k", k.data(), B);
  const auto mask = KeptToMaskRows(k, kept, B, N);
  CompareInt("mask", mask.data(), mask.size());
}

void Runner::RunDense() {
  const auto* shape = I32("shape");
  const auto* x = F32("x");
  const auto* w = F32("w");
  const auto* delta = F32("delta");
  if (!shape || !x || !w || !delta || shape->size() != 3) return Error("needs shape[3], x, w, delta");
  const int32_t B = (*shape)[0], I = (*shape)[1], O = (*shape)[2];
  if (!Sized("x", x->size(), static_cast<size_t>(B) * I) || !Sized("w", w->size(), static_cast<size_t>(I) * O) ||
      !Sized("delta", delta->size(), static_cast<size_t>(B) * O))
    return;
  std::vector<float> dw(static_cast<size_t>(I) * O), dx(static_cast<size_t>(B) * I), db(O);
  const auto* mask = I32("mask", false);
  const auto* bias = I32("bias_mode", false);
  if (mask) {
    std::vector<int32_t> k, idx;
    if (!MaskToKept(*mask, B, O, &k, &idx)) return;
    ExpectOk(DenseBackwardSparse(DenseShape{B, I, O}, x->data(), w->data(), delta->data(), KeptSet{k.data(), idx.data(), O},
                               (bias && !bias->empty() && (*bias)[0] == 1) ? BiasGrad::kKeptOnly : BiasGrad::kDense,
                               Accumulate::kOverwrite, dw.data(), dx.data(), db.data()));
  } else {
    ExpectOk(DenseBackwardReference(DenseShape{B, I, O}, x->data(), w->data(), delta->data(), dw.data(), dx.data(), db.data()));
  }
  const double tol = Tolerance(1e-5f);
  Compare("dw", dw.data(), dw.size(), tol, false);
  Compare("dx", dx.data(), dx.size(), tol, false);
  Compare("db", db.data(), db.size(), tol, false);
}

void Runner::RunConv(bool depthwise) {
  const auto* shape = I32("shape");
  const auto* window = I32("window");
  const auto* x = F32("x");
  const auto* w = F32("w");
  const auto* delta = F32("delta");
  if (!shape || !window || !x || !w || !delta || shape->size() != 5 || window->size() != 7)
    return Error("needs shape[5], window[7], x, w, delta");
  const auto& s = *shape;
  const auto& v = *window;
  const ConvWindow win{v[0], v[1], v[2], v[3], v[4], v[5], v[6] == 1 ? Padding::kSame : Padding::kValid};
  ConvGeometry g{};
  ExpectOk(ComputeConvGeometry(s[1], s[2], win, &g));
  if (errors) return;
  const int32_t O = depthwise ? s[3] * s[4] : s[4];
  const size_t nx = static_cast<size_t>(s[0]) * s[1] * s[2] * s[3];
  const size_t nk = static_cast<size_t>(v[0]) * v[1] * s[3] * s[4];
  const size_t nd = static_cast<size_t>(s[0]) * g.out_h * g.out_w * O;
  if (!Sized("x", x->size(), nx) || !Sized("w", w->size(), nk) || !Sized("delta", delta->size(), nd)) return;
  std::vector<float> dw(nk), dx(nx), db(O);
  const auto* mask = I32("mask", false);
  const auto* bias = I32("bias_mode", false);
  const BiasGrad bg = (bias && !bias->empty() && (*bias)[0] == 1) ? BiasGrad::kKeptOnly : BiasGrad::kDense;
  std::vector<int32_t> k, idx;
  if (mask && !MaskToKept(*mask, s[0], O, &k, &idx)) return;
  const KeptSet kept{k.data(), idx.data(), O};
  if (depthwise) {
    const DepthwiseShape ds{s[0], s[1], s[2], s[3], s[4]};
    ExpectOk(mask ? DepthwiseConv2DBackwardSparse(ds, win, x->data(), w->data(), delta->data(), kept, bg,
                                                Accumulate::kOverwrite, dw.data(), dx.data(), db.data())
                : DepthwiseConv2DBackwardReference(ds, win, x->data(), w->data(), delta->data(), dw.data(), dx.data(),
                                                   db.data()));
  } else {
    const Conv2DShape cs{s[0], s[1], s[2], s[3], s[4]};
    ExpectOk(mask ? Conv2DBackwardSparse(cs, win, x->data(), w->data(), delta->data(), kept, bg, Accumulate::kOverwrite,
                                       dw.data(), dx.data(), db.data())
                : Conv2DBackwardReference(cs, win, x->data(), w->data(), delta->data(), dw.data(), dx.data(), db.data()));
  }
  const double tol = Tolerance(1e-5f);
  Compare("dw", dw.data(), nk, tol, false);
  Compare("dx", dx.data(), nx, tol, false);
  Compare("db", db.data(), O, tol, false);
}

void Runner::RunLoss(int which) {
  const auto* shape = I32("shape");
  if (!shape || shape->size() != 2) return Error("needs shape[2]");
  const int32_t B = (*shape)[0], C = (*shape)[1];
  const size_t n = static_cast<size_t>(B) * C;
  float loss = 0.0f;
  std::vector<float> grad(n);
  if (which == 0) {
    const auto* z = F32("logits");
    const auto* labels = I32("labels");
    if (!z || !labels || !Sized("logits", z->size(), n) || !Sized("labels", labels->size(), B)) return;
    ExpectOk(SoftmaxCrossEntropy(z->data(), labels->data(), B, C, &loss, grad.data()));
  } else if (which == 1) {
    const auto* z = F32("logits");
    const auto* t = F32("targets");
    if (!z || !t || !Sized("logits", z->size(), n) || !Sized("targets", t->size(), n)) return;
    ExpectOk(SoftmaxCrossEntropyDense(z->data(), t->data(), B, C, &loss, grad.data()));
  } else {
    const auto* p = F32("pred");
    const auto* t = F32("target");
    if (!p || !t || !Sized("pred", p->size(), n) || !Sized("target", t->size(), n)) return;
    ExpectOk(MeanSquaredError(p->data(), t->data(), B, C, &loss, grad.data()));
  }
  const double tol = Tolerance(1e-5f);
  Compare("loss", &loss, 1, tol, Exact());
  Compare("grad", grad.data(), n, tol, Exact());
}

void Runner::RunSgd() {
  const auto* hyper = F32("hyper");  // lr, momentum
  const auto* w0 = F32("w0");
  const auto* grads = F32("grads");
  const auto* steps = I32("steps");
  if (!hyper || !w0 || !grads || !steps || hyper->size() != 2 || steps->size() != 1) return Error("bad sgd case");
  const auto* nesterov = I32("nesterov", false);
  const size_t n = w0->size();
  if (!Sized("grads", grads->size(), n * (*steps)[0])) return;
  std::vector<float> w = *w0, v(n, 0.0f);
  if (const auto* v0 = F32("v0", false)) {
    if (!Sized("v0", v0->size(), n)) return;
    v = *v0;
  }
  const SgdParams p{(*hyper)[0], (*hyper)[1], nesterov && !nesterov->empty() && (*nesterov)[0] != 0};
  for (int32_t t = 0; t < (*steps)[0] && !errors; ++t)
    ExpectOk(SgdUpdate(p, w.data(), grads->data() + n * t, v.data(), static_cast<int32_t>(n)));
  Compare("w", w.data(), n, Tolerance(1e-6f), Exact());
  Compare("v", v.data(), n, Tolerance(1e-6f), Exact());
}

void Runner::RunAdam() {
  const auto* hyper = F64("hyper");  // lr, beta_1, beta_2, epsilon (Python doubles)
  const auto* w0 = F32("w0");
  const auto* grads = F32("grads");
  const auto* steps = I32("steps");
  if (!hyper || !w0 || !grads || !steps || hyper->size() != 4 || steps->size() != 1) return Error("bad adam case");
  const size_t n = w0->size();
  const int32_t T = (*steps)[0];
  if (!Sized("grads", grads->size(), n * T)) return;
  const auto* first = I32("first_step", false);
  const int64_t step0 = (first && !first->empty()) ? (*first)[0] : 1;
  const auto* powers = F32("beta_powers", false);  // [T, 2]: TF's beta_1^t, beta_2^t (bit-exact replay)
  if (powers && !Sized("beta_powers", powers->size(), 2 * static_cast<size_t>(T))) return;
  AdamParams p{};
  ExpectOk(MakeAdamParams((*hyper)[0], (*hyper)[1], (*hyper)[2], (*hyper)[3], &p));
  std::vector<float> w = *w0, m(n, 0.0f), v(n, 0.0f);
  if (const auto* m0 = F32("m0", false)) m = *m0;
  if (const auto* v0 = F32("v0", false)) v = *v0;
  if (!Sized("m0", m.size(), n) || !Sized("v0", v.size(), n)) return;
  for (int32_t t = 0; t < T && !errors; ++t) {
    float b1p, b2p;
    if (powers) {
      b1p = (*powers)[2 * t];
      b2p = (*powers)[2 * t + 1];
    } else {
      ExpectOk(AdamPowers(p, step0 + t, &b1p, &b2p));
    }
    ExpectOk(AdamUpdate(p, b1p, b2p, w.data(), grads->data() + n * t, m.data(), v.data(), static_cast<int32_t>(n)));
  }
  Compare("w", w.data(), n, Tolerance(1e-6f), Exact());
  Compare("m", m.data(), n, Tolerance(1e-6f), Exact());
  Compare("v", v.data(), n, Tolerance(1e-6f), Exact());
}

void Runner::Run() {
  const std::string& k = c.kernel;
  if (k == "adaptive_k") RunAdaptiveK();
  else if (k == "topk") RunTopK();
  else if (k == "select_units") RunSelect(false);
  else if (k == "select_channels") RunSelect(true);
  else if (k == "dense_backward") RunDense();
  else if (k == "conv2d_backward") RunConv(false);
  else if (k == "depthwise_conv2d_backward") RunConv(true);
  else if (k == "softmax_cross_entropy") RunLoss(0);
  else if (k == "softmax_cross_entropy_dense") RunLoss(1);
  else if (k == "mse") RunLoss(2);
  else if (k == "sgd") RunSgd();
  else if (k == "adam") RunAdam();
  else Error("unknown kernel '" + k + "'");
}

}  // namespace

TP_TEST(VectorFileParser) {
  std::vector<tpv::Case> cases;
  std::string err;
  TP_CHECK(tpv::Parse("tpv 1\n# comment\ncase a topk\n i32 shape 2 1 3\n f32 scores 3 0.5 nan -inf\nend\n", &cases, &err));
  TP_CHECK_EQ(cases.size(), size_t{1});
  if (!cases.empty()) {
    TP_CHECK(cases[0].Find("shape", "i32") != nullptr);
    TP_CHECK(cases[0].Find("shape", "f32") == nullptr);
    const auto* s = cases[0].Find("scores", "f32");
    TP_CHECK(s != nullptr && s->f32[0] == 0.5f && std::isnan(s->f32[1]) && std::isinf(s->f32[2]));
  }
  cases.clear();
  TP_CHECK(tpv::Parse("tpv 1\ncase a b\nf32 x 1 0.100000001\nf64 y 1 0.9\nend", &cases, &err));
  TP_CHECK(cases.size() == 1 && cases[0].Find("x", "f32")->f32[0] == 0.1f && cases[0].Find("y", "f64")->f64[0] == 0.9);
  TP_CHECK(!tpv::Parse("tpv 2\n", &cases, &err));
  TP_CHECK(!tpv::Parse("tpv 1\ncase a b\ni32 x 3 1 2\nend", &cases, &err));
  TP_CHECK(!tpv::Parse("tpv 1\ncase a b\ni32 x 1 1.5\nend", &cases, &err));
  TP_CHECK(!tpv::Parse("tpv 1\ncase a b\nu8 x 1 1\nend", &cases, &err));
  TP_CHECK(!tpv::Parse("tpv 1\ncase a b\ni32 x 1 1\n", &cases, &err));
  TP_CHECK(!tpv::Parse("tpv 1\ncase a b\ni32 x 1 1\ni32 x 1 2\nend", &cases, &err));
}

TP_TEST(GoldenVectors) {
  const std::string dir = tpt::Ctx().golden_dir;
  if (dir.empty()) {
    std::cout << "  (no --golden directory given)\n";
    return;
  }
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.is_regular_file() && e.path().extension() == ".tpv") files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::cout << "  (no *.tpv files in " << dir << ")\n";
    return;
  }
  size_t total = 0;
  for (const auto& f : files) {
    std::vector<tpv::Case> cases;
    std::string err;
    if (!tpv::ParseFile(f.string(), &cases, &err)) {
      tpt::Fail(__FILE__, __LINE__, err);
      continue;
    }
    for (const auto& c : cases) {
      Runner r{c};
      r.Run();
      ++total;
    }
  }
  std::cout << "  " << total << " golden cases from " << files.size() << " file(s)\n";
  TP_CHECK(total > 0);
}
