// Instruction-count bench of the TinyProp kernels under QEMU (-icount): SysTick ticks around each kernel call.
//
// Jobs come from the semihosting command line (QEMU -append), any number, in order:
//   calib                       calibration loops of known instruction counts (verifies ticks -> instructions)
//   fc B IN OUT DX k1 k2 ...    Dense layer backward, batch B, IN -> OUT; DX = 1 computes dx (0: first layer)
//   conv H W C k1 k2 ...        depthwise-separable block: DepthwiseConv2D 3x3 SAME on [1, H, W, C] + 1x1 Conv2D
//                               C -> C; channel-sparse backward of both layers at k kept channels
// Output, one measurement per line:  M <name> <ticks run 1> <ticks run 2>   (every kernel call runs twice; the
// measuring overhead - two SysTick reads - is subtracted). Lines starting with '#' are comments. The program
// checks its results (naive loops == library reference, sparse at k = n == reference, kept dW columns == the
// reference's, unkept ones 0, kept units are the top-|delta| ones) and exits non-zero on any mismatch.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mps2_support.h"
#include "naive.h"
#include "tinyprop/tinyprop.h"

using namespace tinyprop;

namespace {

// ---- memory: everything static, carved per job ----------------------------------------------------------
constexpr int32_t kPoolFloats = 800 * 1024;  // 3.2 MB of the 4 MB RAM
constexpr int32_t kPoolInts = 16 * 1024;
float g_pool[kPoolFloats];
int32_t g_ipool[kPoolInts];
int32_t g_used, g_iused;
int g_failures;

float* Floats(int32_t n) {
  if (n > kPoolFloats - g_used) {
    printf("# ERROR: job needs more than %ld floats of buffer\n", static_cast<long>(kPoolFloats));
    mps2_exit(3);
  }
  float* p = g_pool + g_used;
  g_used += n;
  return p;
}

int32_t* Ints(int32_t n) {
  if (n > kPoolInts - g_iused) {
    printf("# ERROR: job needs more than %ld ints of buffer\n", static_cast<long>(kPoolInts));
    mps2_exit(3);
  }
  int32_t* p = g_ipool + g_iused;
  g_iused += n;
  return p;
}

uint32_t g_seed;
void ResetPools() {  // start of a job: empty pools, same data for the same job wherever it runs
  g_used = g_iused = 0;
  g_seed = 12345u;
}

// Deterministic pseudo-random floats in [-1, 1) (LCG; the same data on every run and target).

void FillRandom(float* p, int32_t n) {
  for (int32_t i = 0; i < n; ++i) {
    g_seed = g_seed * 1664525u + 1013904223u;
    p[i] = static_cast<float>(static_cast<int32_t>(g_seed >> 8) - (1 << 23)) * (1.0f / (1 << 23));
  }
}

void Fail(const char* what) {
  printf("# CHECK FAILED: %s\n", what);
  ++g_failures;
}

bool Equal(const float* a, const float* b, int32_t n) {
  for (int32_t i = 0; i < n; ++i) {
    if (!(a[i] == b[i])) return false;
  }
  return true;
}

void Expect(Status s, const char* what) {
  if (s != Status::kOk) {
    printf("# %s returned %s\n", what, StatusName(s));
    Fail(what);
  }
}

// ---- measuring ----------------------------------------------------------------------------------------------
uint64_t g_overhead;

template <typename F>
uint64_t Ticks(F&& f) {
  __asm volatile("" ::: "memory");
  const uint64_t t0 = ticks_now();
  __asm volatile("" ::: "memory");
  f();
  __asm volatile("" ::: "memory");
  const uint64_t t1 = ticks_now();
  __asm volatile("" ::: "memory");
  return t1 - t0;
}

// Runs f twice and prints both tick counts (the first run's results stay in the outputs for the checks only if
// f overwrites them, which every measured call here does or does not depend on).
template <typename F>
void Measure(const char* name, F&& f) {
  const uint64_t a = Ticks(f) - g_overhead;
  const uint64_t b = Ticks(f) - g_overhead;
  printf("M %s %llu %llu\n", name, static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
}

void CalibrateOverhead() {
  uint64_t best = ~0ull;
  for (int i = 0; i < 4; ++i) {
    const uint64_t t = Ticks([] {});
    if (t < best) best = t;
  }
  g_overhead = best;
  printf("# measuring overhead (two SysTick reads): %llu ticks\n", static_cast<unsigned long long>(best));
}

// ---- jobs ---------------------------------------------------------------------------------------------------
void JobCalib() {
  const uint32_t lo = 1000, hi = 101000;  // difference: 100000 iterations x 10 instructions
  printf("# calib: loops of 10 instructions per iteration, %lu and %lu iterations\n", static_cast<unsigned long>(lo),
         static_cast<unsigned long>(hi));
  Measure("calib.nop.lo", [&] { bench::CalibNop(lo); });
  Measure("calib.nop.hi", [&] { bench::CalibNop(hi); });
  Measure("calib.fp.lo", [&] { bench::CalibFp(lo); });
  Measure("calib.fp.hi", [&] { bench::CalibFp(hi); });
  Measure("calib.mem.lo", [&] { bench::CalibMem(lo); });
  Measure("calib.mem.hi", [&] { bench::CalibMem(hi); });
}

RatioParams ParamsForK(int32_t k, int32_t n) {
  // s_min = s_max: the adaptive ratio is exactly this value and floor(n * s) == k (k + 0.5 keeps rounding away).
  const float s = (k >= n) ? 1.0f : (static_cast<float>(k) + 0.5f) / static_cast<float>(n);
  return RatioParams{s, s, 1.0f, Rounding::kFloor};
}

// The kept units of row `kept` (k of n) must be the k largest |delta| (ties: lower index first).
bool KeptAreTop(const float* score_abs_src, bool abs_scores, const int32_t* kept, int32_t k, int32_t n) {
  float min_kept = 3.4e38f, max_unkept = -1.0f;
  int32_t t = 0;
  for (int32_t i = 0; i < n; ++i) {
    const float s = abs_scores ? __builtin_fabsf(score_abs_src[i]) : score_abs_src[i];
    if (t < k && kept[t] == i) {
      if (s < min_kept) min_kept = s;
      ++t;
    } else if (s > max_unkept) {
      max_unkept = s;
    }
  }
  return t == k && min_kept >= max_unkept;
}

void JobFc(int32_t batch, int32_t in, int32_t out, bool with_dx, const int32_t* ks, int32_t nk) {
  ResetPools();
  char name[96];
  const DenseShape shape{batch, in, out};
  float* x = Floats(batch * in);
  float* w = Floats(in * out);
  float* delta = Floats(batch * out);
  float* dw_ref = Floats(in * out);
  float* dx_ref = with_dx ? Floats(batch * in) : nullptr;
  float* db_ref = Floats(out);
  float* dw = Floats(in * out);
  float* dx = with_dx ? Floats(batch * in) : nullptr;
  float* db = Floats(out);
  float* scratch = Floats(batch);
  float* w_upd = Floats(in * out);
  int32_t* k = Ints(batch);
  int32_t* kept = Ints(batch * out);
  int32_t* union_scratch = Ints(out);
  uint8_t* mask_scratch = reinterpret_cast<uint8_t*>(Ints((out + 3) / 4));
  FillRandom(x, batch * in);
  FillRandom(w, in * out);
  FillRandom(delta, batch * out);
  const int mac_dx = with_dx ? 1 : 0;
  printf("# fc batch=%ld in=%ld out=%ld dx=%d\n", static_cast<long>(batch), static_cast<long>(in),
         static_cast<long>(out), mac_dx);
  char prefix[48];
  snprintf(prefix, sizeof prefix, "fc.b%ld.i%ld.o%ld.dx%d", static_cast<long>(batch), static_cast<long>(in),
           static_cast<long>(out), mac_dx);

  snprintf(name, sizeof name, "%s.dense_ref", prefix);
  Measure(name, [&] { Expect(DenseBackwardReference(shape, x, w, delta, dw_ref, dx_ref, db_ref), "reference"); });
  snprintf(name, sizeof name, "%s.naive", prefix);
  Measure(name, [&] { bench::NaiveDenseBackward(batch, in, out, x, w, delta, dw, dx, db); });
  if (!Equal(dw, dw_ref, in * out) || !Equal(db, db_ref, out) || (with_dx && !Equal(dx, dx_ref, batch * in))) {
    Fail("naive loops != DenseBackwardReference");
  }

  for (int32_t q = 0; q < nk; ++q) {
    const int32_t kk = ks[q];
    if (kk < 1 || kk > out) {
      Fail("k out of range");
      continue;
    }
    const RatioParams params = ParamsForK(kk, out);
    const KeptSet set{k, kept, out};
    snprintf(name, sizeof name, "%s.k%ld.select", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      float ymax = kYmaxInit;
      Expect(SelectUnits(delta, batch, out, params, &ymax, k, kept, scratch, batch), "SelectUnits");
    });
    for (int32_t b = 0; b < batch; ++b) {
      if (k[b] != kk) Fail("SelectUnits chose a different k");
      if (!KeptAreTop(delta + b * out, true, kept + b * out, kk, out)) Fail("kept units are not the top-|delta|");
    }
    snprintf(name, sizeof name, "%s.k%ld.sparse_dwdx", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      Expect(DenseBackwardSparse(shape, x, w, delta, set, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, nullptr),
             "DenseBackwardSparse dW+dx");
    });
    snprintf(name, sizeof name, "%s.k%ld.clear_add", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      if (with_dx) bench::ClearFloats(dx, batch * in);
    });
    snprintf(name, sizeof name, "%s.k%ld.sparse_dwdx_add", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      Expect(DenseBackwardSparse(shape, x, w, delta, set, BiasGrad::kDense, Accumulate::kAdd, dw, dx, nullptr),
             "DenseBackwardSparse dW+dx add");
    });
    // The optimizer step that consumes dW: KeptUnion + SgdUpdateColumns (which clears the columns it used), and
    // the same loop without the clearing.
    snprintf(name, sizeof name, "%s.k%ld.sgd_cols_plain", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      if (!bench::PlainSgdColumns(0.01f, batch, in, out, k, kept, out, mask_scratch, union_scratch, w_upd, dw)) {
        Fail("PlainSgdColumns");
      }
    });
    snprintf(name, sizeof name, "%s.k%ld.sgd_cols", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      int32_t count = 0;
      Expect(KeptUnion(set, batch, out, mask_scratch, union_scratch, &count), "KeptUnion");
      Expect(SgdUpdateColumns(0.01f, w_upd, dw, in, out, union_scratch, count), "SgdUpdateColumns");
    });
    for (int32_t i = 0; i < in * out; ++i) {
      if (!(dw[i] == 0.0f)) {
        Fail("SgdUpdateColumns left a gradient column uncleared");
        break;
      }
    }
    snprintf(name, sizeof name, "%s.k%ld.bias", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      Expect(DenseBackwardSparse(shape, nullptr, nullptr, delta, set, BiasGrad::kDense, Accumulate::kOverwrite,
                                 nullptr, nullptr, db),
             "DenseBackwardSparse bias");
    });
    snprintf(name, sizeof name, "%s.k%ld.sparse_all", prefix, static_cast<long>(kk));
    Measure(name, [&] {
      Expect(DenseBackwardSparse(shape, x, w, delta, set, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db),
             "DenseBackwardSparse");
    });
    if (!Equal(db, db_ref, out)) Fail("dense bias != reference");
    snprintf(name, sizeof name, "%s.k%ld.naive_sparse_add", prefix, static_cast<long>(kk));
    Measure(name, [&] { bench::NaiveDenseBackwardSparseAdd(batch, in, out, x, w, delta, k, kept, out, dw_ref, dx_ref); });
    // The library's kAdd kernel must give the straightforward sparse loop's result bit for bit (both from non-zero
    // outputs, so the "dx += row sum" order is checked too).
    for (int32_t i = 0; i < in * out; ++i) dw[i] = dw_ref[i] = 0.25f * static_cast<float>(i % 7);
    for (int32_t i = 0; with_dx && i < batch * in; ++i) dx[i] = dx_ref[i] = 0.5f * static_cast<float>(i % 5);
    Expect(DenseBackwardSparse(shape, x, w, delta, set, BiasGrad::kDense, Accumulate::kAdd, dw, dx, nullptr),
           "DenseBackwardSparse add");
    bench::NaiveDenseBackwardSparseAdd(batch, in, out, x, w, delta, k, kept, out, dw_ref, dx_ref);
    if (!Equal(dw, dw_ref, in * out) || (with_dx && !Equal(dx, dx_ref, batch * in))) {
      Fail("DenseBackwardSparse(kAdd) != straightforward sparse loop");
    }
    Expect(DenseBackwardReference(shape, x, w, delta, dw_ref, dx_ref, db_ref), "reference");
    Expect(DenseBackwardSparse(shape, x, w, delta, set, BiasGrad::kDense, Accumulate::kOverwrite, dw, dx, db),
           "DenseBackwardSparse");
    if (kk == out) {
      if (!Equal(dw, dw_ref, in * out) || (with_dx && !Equal(dx, dx_ref, batch * in))) {
        Fail("sparse backward with every unit kept != reference");
      }
    } else if (batch == 1) {
      // Batch 1: kept dW columns equal the reference's, the others are 0.
      int32_t t = 0;
      bool ok = true;
      for (int32_t j = 0; j < out; ++j) {
        const bool is_kept = t < kk && kept[t] == j;
        if (is_kept) ++t;
        for (int32_t i = 0; i < in; ++i) {
          const float v = dw[i * out + j];
          if (is_kept ? !(v == dw_ref[i * out + j]) : !(v == 0.0f)) ok = false;
        }
      }
      if (!ok) Fail("sparse dW columns != reference / 0");
    }
  }
}

void JobConv(int32_t h, int32_t wd, int32_t c, const int32_t* ks, int32_t nk) {
  ResetPools();
  char name[96];
  const int32_t hwc = h * wd * c;
  const ConvWindow dw_window{3, 3, 1, 1, 1, 1, Padding::kSame};
  const ConvWindow pw_window{1, 1, 1, 1, 1, 1, Padding::kValid};
  const DepthwiseShape dshape{1, h, wd, c, 1};
  const Conv2DShape pshape{1, h, wd, c, c};
  // Depthwise layer: input x_d, kernel [3, 3, C, 1], error d_d. Pointwise layer: input x_p, kernel [1, 1, C, C].
  float* x_d = Floats(hwc);
  float* w_d = Floats(9 * c);
  float* d_d = Floats(hwc);
  float* x_p = Floats(hwc);
  float* w_p = Floats(c * c);
  float* d_p = Floats(hwc);
  float* dw_d_ref = Floats(9 * c);
  float* dx_d_ref = Floats(hwc);
  float* db_d_ref = Floats(c);
  float* dw_p_ref = Floats(c * c);
  float* dx_p_ref = Floats(hwc);
  float* db_p_ref = Floats(c);
  float* dw_d = Floats(9 * c);
  float* dx_d = Floats(hwc);
  float* db_d = Floats(c);
  float* dw_p = Floats(c * c);
  float* dx_p = Floats(hwc);
  float* db_p = Floats(c);
  float* scratch = Floats(c + 1);
  float* w_upd_d = Floats(9 * c);
  float* w_upd_p = Floats(c * c);
  int32_t* k = Ints(1);
  int32_t* kept = Ints(c);
  int32_t* union_scratch = Ints(c);
  uint8_t* mask_scratch = reinterpret_cast<uint8_t*>(Ints((c + 3) / 4));
  FillRandom(x_d, hwc);
  FillRandom(w_d, 9 * c);
  FillRandom(d_d, hwc);
  FillRandom(x_p, hwc);
  FillRandom(w_p, c * c);
  FillRandom(d_p, hwc);
  printf("# conv h=%ld w=%ld c=%ld: DepthwiseConv2D 3x3 SAME + Conv2D 1x1, batch 1\n", static_cast<long>(h),
         static_cast<long>(wd), static_cast<long>(c));
  char prefix[48];
  snprintf(prefix, sizeof prefix, "conv.h%ld.w%ld.c%ld", static_cast<long>(h), static_cast<long>(wd),
           static_cast<long>(c));

  snprintf(name, sizeof name, "%s.dw.dense_ref", prefix);
  Measure(name, [&] {
    Expect(DepthwiseConv2DBackwardReference(dshape, dw_window, x_d, w_d, d_d, dw_d_ref, dx_d_ref, db_d_ref),
           "DepthwiseConv2DBackwardReference");
  });
  snprintf(name, sizeof name, "%s.dw.naive", prefix);
  Measure(name, [&] { bench::NaiveDepthwise3x3SameBackward(h, wd, c, x_d, w_d, d_d, dw_d, dx_d, db_d); });
  if (!Equal(dw_d, dw_d_ref, 9 * c) || !Equal(dx_d, dx_d_ref, hwc) || !Equal(db_d, db_d_ref, c)) {
    Fail("naive depthwise != DepthwiseConv2DBackwardReference");
  }
  snprintf(name, sizeof name, "%s.pw.dense_ref", prefix);
  Measure(name, [&] {
    Expect(Conv2DBackwardReference(pshape, pw_window, x_p, w_p, d_p, dw_p_ref, dx_p_ref, db_p_ref),
           "Conv2DBackwardReference");
  });
  snprintf(name, sizeof name, "%s.pw.naive", prefix);  // a 1x1 convolution is a Dense layer over the positions
  Measure(name, [&] { bench::NaiveDenseBackward(h * wd, c, c, x_p, w_p, d_p, dw_p, dx_p, db_p); });
  if (!Equal(dw_p, dw_p_ref, c * c) || !Equal(dx_p, dx_p_ref, hwc) || !Equal(db_p, db_p_ref, c)) {
    Fail("naive pointwise != Conv2DBackwardReference");
  }

  for (int32_t q = 0; q < nk; ++q) {
    const int32_t kk = ks[q];
    if (kk < 1 || kk > c) {
      Fail("k out of range");
      continue;
    }
    const RatioParams params = ParamsForK(kk, c);
    const KeptSet set{k, kept, c};
    for (int layer = 0; layer < 2; ++layer) {
      const bool depthwise = layer == 0;
      const char* tag = depthwise ? "dw" : "pw";
      const float* x = depthwise ? x_d : x_p;
      const float* wt = depthwise ? w_d : w_p;
      const float* d = depthwise ? d_d : d_p;
      float* dwt = depthwise ? dw_d : dw_p;
      float* dx = depthwise ? dx_d : dx_p;
      float* db = depthwise ? db_d : db_p;
      auto run = [&](float* o_dw, float* o_dx, float* o_db, Accumulate mode) {
        if (depthwise) {
          Expect(DepthwiseConv2DBackwardSparse(dshape, dw_window, x, wt, d, set, BiasGrad::kDense, mode, o_dw, o_dx,
                                               o_db),
                 "DepthwiseConv2DBackwardSparse");
        } else {
          Expect(Conv2DBackwardSparse(pshape, pw_window, x, wt, d, set, BiasGrad::kDense, mode, o_dw, o_dx, o_db),
                 "Conv2DBackwardSparse");
        }
      };
      snprintf(name, sizeof name, "%s.%s.k%ld.select", prefix, tag, static_cast<long>(kk));
      Measure(name, [&] {
        float ymax = kYmaxInit;
        Expect(SelectChannels(d, 1, h * wd, c, params, &ymax, k, kept, scratch, c + 1), "SelectChannels");
      });
      if (k[0] != kk) Fail("SelectChannels chose a different k");
      if (!KeptAreTop(scratch, false, kept, kk, c)) Fail("kept channels are not the top-score ones");
      snprintf(name, sizeof name, "%s.%s.k%ld.sparse_dwdx", prefix, tag, static_cast<long>(kk));
      Measure(name, [&] { run(dwt, dx, nullptr, Accumulate::kOverwrite); });
      snprintf(name, sizeof name, "%s.%s.k%ld.clear_add", prefix, tag, static_cast<long>(kk));
      Measure(name, [&] { bench::ClearFloats(dx, hwc); });
      snprintf(name, sizeof name, "%s.%s.k%ld.sparse_dwdx_add", prefix, tag, static_cast<long>(kk));
      Measure(name, [&] { run(dwt, dx, nullptr, Accumulate::kAdd); });
      {
        // Optimizer step over the kept channels (rows = kh * kw * C_in / depthwise taps, cols = output channels).
        const int32_t rows = depthwise ? 9 : c;
        float* w_upd = depthwise ? w_upd_d : w_upd_p;
        snprintf(name, sizeof name, "%s.%s.k%ld.sgd_cols_plain", prefix, tag, static_cast<long>(kk));
        Measure(name, [&] {
          if (!bench::PlainSgdColumns(0.01f, 1, rows, c, k, kept, c, mask_scratch, union_scratch, w_upd, dwt)) {
            Fail("PlainSgdColumns");
          }
        });
        snprintf(name, sizeof name, "%s.%s.k%ld.sgd_cols", prefix, tag, static_cast<long>(kk));
        Measure(name, [&] {
          int32_t count = 0;
          Expect(KeptUnion(set, 1, c, mask_scratch, union_scratch, &count), "KeptUnion");
          Expect(SgdUpdateColumns(0.01f, w_upd, dwt, rows, c, union_scratch, count), "SgdUpdateColumns");
        });
      }
      snprintf(name, sizeof name, "%s.%s.k%ld.bias", prefix, tag, static_cast<long>(kk));
      Measure(name, [&] { run(nullptr, nullptr, db, Accumulate::kOverwrite); });
      snprintf(name, sizeof name, "%s.%s.k%ld.sparse_all", prefix, tag, static_cast<long>(kk));
      Measure(name, [&] { run(dwt, dx, db, Accumulate::kOverwrite); });
      const float* dw_ref = depthwise ? dw_d_ref : dw_p_ref;
      const float* dx_ref = depthwise ? dx_d_ref : dx_p_ref;
      const float* db_ref = depthwise ? db_d_ref : db_p_ref;
      const int32_t wsize = depthwise ? 9 * c : c * c;
      if (!Equal(db, db_ref, c)) Fail("conv dense bias != reference");
      if (kk == c && (!Equal(dwt, dw_ref, wsize) || !Equal(dx, dx_ref, hwc))) {
        Fail("conv sparse backward with every channel kept != reference");
      }
    }
  }
}

// ---- command line -------------------------------------------------------------------------------------------
char g_cmdline[4096];
constexpr int kMaxTokens = 512;
const char* g_tokens[kMaxTokens];
int g_ntokens;

bool IsNumber(const char* s) { return *s >= '0' && *s <= '9'; }

}  // namespace

int main() {
  ticks_init();
  if (mps2_cmdline(g_cmdline, sizeof g_cmdline) != 0) {
    printf("# ERROR: no semihosting command line\n");
    return 2;
  }
  for (char* p = strtok(g_cmdline, " "); p != nullptr && g_ntokens < kMaxTokens; p = strtok(nullptr, " ")) {
    g_tokens[g_ntokens++] = p;
  }
  CalibrateOverhead();
  int jobs = 0;
  for (int i = 1; i < g_ntokens;) {  // token 0 is the program name
    const char* cmd = g_tokens[i++];
    int32_t args[kMaxTokens];
    int32_t n = 0;
    while (i < g_ntokens && IsNumber(g_tokens[i])) args[n++] = static_cast<int32_t>(atol(g_tokens[i++]));
    if (strcmp(cmd, "calib") == 0 && n == 0) {
      JobCalib();
    } else if (strcmp(cmd, "fc") == 0 && n >= 4) {
      JobFc(args[0], args[1], args[2], args[3] != 0, args + 4, n - 4);
    } else if (strcmp(cmd, "conv") == 0 && n >= 3) {
      JobConv(args[0], args[1], args[2], args + 3, n - 3);
    } else {
      printf("# ERROR: bad job '%s' with %ld numbers\n", cmd, static_cast<long>(n));
      return 2;
    }
    ++jobs;
  }
  printf("# done: %d job(s), %d check failure(s)\n", jobs, g_failures);
  return g_failures == 0 && jobs > 0 ? 0 : 1;
}
