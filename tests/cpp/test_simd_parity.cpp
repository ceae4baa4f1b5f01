// Every SIMD level must store exactly the bits the scalar code stores.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "../../cpp/src/amd_zen.hpp"
#include "../../cpp/src/avx2_helpers.hpp"
#include "../../cpp/src/boundary_grid.hpp"
#include "../../cpp/src/broadcast_lookups_avx2.hpp"
#include "../../cpp/src/gather_speed.hpp"
#include "../../cpp/src/kernels.hpp"
#include "test_util.hpp"
#include "turbokv/half.hpp"
#include "turbokv/packing.hpp"

using namespace turbokv;
using turbokv::test_util::EncodedStore;

namespace {

// The product forms of the AVX2 integer kernels (kernels::VnniForm) this CPU runs, logged by name:
// plain, AVX-VNNI where the CPU has it, and its EVEX form on AVX-512 VNNI machines, so that the
// VNNI code AVX-VNNI laptops run is tested there too. A CPU with AVX-512 VNNI must run that form.
std::vector<kernels::VnniForm> runnable_vnni_forms(const char* kernel) {
  std::vector<kernels::VnniForm> out;
  std::string names;
  for (auto [form, name] : {std::pair{kernels::VnniForm::kNone, "plain"}, {kernels::VnniForm::kVex, "AVX-VNNI"},
                            {kernels::VnniForm::kEvex, "AVX-512 VL VNNI (EVEX)"}}) {
    if (!kernels::vnni_form_runs(form)) continue;
    out.push_back(form);
    names += (names.empty() ? "" : ", ") + std::string(name);
  }
  const char* partial = "a test build without the VNNI forms (TURBOKV_VNNI_FORMS=OFF) on a CPU that runs them";
  EXPECT_EQ(kernels::vnni_form_runs(kernels::VnniForm::kVex), kernels::kHasAvxVnni) << partial;
  // The level's pick: AVX-VNNI where the CPU has it, else plain (EVEX only in timing builds).
  EXPECT_EQ(kernels::kAvx2VnniForm, kernels::kHasAvxVnni ? kernels::VnniForm::kVex : kernels::VnniForm::kNone) << partial;
#if TURBOKV_X86
  EXPECT_EQ(kernels::vnni_form_runs(kernels::VnniForm::kEvex),
            kernels::kHasAvx512Vnni && __builtin_cpu_supports("avx512vl")) << partial;
#else
  EXPECT_FALSE(kernels::vnni_form_runs(kernels::VnniForm::kEvex));
#endif
  std::cout << "[ info     ] " << kernel << " tested in their forms: " << names << "\n";
  return out;
}

std::vector<SimdLevel> simd_levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : supported_simd()) {
    if (l != SimdLevel::kScalar) out.push_back(l);
  }
  return out;
}

// Scores (m x n, row stride n) and values (m x d, started from acc0) of kernels that read stored
// vectors, against the products with value(j, i) (stored vector j's coordinate i) summed in double,
// each within 1e-5 of the sum of its terms' magnitudes.
template <typename Value>
void expect_products(const std::vector<float>& q, const std::vector<float>& w,
                     const std::vector<float>& acc0, int m, int64_t n, int d, Value value,
                     const std::vector<float>& scores, const std::vector<float>& acc,
                     const std::string& where) {
  for (int a = 0; a < m; ++a) {
    for (int64_t j = 0; j < n; ++j) {
      double want = 0, scale = 0;
      for (int i = 0; i < d; ++i) {
        const double term = double(q[size_t(a) * d + i]) * value(j, i);
        want += term;
        scale += std::fabs(term);
      }
      ASSERT_NEAR(scores[size_t(a) * n + j], want, 1e-5 * scale) << where << " key " << j;
    }
    for (int i = 0; i < d; ++i) {
      double want = acc0[size_t(a) * d + i], scale = std::fabs(want);
      for (int64_t j = 0; j < n; ++j) {
        const double term = double(w[size_t(a) * n + j]) * value(j, i);
        want += term;
        scale += std::fabs(term);
      }
      ASSERT_NEAR(acc[size_t(a) * d + i], want, 1e-5 * scale) << where << " coordinate " << i;
    }
  }
}

// expect_products for packed codes: value(j, i) = table[idx[j * d + i]].
void expect_table_products(const std::vector<float>& q, const std::vector<float>& w,
                           const std::vector<float>& acc0, const std::vector<uint8_t>& idx,
                           const std::vector<float>& table, int m, int64_t n, int d,
                           const std::vector<float>& scores, const std::vector<float>& acc,
                           const std::string& where) {
  expect_products(q, w, acc0, m, n, d, [&](int64_t j, int i) { return double(table[idx[size_t(j * d + i)]]); },
                  scores, acc, where);
}

}  // namespace

TEST(SimdParity, ThisMachineHasSomethingToCompare) {
  // Informational: on a CPU without AVX2 the parity tests below compare nothing.
  std::cout << "best SIMD level here: " << simd_name(detect_simd()) << "\n";
  SUCCEED();
}

TEST(SimdParity, CodesAndNormsAreBitIdentical) {
  for (SimdLevel level : simd_levels()) {
    for (int d : {8, 16, 32, 64, 80, 96, 112, 128, 160, 192, 256, 1024}) {
      // 300 rows; 42 at d = 1024, where prod mode's d x d sketch per row dominated the test
      // (every row scale below still occurs 6 times).
      const int n = d >= 1024 ? 42 : 300;
      auto x = test_util::gaussian_rows(n, d, uint32_t(d));
      // Put a few coordinates on exact codebook boundaries' neighbourhoods and scale rows widely.
      for (int r = 0; r < n; ++r) {
        const float s = std::pow(10.0f, float(r % 7) - 3.0f);
        for (int i = 0; i < d; ++i) x[size_t(r) * d + i] *= s;
      }
      for (Mode mode : {Mode::kMse, Mode::kProd}) {
        for (int bits = 1; bits <= 8; ++bits) {
          for (bool correction : {false, true}) {
            if (correction && mode == Mode::kProd) continue;
            CodecConfig cfg;
            cfg.head_dim = d;
            cfg.bits = bits;
            cfg.mode = mode;
            cfg.seed = 99;
            cfg.norm_correction = correction;
            Codec scalar(cfg, SimdLevel::kScalar), simd(cfg, level);
            EncodedStore a(scalar, n), b(simd, n);
            scalar.encode(x.data(), n, d, a.out());
            simd.encode(x.data(), n, d, b.out());
            const std::string where = std::string(simd_name(level)) + " d=" + std::to_string(d) +
                                      " bits=" + std::to_string(bits) +
                                      (mode == Mode::kProd ? " prod" : " mse");
            ASSERT_EQ(a.codes, b.codes) << where;
            ASSERT_EQ(a.norms, b.norms) << where;
            ASSERT_EQ(a.qjl, b.qjl) << where;
            ASSERT_EQ(a.residual_norms, b.residual_norms) << where;
            // Decode and scores may round differently (FMA), but only in the last bits.
            std::vector<float> da(size_t(n) * d), db(size_t(n) * d);
            scalar.decode(a.in(), n, da.data());
            simd.decode(b.in(), n, db.data());
            for (size_t i = 0; i < da.size(); ++i) {
              // Row r was scaled by 10^(r % 7 - 3): allow last-bit differences relative to it.
              const float row_scale = std::pow(10.0f, float((i / d) % 7) - 3.0f);
              ASSERT_NEAR(da[i], db[i], 1e-5f * (std::fabs(da[i]) + row_scale)) << where;
            }
            auto q = test_util::gaussian_rows(2, d, 77);
            std::vector<float> sa(2 * n), sb(2 * n);
            scalar.scores(q.data(), 2, d, a.in(), n, sa.data());
            simd.scores(q.data(), 2, d, b.in(), n, sb.data());
            for (int i = 0; i < 2 * n; ++i) {
              const float scale = std::sqrt(float(d)) * std::pow(10.0f, float((i % n) % 7) - 3.0f);
              ASSERT_NEAR(sa[i], sb[i], 2e-5f * scale) << where;
            }
          }
        }
      }
    }
  }
}

// The row encoders (head_dim 64, 128, 256; AVX-512 2, 4 and 8 bits, AVX2 4 and 8) hand rows whose sum
// of squares is too small, too large or not finite back to the stage-by-stage path: codes and
// norms must equal the scalar level's around such rows wherever they fall (first, last, at and
// beside the 64-row block edges, several in a row), on strided rows, and a NaN row must be refused
// under its own index with the rows before it written as the scalar level writes them; the same
// for float16 rows.
TEST(SimdParity, FusedEncodeMatchesTheStagesAroundRowsItHandsBack) {
  bool fused_somewhere = false;
  for (SimdLevel level : simd_levels()) {
    for (int d : {64, 128, 256, 80}) {
      for (int bits : {2, 3, 4, 8}) {
        CodecConfig cfg;
        cfg.head_dim = d;
        cfg.bits = bits;
        cfg.seed = 5;
        const Codec scalar(cfg, SimdLevel::kScalar), simd(cfg, level);
        const bool x86 = level == SimdLevel::kAvx512 || level == SimdLevel::kAvx2;
        const bool expect_fused =
            x86 && (bits == 4 || bits == 8 || (bits == 2 && level == SimdLevel::kAvx512)) && d != 80;
        ASSERT_EQ(simd.encodes_rows_fused(), expect_fused) << simd_name(level) << " d=" << d << " bits=" << bits;
        if (!expect_fused) continue;
        fused_somewhere = true;
        CodecConfig corrected = cfg;
        corrected.norm_correction = true;
        EXPECT_FALSE(Codec(corrected, level).encodes_rows_fused());
        CodecConfig prod = cfg;
        prod.mode = Mode::kProd;
        EXPECT_FALSE(Codec(prod, level).encodes_rows_fused());

        const int n = 200, stride = d + 8;  // strided rows, and more than three 64-row blocks
        auto x = test_util::gaussian_rows(n, stride, uint32_t(d + bits));
        const auto scale_row = [&](int r, float s) {
          for (int i = 0; i < d; ++i) x[size_t(r) * stride + i] *= s;
        };
        for (int r : {0, 1, 63, 64, 65, 127, 128, 130, 199}) scale_row(r, 1e-20f);  // sum of squares underflows
        for (int r : {2, 100, 101, 102}) scale_row(r, 3e19f);                         // sum of squares overflows
        for (int i = 0; i < d; ++i) x[size_t(150) * stride + i] = 0.0f;              // a zero row
        EncodedStore a(scalar, n), b(simd, n);
        scalar.encode(x.data(), n, stride, a.out());
        simd.encode(x.data(), n, stride, b.out());
        const std::string where = std::string(simd_name(level)) + " d=" + std::to_string(d) + " bits=" + std::to_string(bits);
        ASSERT_EQ(a.codes, b.codes) << where;
        ASSERT_EQ(a.norms, b.norms) << where;

        x[size_t(70) * stride + 3] = NAN;
        EncodedStore c(scalar, n), e(simd, n);
        int64_t refused_scalar = -1, refused_simd = -1;
        try {
          scalar.encode(x.data(), n, stride, c.out());
        } catch (const NonFiniteInput& error) {
          refused_scalar = error.row();
        }
        try {
          simd.encode(x.data(), n, stride, e.out());
        } catch (const NonFiniteInput& error) {
          refused_simd = error.row();
        }
        ASSERT_EQ(refused_scalar, 70) << where;
        ASSERT_EQ(refused_simd, 70) << where;
        const size_t before = size_t(70) * scalar.code_bytes();
        ASSERT_TRUE(std::equal(c.codes.begin(), c.codes.begin() + before, e.codes.begin())) << where;
        ASSERT_TRUE(std::equal(c.norms.begin(), c.norms.begin() + 70 * 4, e.norms.begin())) << where;

        // float16 rows go through the same kernel a converted block at a time; zero rows (the
        // only ones float16 can make too small) and an infinite one are handed back.
        const auto g = test_util::gaussian_rows(n, stride, uint32_t(7 * d + bits));
        std::vector<uint16_t> halves(g.size());
        for (size_t i = 0; i < g.size(); ++i) halves[i] = float_to_half(g[i]);
        for (int r : {0, 63, 64, 128, 199}) std::fill_n(halves.begin() + size_t(r) * stride, d, uint16_t{0});
        EncodedStore h_scalar(scalar, n), h_simd(simd, n);
        scalar.encode(halves.data(), n, stride, h_scalar.out());
        simd.encode(halves.data(), n, stride, h_simd.out());
        ASSERT_EQ(h_scalar.codes, h_simd.codes) << where << " float16";
        ASSERT_EQ(h_scalar.norms, h_simd.norms) << where << " float16";
        halves[size_t(90) * stride + 1] = 0x7C00;  // +inf
        try {
          simd.encode(halves.data(), n, stride, h_simd.out());
          FAIL() << where << " float16: an infinite row was encoded";
        } catch (const NonFiniteInput& error) {
          ASSERT_EQ(error.row(), 90) << where;
        }

        // float16 norm storage: the first norm past its range is refused under its own row.
        CodecConfig half_norms = cfg;
        half_norms.norm_dtype = NormDtype::kFloat16;
        const Codec scalar_h(half_norms, SimdLevel::kScalar), simd_h(half_norms, level);
        ASSERT_TRUE(simd_h.encodes_rows_fused()) << where;
        auto big = test_util::gaussian_rows(n, d, uint32_t(11 * d + bits));
        for (int i = 0; i < d; ++i) big[size_t(77) * d + i] *= 1e5f;
        EncodedStore f_scalar(scalar_h, n), f_simd(simd_h, n);
        int64_t refused[2] = {-1, -1};
        const Codec* codecs[2] = {&scalar_h, &simd_h};
        EncodedStore* stores[2] = {&f_scalar, &f_simd};
        for (int c = 0; c < 2; ++c) {
          try {
            codecs[c]->encode(big.data(), n, d, stores[c]->out());
          } catch (const NonFiniteInput& error) {
            refused[c] = error.row();
          }
        }
        ASSERT_EQ(refused[0], 77) << where;
        ASSERT_EQ(refused[1], 77) << where;
        ASSERT_TRUE(std::equal(f_scalar.norms.begin(), f_scalar.norms.begin() + 77 * 2, f_simd.norms.begin())) << where;
      }
    }
  }
  if (simd_supported(SimdLevel::kAvx2)) {
    ASSERT_TRUE(fused_somewhere);
  }
  std::cout << "row encoders tested here: " << (fused_somewhere ? "yes" : "no (no AVX2)") << "\n";
}

// Int8 scores sum integers exactly, so every level must return the scalar level's floats bit for
// bit (mse; prod adds a float32 sketch term), on packed lanes (1/2/4 bits, whole 16-byte halves),
// on 3-bit rows taken apart in registers (AVX2 at head_dim 32, 64, 96, 128, 160, 256, asserted:
// the codec's rows end at their packed bytes, so each row's last group loads from before its
// start) and on unpacked rows (3 bits at other sizes); 5-8-bit keys round to int16 instead
// (int16_top(d), asserted to be the largest magnitude whose d products fit int32).
// Against float32 scores the error is the rounding of query and centroids: bounded here by the
// worst case of those two roundings, computed independently of the kernels.
TEST(SimdParity, Int8ScoresAreBitIdenticalAndWithinTheirRoundingBound) {
  for (SimdLevel level : supported_simd()) {
    // Every SIMD level has its own int8 kernel: this test compares two. AVX-512 hands 1-, 2- and
    // 4-bit keys on packed lanes (and 3-bit ones, with VBMI) to its VNNI kernel where the CPU has
    // VNNI (asserted per shape below), everything else to the AVX2 kernel.
    if (level != SimdLevel::kScalar) {
      ASSERT_NE(kernels::kernel_set(level).dot_packed_int8,
                kernels::kernel_set(SimdLevel::kScalar).dot_packed_int8)
          << simd_name(level);
    }
    if (level == SimdLevel::kAvx512) {
      std::cout << "[ info     ] AVX-512 int8 scores of 1/2/4-bit packed lanes (3 bits with VBMI): "
                << (kernels::kHasAvx512Vnni ? "VNNI kernel" : "AVX2 kernel (no VNNI)") << "\n";
    }
    for (int d : {8, 16, 32, 64, 80, 96, 128, 160, 256}) {
      const int n = 70;
      auto x = test_util::gaussian_rows(n, d, uint32_t(d) + 5);
      for (Mode mode : {Mode::kMse, Mode::kProd}) {
        for (int bits = mode == Mode::kProd ? 2 : 1; bits <= 8; ++bits) {
          CodecConfig cfg;
          cfg.head_dim = d;
          cfg.bits = bits;
          cfg.mode = mode;
          cfg.seed = 7;
          Codec scalar(cfg, SimdLevel::kScalar), simd(cfg, level);
          ASSERT_TRUE(simd.int8_scores_supported());
          const int mse_bits = mode == Mode::kProd ? bits - 1 : bits;
          ASSERT_EQ(simd.scores_use_int16(), mse_bits > 4);
          // Integers of magnitude <= top: int8 up to 4 bits, int16_top(d) (d top^2 < 2^31) above.
          const int top = mse_bits > 4 ? kernels::int16_top(d) : 127;
          if (mse_bits > 4) {
            ASSERT_LT(double(d) * top * top, 2147483648.0);
            ASSERT_GE(double(d) * (top + 1) * (top + 1), 2147483648.0);
          }
          if (level == SimdLevel::kAvx512 && mse_bits > 4) {
            EXPECT_EQ(kernels::int16_planes_fit(d), kernels::kHasAvx512Vbmi && kernels::kHasAvx512Vnni && d % 64 == 0);
          }
          if (level == SimdLevel::kAvx2 && mse_bits > 4) {  // 5-6 bits (7-8 where gathers are slow): the shuffle route
            const std::vector<float>& centroids = lloyd_max_codebook(mse_bits).centroids;
            std::vector<int16_t> c16(centroids.size());
            kernels::quantize_int16(centroids.data(), int(c16.size()), top, c16.data());
            std::vector<int32_t> table(256, 0);
            std::copy(c16.begin(), c16.end(), table.begin());
            EXPECT_TRUE(kernels::int16_shuffle_fits(table.data(), mse_bits));
#if TURBOKV_X86
            const bool gathers_slow = kernels::kGathersAreSlow;
#else
            const bool gathers_slow = false;  // (no AVX2 level off x86)
#endif
            for (int m = 1; m <= 9; ++m) {  // 8-bit keys: by shuffles except at 2 and 3 queries
              EXPECT_EQ(kernels::int16_avx2_lookup(mse_bits, m) == kernels::Int16Lookup::kShuffle,
                        mse_bits <= 6 || (mse_bits == 7 && gathers_slow) || (gathers_slow && m != 2 && m != 3));
            }
          }
          if (bits == 3) {
            EXPECT_EQ(kernels::int8_three_bit_in_registers(int64_t(simd.code_bytes()), d), d % 32 == 0) << d;
          }
          if (mode == Mode::kMse && bits <= 4) {  // the VNNI route's shapes: whole indices per byte, 16-byte rows;
                                     // 3 bits with VBMI at head_dim a multiple of 32
            const bool packed_lanes = bits != 3 && d * bits % 128 == 0;
            const bool three = bits == 3 && kernels::kHasAvx512Vbmi && d % 32 == 0;
            EXPECT_EQ(kernels::int8_vnni_fit(bits, int64_t(simd.code_bytes()), d),
                      kernels::kHasAvx512Vnni && (packed_lanes || three)) << d << " " << bits;
          }
          EncodedStore enc(scalar, n);
          scalar.encode(x.data(), n, d, enc.out());
          const std::string where = std::string(simd_name(level)) + " d=" + std::to_string(d) +
                                    " bits=" + std::to_string(bits) +
                                    (mode == Mode::kProd ? " prod" : " mse");
          for (int m : {1, 2, 3, 4, 5, 6, 9}) {
            auto q = test_util::gaussian_rows(m, d, uint32_t(m * 31 + d));
            std::vector<float> exact(size_t(m) * n), a(size_t(m) * n), b(size_t(m) * n);
            scalar.scores(q.data(), m, d, enc.in(), n, exact.data());
            scalar.scores(q.data(), m, d, enc.in(), n, a.data(), ScorePrecision::kInt8);
            simd.scores(q.data(), m, d, enc.in(), n, b.data(), ScorePrecision::kInt8);
            if (mode == Mode::kMse) {
              ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << where << " m=" << m;
            } else {  // the float32 sketch term (sign_dot) may round differently per level
              for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 2e-5f * std::sqrt(float(d)) * 4) << where;
            }
            // Worst case per unit key: |q_rot|_1 * step_c / 2 + |c|_1 * step_q / 2 + d step_q step_c / 4
            // with q_rot = R q / sqrt(d) (|q_rot|_2 = |q|_2 / sqrt(d)), |c_i| <= c_max, steps = max / top.
            const auto& c = scalar.codebook().centroids;
            float c_max = 0.0f;
            for (float v : c) c_max = std::max(c_max, std::fabs(v));
            bool differs = false;
            for (int r = 0; r < m; ++r) {
              double q_norm = 0.0;
              for (int i = 0; i < d; ++i) q_norm += double(q[size_t(r) * d + i]) * q[size_t(r) * d + i];
              q_norm = std::sqrt(q_norm / d);             // |q_rot|_2
              const double q_max = q_norm;                 // |q_rot|_inf <= |q_rot|_2
              const double step_q = q_max / top, step_c = c_max / top;
              const double per_unit = std::sqrt(double(d)) * q_norm * step_c / 2 +
                                      d * c_max * step_q / 2 + d * step_q * step_c / 4;
              for (int j = 0; j < n; ++j) {
                double x_norm = 0.0;
                for (int i = 0; i < d; ++i) x_norm += double(x[size_t(j) * d + i]) * x[size_t(j) * d + i];
                // Keys are stored as norm * unit codes; prod adds a float32 sketch term (same in both).
                const double bound = per_unit * std::sqrt(x_norm) * std::sqrt(double(d)) * 1.01 + 1e-5;
                const double err = std::fabs(double(a[size_t(r) * n + j]) - exact[size_t(r) * n + j]);
                ASSERT_LE(err, bound) << where << " m=" << m << " row " << r << " key " << j;
                differs |= a[size_t(r) * n + j] != exact[size_t(r) * n + j];
              }
            }
            EXPECT_TRUE(differs) << where << ": int8 scores equal float32 ones everywhere (path not taken?)";
          }
        }
      }
    }
  }
}

// The AVX2 int16 kernel's variants (with and without AVX-VNNI, by gathers, scalar loads or
// vpshufb; the level runs one of them) return the scalar kernel's floats, at head_dims with a
// scalar tail or a last block of 16, for 1-7 and 9 queries (tiles of 1, 3 or 4; stored rows of
// 4 + 1-3 and 4 + 4 + 1; on the shuffle route at head_dims of whole 16s keys two at a time,
// score_key_pair_int16 and score_two_keys_int16 for 4, the 37th alone), on
// antisymmetric tables (the shuffle route's) and others (where it gathers); so does the AVX-512
// byte-plane kernel where it runs (VBMI and VNNI, head_dim a multiple of 64).
TEST(SimdParity, Int16ScoreKernelVariantsMatchTheScalarKernel) {
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2";
  const auto scalar = kernels::kernel_set(SimdLevel::kScalar).dot_packed_int16;
  const std::vector<kernels::VnniForm> forms = runnable_vnni_forms("AVX2 int16 scores");
  std::mt19937 gen(11);
  for (int bits : {5, 6, 7, 8}) {
   for (bool antisymmetric : {false, true}) {
    for (int d : {8, 16, 24, 48, 64, 80, 128, 136, 192}) {
     for (int m : {1, 2, 3, 4, 5, 6, 7, 9}) {
      const int top = kernels::int16_top(d), n = 37;
      const int64_t code_bytes = (int64_t(d) * bits + 7) / 8;
      std::vector<uint8_t> codes(size_t(n * code_bytes));
      for (auto& c : codes) c = uint8_t(gen());
      std::vector<int32_t> table(256, 0);
      std::vector<int16_t> q(size_t(m) * d);
      std::uniform_int_distribution<int> value(-top, top);
      for (int e = 0; e < (1 << bits); ++e) table[size_t(e)] = value(gen);
      for (auto& v : q) v = int16_t(value(gen));
      q[0] = int16_t(top);  // the extremes: d top^2 stays below 2^31
      table[0] = -top;
      // The shuffle route reads antisymmetric tables (every codebook's) and gathers from others.
      const int half = 1 << (bits - 1);
      if (antisymmetric) {
        for (int k = 0; k < half; ++k) table[size_t(half - 1 - k)] = -(table[size_t(half + k)] = std::abs(table[size_t(half + k)]));
        table[size_t(2 * half - 1)] = top;
        table[0] = -top;
      }
      ASSERT_EQ(kernels::int16_shuffle_fits(table.data(), bits), antisymmetric);
      // 5-7 bits at head_dims of whole 16s are read from their packed bytes (no slack after the
      // last row here, so ASan sees any overread), other shapes from unpacked index bytes.
#if TURBOKV_X86
      EXPECT_EQ(kernels::spread_fits(bits, d), bits < 8 && d % 16 == 0 && !kernels::kPdepIsSlow);
#endif
      const std::vector<float> scales = {0.5f, 1e-3f, 2.0f, 3.0f, 0.25f, 7.0f, 0.125f, 5.0f, 0.75f};
      std::vector<float> expect(size_t(m) * n), got(size_t(m) * n);
      scalar(q.data(), scales.data(), m, codes.data(), code_bytes, n, table.data(), 1e-4f, bits, d,
             expect.data(), n, {});
      // AVX-512 with VBMI and VNNI: the byte-plane kernel, on the same tables and query tiles.
#if TURBOKV_X86
      if (kernels::int16_planes_fit(d)) {
        kernels::dot_planes_int16_vbmi(q.data(), scales.data(), m, codes.data(), code_bytes, n, table.data(), 1e-4f,
                                       bits, d, got.data(), n, {});
        ASSERT_EQ(0, std::memcmp(expect.data(), got.data(), got.size() * sizeof(float)))
            << "planes bits=" << bits << " d=" << d << " m=" << m;
      }
#endif
      for (kernels::VnniForm vnni : forms) {
        for (auto lookup : {kernels::Int16Lookup::kGather, kernels::Int16Lookup::kLoads, kernels::Int16Lookup::kShuffle}) {
          std::fill(got.begin(), got.end(), std::numeric_limits<float>::quiet_NaN());  // a row left unwritten shows
          kernels::dot_packed_int16_avx2_variant(vnni, lookup)(q.data(), scales.data(), m, codes.data(),
                                                              code_bytes, n, table.data(), 1e-4f, bits, d,
                                                              got.data(), n, {});
          ASSERT_EQ(0, std::memcmp(expect.data(), got.data(), got.size() * sizeof(float)))
              << "bits=" << bits << " d=" << d << " m=" << m << " antisymmetric=" << antisymmetric
              << " vnni=" << int(vnni) << " lookup=" << int(lookup);
        }
      }
     }
    }
   }
  }
}

// Queries and centroids are rounded to int8 by one function for every level (quantize_int8): to
// the nearest integer, ties to even, as lrint in the default rounding mode, at the ties and one
// ulp either side of them, and on rows of any scale.
TEST(SimdParity, QuantizeInt8RoundsAsLrint) {
  std::vector<float> x = {127.0f};  // the largest magnitude: the scale is exactly 1
  for (int k = -127; k < 127; ++k) {
    const float tie = float(k) + 0.5f;
    for (float v : {float(k), tie, std::nextafter(tie, -1000.0f), std::nextafter(tie, 1000.0f)}) x.push_back(v);
  }
  std::vector<int8_t> out(x.size());
  EXPECT_EQ(kernels::quantize_int8(x.data(), int(x.size()), out.data()), 1.0f);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(long(out[i]), std::lrint(x[i])) << x[i];
  // A subnormal largest magnitude (127 / top would overflow): the same integers as any scale.
  const float tiny = std::ldexp(1.0f, -130);
  const std::vector<float> sub = {tiny, tiny / 2, -tiny, 0.0f, 3 * tiny / 4, -tiny / 128};
  std::vector<int8_t> sub8(sub.size());
  EXPECT_EQ(kernels::quantize_int8(sub.data(), int(sub.size()), sub8.data()), tiny / 127.0f);
  EXPECT_EQ(sub8, (std::vector<int8_t>{127, 64, -127, 0, 95, -1}));  // 63.5 and -0.99 round to 64, -1
  // Non-finite coordinates (C++ callers only: Python refuses them) round to 0, without undefined
  // behaviour (UBSan in scripts/sanitize.sh): NaN anywhere, or an infinity (inv becomes 0).
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<int8_t> bad8(3);
  EXPECT_EQ(kernels::quantize_int8(std::vector<float>{nan, 1.0f, -2.0f}.data(), 3, bad8.data()), 2.0f / 127.0f);
  EXPECT_EQ(bad8, (std::vector<int8_t>{0, 64, -127}));  // 63.5 rounds to 64
  std::vector<int16_t> bad16(3);
  EXPECT_EQ(kernels::quantize_int16(std::vector<float>{inf, 1.0f, -inf}.data(), 3, 4095, bad16.data()), inf);
  EXPECT_EQ(bad16, (std::vector<int16_t>{0, 0, 0}));
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  for (float scale : {1e-30f, 3e-3f, 1.0f, 7.7e4f, 1e30f}) {
    std::vector<float> row(333);
    for (auto& v : row) v = normal(gen) * scale;
    float top = 0.0f;
    for (float v : row) top = std::max(top, std::fabs(v));
    std::vector<int8_t> q(row.size());
    EXPECT_EQ(kernels::quantize_int8(row.data(), int(row.size()), q.data()), top / 127.0f);
    // Rows of a normal largest magnitude: exactly lrint(x * (127 / top)), as before.
    if (top < 1e-30f) continue;
    const float inv = 127.0f / top;
    for (size_t i = 0; i < row.size(); ++i) ASSERT_EQ(long(q[i]), std::lrint(row[i] * inv)) << scale << " " << i;
    // The int8 scores' centroid table: the same rounding to +-kInt8CentroidTop.
    const int top8 = kernels::kInt8CentroidTop;
    EXPECT_EQ(kernels::quantize_int8(row.data(), int(row.size()), q.data(), top8), top / float(top8));
    const float inv63 = float(top8) / top;
    for (size_t i = 0; i < row.size(); ++i) ASSERT_EQ(long(q[i]), std::lrint(row[i] * inv63)) << scale << " " << i;
  }
  std::vector<int8_t> one(1);
  EXPECT_THROW(kernels::quantize_int8(x.data(), 1, one.data(), 0), std::invalid_argument);
  EXPECT_THROW(kernels::quantize_int8(x.data(), 1, one.data(), 128), std::invalid_argument);
}

// The rotated queries of int8 and int16 scores are rounded by the level's row kernel: every level
// must give quantize_int8's / quantize_int16's integers and scales exactly, at head_dims that
// leave every tail length, on rows of every scale, ties, zeros, subnormal rows and (C++ callers
// only) NaN and infinities. The x86 levels run their own kernels (asserted); NEON the scalar one.
TEST(SimdParity, QuantizeRowsGiveQuantizeInt8AndInt16Integers) {
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::mt19937 gen(11);
  std::normal_distribution<float> normal;
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    if (level != SimdLevel::kNeon) {
      ASSERT_NE(k.quantize_rows_int8, scalar.quantize_rows_int8) << simd_name(level);
      ASSERT_NE(k.quantize_rows_int16, scalar.quantize_rows_int16) << simd_name(level);
    }
    for (int d : {1, 7, 8, 9, 15, 16, 17, 31, 64, 100, 128, 333}) {
      std::vector<std::vector<float>> rows;
      for (float scale : {1e-38f, 1e-30f, 3e-3f, 1.0f, 7.7e4f, 1e30f}) {
        std::vector<float> row(static_cast<size_t>(d));
        for (auto& v : row) v = normal(gen) * scale;
        rows.push_back(row);
      }
      std::vector<float> ties(static_cast<size_t>(d));  // top 127: the scale is 1 and x.5 must round to even
      for (int i = 0; i < d; ++i) ties[size_t(i)] = i == 0 ? 127.0f : float(int(gen() % 253) - 126) + 0.5f;
      rows.push_back(ties);
      rows.push_back(std::vector<float>(size_t(d), 0.0f));
      rows.push_back(std::vector<float>(size_t(d), nan));
      for (float bad : {nan, inf, -inf}) {
        std::vector<float> row(static_cast<size_t>(d));
        for (auto& v : row) v = normal(gen);
        row[size_t(d / 2)] = bad;
        rows.push_back(row);
      }
      const int64_t count = int64_t(rows.size());
      std::vector<float> x;
      for (const auto& row : rows) x.insert(x.end(), row.begin(), row.end());
      std::vector<int8_t> q8(x.size()), want8(x.size());
      std::vector<float> scales(static_cast<size_t>(count)), want(static_cast<size_t>(count));
      k.quantize_rows_int8(x.data(), count, d, q8.data(), scales.data());
      for (int64_t r = 0; r < count; ++r) want[size_t(r)] = kernels::quantize_int8(x.data() + r * d, d, want8.data() + r * d);
      ASSERT_EQ(q8, want8) << simd_name(level) << " d=" << d;
      ASSERT_EQ(std::memcmp(scales.data(), want.data(), scales.size() * sizeof(float)), 0) << simd_name(level) << " d=" << d;
      for (int top : {1, 4095, kernels::int16_top(d), 32767}) {
        std::vector<int16_t> q16(x.size()), want16(x.size());
        k.quantize_rows_int16(x.data(), count, d, top, q16.data(), scales.data());
        for (int64_t r = 0; r < count; ++r) {
          want[size_t(r)] = kernels::quantize_int16(x.data() + r * d, d, top, want16.data() + r * d);
        }
        ASSERT_EQ(q16, want16) << simd_name(level) << " d=" << d << " top=" << top;
        ASSERT_EQ(std::memcmp(scales.data(), want.data(), scales.size() * sizeof(float)), 0)
            << simd_name(level) << " d=" << d << " top=" << top;
      }
      std::vector<int16_t> one(static_cast<size_t>(d));
      EXPECT_THROW(k.quantize_rows_int16(x.data(), 1, d, 0, one.data(), scales.data()), std::invalid_argument);
      EXPECT_THROW(k.quantize_rows_int16(x.data(), 1, d, 32768, one.data(), scales.data()), std::invalid_argument);
    }
  }
  for (SimdLevel level : supported_simd()) {  // refused with no rows as well, at every level
    std::vector<float> none(1);
    EXPECT_THROW(kernels::kernel_set(level).quantize_rows_int16(none.data(), 0, 8, 0, nullptr, none.data()),
                 std::invalid_argument) << simd_name(level);
  }
}

// Int8 values sum integers exactly and take the same float steps at every level, so every level
// must return the scalar reference's floats bit for bit: weights with zeros, a heavy token, an
// all-zero group and a partial last group, 1-9 queries, every width of at most 4 bits. The path is
// asserted per shape: AVX-512 with VNNI and VBMI runs its vpdpbusd kernel on packed lanes and on
// 3-bit codes rewritten as 4-bit rows (head_dim a multiple of 32).
TEST(SimdParity, Int8ValuesAreBitIdenticalToScalar) {
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  std::mt19937 gen(5);
  std::vector<int8_t> table8(16);
  for (auto& t : table8) t = int8_t(int(gen() % 127) - kernels::kInt8CentroidTop);
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    if (level == SimdLevel::kAvx512) {
      std::cout << "[ info     ] AVX-512 int8 values: "
                << (kernels::kHasAvx512Vnni && kernels::kHasAvx512Vbmi ? "vpdpbusd kernel on packed lanes"
                                                                       : "scalar reference (no VNNI + VBMI)")
                << "\n";
    }
    for (int bits = 1; bits <= 4; ++bits) {
      for (int d : {32, 64, 80, 96, 128, 256}) {
        const int64_t code_bytes = (int64_t(d) * bits + 7) / 8;
        const bool packed_lanes = bits != 3 && d * bits % 128 == 0;
        const bool three = bits == 3 && d % 32 == 0;  // as 4-bit rows (ThreeBitNibbles)
        EXPECT_EQ(kernels::int8_values_vnni_fit(bits, code_bytes, d),
                  kernels::kHasAvx512Vnni && kernels::kHasAvx512Vbmi && (packed_lanes || three)) << bits << " " << d;
        // Both routes of that kernel run here: 4-bit rows transposed in registers (an odd count of
        // 16-byte chunks at d = 32 and 96, even ones above), the others through memory.
        EXPECT_EQ(kernels::int8_values_vnni_in_registers(bits, code_bytes, d),
                  kernels::kHasAvx512Vnni && kernels::kHasAvx512Vbmi && packed_lanes && bits == 4) << bits << " " << d;
        for (int64_t n : {1, 5, 16, 37, 300, 777}) {  // 777: whole batches of 16 groups and a rest
          std::vector<uint8_t> codes(size_t(code_bytes * n));
          for (auto& c : codes) c = uint8_t(gen());
          for (int m : {1, 2, 3, 4, 5, 9}) {
            std::vector<float> w(size_t(m) * n);
            std::uniform_real_distribution<float> unit(0.0f, 1.0f);
            for (auto& v : w) v = unit(gen) < 0.1f ? 0.0f : unit(gen) * 1e-3f;
            w[0] = 0.9f;  // a heavy token in the first group
            constexpr int64_t G = kernels::kInt8ValueGroup;  // groups 1, 2 and 3 of a call:
            if (n >= 2 * G) std::fill(w.begin() + G, w.begin() + 2 * G, 0.0f);  // all zeros
            if (n >= 3 * G) std::fill(w.begin() + 2 * G, w.begin() + 3 * G, 1e-40f);  // denormal: counts as zero
            if (n >= 4 * G) w[3 * G + 2] = 1e-36f;  // just above kSmallestGroupMax, with denormal neighbours
            if (n >= 4 * G) w[3 * G + 3] = 1e-40f;
            std::vector<float> init(size_t(m) * d);
            for (auto& v : init) v = unit(gen) - 0.5f;
            std::vector<float> a = init, b = init;
            scalar.axpy_packed_int8(w.data(), n, m, codes.data(), code_bytes, n, table8.data(), 0.02f, bits, d, a.data());
            k.axpy_packed_int8(w.data(), n, m, codes.data(), code_bytes, n, table8.data(), 0.02f, bits, d, b.data());
            ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
                << simd_name(level) << " bits=" << bits << " d=" << d << " n=" << n << " m=" << m;
            ASSERT_NE(a, init) << "nothing added";
          }
        }
      }
    }
  }
}

// Against float32 values the error of int8 values is the rounding of the weights (at most 1/254
// of their group's largest each) and of the centroids (c_max / 254): bounded here per coordinate
// from the weights and the codebook alone, independently of the kernels.
TEST(SimdParity, Int8ValuesStayWithinTheirRoundingBound) {
  for (SimdLevel level : supported_simd()) {
    for (int bits = 1; bits <= 4; ++bits) {
      for (int d : {64, 128}) {
        CodecConfig cfg;
        cfg.head_dim = d;
        cfg.bits = bits;
        cfg.seed = 3;
        Codec codec(cfg, level);
        ASSERT_TRUE(codec.int8_values_supported());
        // Fast: AVX-VNNI at both x86 levels; the AVX-512 VNNI kernel where the shape fits; plain
        // AVX2 where the rows fill whole 16-byte chunks (all but 1 bit at d = 64 here); 3 bits
        // where the rows become 4-bit rows in registers (head_dim a multiple of 32, as both are
        // here; head_dim 40 in test_int8_values.py); never scalar or NEON.
        const bool x86 = level == SimdLevel::kAvx2 || level == SimdLevel::kAvx512;
        const bool vnni_kernel =
            level == SimdLevel::kAvx512 && kernels::int8_values_vnni_fit(bits, int64_t(codec.code_bytes()), d);
        const bool plain_avx2 = level == SimdLevel::kAvx2 && !(bits == 1 && d == 64);
        // ... except 3 bits at the AVX2 level where its float32 values go by vpermps.
        const bool float_permutes = level == SimdLevel::kAvx2 && bits == 3 && kernels::lookups_by_permutes(bits, d);
        EXPECT_EQ(codec.int8_values_fast(), !float_permutes && (vnni_kernel || plain_avx2 || (x86 && kernels::kHasAvxVnni)))
            << simd_name(level) << " bits=" << bits << " d=" << d;
        const int n = 300, m = 4;
        auto x = test_util::gaussian_rows(n, d, uint32_t(d + bits));
        EncodedStore enc(codec, n);
        codec.encode(x.data(), n, d, enc.out());
        std::mt19937 gen(uint32_t(bits * 7 + d));
        std::uniform_real_distribution<float> logit(-6.0f, 0.0f);
        std::vector<float> w(size_t(m) * n);
        for (auto& v : w) v = std::exp(logit(gen));
        for (int a = 0; a < m; ++a) w[size_t(a) * n + 3 * a] = 50.0f;  // a sink per query
        std::vector<float> exact(size_t(m) * d, 0.0f), int8(size_t(m) * d, 0.0f), sketch(size_t(m) * d, 0.0f);
        std::vector<float> scratch(size_t(m + 1) * n);
        codec.accumulate(w.data(), n, m, enc.in(), n, exact.data(), sketch.data(), scratch.data());
        codec.accumulate(w.data(), n, m, enc.in(), n, int8.data(), sketch.data(), scratch.data(),
                         ValuePrecision::kInt8);
        const auto& c = codec.codebook().centroids;
        float c_max = 0.0f;
        for (float v : c) c_max = std::max(c_max, std::fabs(v));
        bool differs = false;
        for (int a = 0; a < m; ++a) {
          // Weights as accumulate scales them (norm / sqrt(d)); per group the rounding bound.
          double bound = 0.0;
          for (int j0 = 0; j0 < n; j0 += kernels::kInt8ValueGroup) {
            double top = 0.0, sum = 0.0;
            const int count = std::min(kernels::kInt8ValueGroup, n - j0);
            for (int j = j0; j < j0 + count; ++j) {
              double norm = 0.0;
              for (int i = 0; i < d; ++i) norm += double(x[size_t(j) * d + i]) * x[size_t(j) * d + i];
              const double wj = w[size_t(a) * n + j] * std::sqrt(norm) / std::sqrt(double(d));
              top = std::max(top, wj);
              sum += wj;
            }
            bound += count * top / 254.0 * c_max + (sum + count * top / 254.0) * c_max / 254.0;
          }
          for (int i = 0; i < d; ++i) {
            const double err = std::fabs(double(int8[size_t(a) * d + i]) - exact[size_t(a) * d + i]);
            ASSERT_LE(err, bound * 1.001 + 1e-6) << simd_name(level) << " bits=" << bits << " d=" << d;
            differs |= int8[size_t(a) * d + i] != exact[size_t(a) * d + i];
          }
        }
        EXPECT_TRUE(differs) << "int8 values equal float32 ones everywhere (path not taken?)";
        // Negative, NaN and infinite weights cannot be rounded on their group's largest: refused
        // before anything is added (in a late group, to see that; and in the first 8 whole groups,
        // which the AVX2 level rounds together).
        const std::vector<float> before = int8;
        for (float bad : {-1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
          for (int at : {n - 2, 20}) {
            std::vector<float> w_bad = w;
            w_bad[size_t(3) * n + size_t(at)] = bad;
            EXPECT_THROW(codec.accumulate(w_bad.data(), n, m, enc.in(), n, int8.data(), sketch.data(),
                                          scratch.data(), ValuePrecision::kInt8),
                         std::invalid_argument) << bad << " at " << at;
            EXPECT_EQ(int8, before) << "something was added before the refusal";
          }
        }
      }
    }
  }
  CodecConfig wide;
  wide.bits = 5;
  Codec five(wide);
  EXPECT_FALSE(five.int8_values_supported());
  std::vector<float> w(4, 1.0f), acc(128), sketch(128), scratch(8);
  EncodedStore enc(five, 4);
  std::vector<float> x(4 * 128, 1.0f);
  five.encode(x.data(), 4, 128, enc.out());
  EXPECT_THROW(five.accumulate(w.data(), 4, 1, enc.in(), 4, acc.data(), sketch.data(), scratch.data(),
                               ValuePrecision::kInt8),
               std::invalid_argument);
}

// The AVX2 level's int8 value kernel uses AVX-VNNI where the CPU has it, and pdep for 3-bit rows
// where it is fast: every variant must return the scalar reference's floats, on every width of at
// most 4 bits and shapes whose rows end mid-chunk (d 48, 80, 112, 3 bits), with a heavy token and 1-7
// queries (tiles of 4 and one of 2 or 3).
TEST(SimdParity, BothAvx2Int8ValueVariantsEqualScalar) {
#if TURBOKV_X86
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const std::vector<kernels::VnniForm> forms = runnable_vnni_forms("AVX2 int8 values");
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  std::mt19937 gen(17);
  std::vector<int8_t> table8(16);
  for (auto& t : table8) t = int8_t(int(gen() % 127) - kernels::kInt8CentroidTop);
  table8[0] = -kernels::kInt8CentroidTop;  // both bounds (plain AVX2 sums two steps in int16)
  table8[15] = kernels::kInt8CentroidTop;
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int variant = 0; variant < 2 * int(forms.size()); ++variant) {
    const kernels::VnniForm vnni = forms[size_t(variant / 2)];
    const bool pdep = variant & 1;
    const kernels::AxpyPackedInt8Fn kernel = kernels::axpy_packed_int8_avx2_variant(vnni, pdep);
    ASSERT_NE(kernel, nullptr);
    for (int bits = 1; bits <= 4; ++bits) {
      // 3 bits: multiples of 32 take the rows apart in registers (pdep or SIMD), 48, 80 and 112
      // too by pdep (a half last chunk; SIMD: unpacked); 40 unpacks them to whole 16-byte chunks.
      for (int d : {32, 40, 48, 64, 80, 96, 112, 128, 256}) {
        const int64_t code_bytes = (int64_t(d) * bits + 7) / 8;
        for (int64_t n : {3, 37, 300}) {
          std::vector<uint8_t> codes(size_t(code_bytes * n));
          for (auto& c : codes) c = uint8_t(gen());
          for (int m : {1, 2, 3, 4, 6, 7}) {
            std::vector<float> w(size_t(m) * n);
            for (auto& v : w) v = unit(gen) * 1e-2f;
            w[1] = 5.0f;
            std::vector<float> a(size_t(m) * d), b;
            for (auto& v : a) v = unit(gen) - 0.5f;
            b = a;
            scalar.axpy_packed_int8(w.data(), n, m, codes.data(), code_bytes, n, table8.data(), 0.03f, bits, d, a.data());
            kernel(w.data(), n, m, codes.data(), code_bytes, n, table8.data(), 0.03f, bits, d, b.data());
            ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
                << "vnni=" << int(vnni) << " pdep=" << pdep << " bits=" << bits << " d=" << d << " n=" << n << " m=" << m;
          }
          // The largest int16 sums: every weight byte 127 (equal weights) on indices all 0 (-63)
          // or all ones (the 4-bit table's +63): 2 * 2 * 127 * 63 per lane before widening.
          for (uint8_t fill : {uint8_t{0x00}, uint8_t{0xFF}}) {
            const std::vector<uint8_t> same(codes.size(), fill);
            const std::vector<float> w(size_t(3) * n, 0.25f);
            std::vector<float> a(size_t(3) * d, 0.0f), b = a;
            scalar.axpy_packed_int8(w.data(), n, 3, same.data(), code_bytes, n, table8.data(), 1.0f, bits, d, a.data());
            kernel(w.data(), n, 3, same.data(), code_bytes, n, table8.data(), 1.0f, bits, d, b.data());
            ASSERT_EQ(a, b) << "extreme sums, vnni=" << int(vnni) << " bits=" << bits << " d=" << d << " n=" << n;
            if (fill == 0) {  // every weight 0.25 times -63, n times
              ASSERT_NEAR(a[0], -0.25 * kernels::kInt8CentroidTop * n, 1e-5 * n) << bits << " " << d << " " << n;
            }
          }
        }
      }
    }
  }
#else
  EXPECT_EQ(kernels::axpy_packed_int8_avx2_variant(kernels::VnniForm::kVex, true), nullptr);
#endif
}

// The AVX2 level's float32 kernels take 3-bit rows (head_dim a multiple of 32, or 16 more: the last
// 16 by the 16-wide planes) apart by pdep where it is fast and by SIMD shuffles on Zen 1 and 2
// (the route this CPU does not take is run here only): both routes give the same lane values, so
// the same floats bit for bit, and those match the table's products; rows that end at their packed
// bytes (the last group's 8-byte load must not pass them: no slack after the last row, ASan) and
// padded ones.
TEST(SimdParity, BothAvx2ThreeBitPlaneRoutesAgree) {
#if TURBOKV_X86
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::cout << "[ info     ] AVX2 float32 3-bit rows here by " << (kernels::kPdepIsSlow ? "SIMD (pdep is slow)" : "pdep") << "\n";
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  std::mt19937 gen(23);
  std::normal_distribution<float> normal;
  std::vector<float> table(16, 0.0f);
  for (int e = 0; e < 8; ++e) table[size_t(e)] = std::ldexp(float(e) - 3.5f, e % 3 - 4);
  for (int d : {32, 48, 64, 80, 96, 112, 128, 256}) {
    for (int pad : {0, 5}) {
      const int64_t code_bytes = int64_t(packed_bytes(3, size_t(d))) + pad, n = 29;
      std::vector<uint8_t> idx(size_t(n) * d), codes(size_t(n * code_bytes), 0x5A);
      for (auto& v : idx) v = uint8_t(gen() % 8);
      for (int64_t j = 0; j < n; ++j) scalar.pack(idx.data() + j * d, d, 3, codes.data() + j * code_bytes);
      for (int m : {1, 2, 3, 4, 5, 8}) {
        std::vector<float> q(size_t(m) * d), w(size_t(m) * n), acc0(size_t(m) * d);
        for (auto& x : q) x = normal(gen);
        for (auto& x : w) x = normal(gen);
        for (auto& x : acc0) x = normal(gen);
        std::vector<std::vector<float>> scores, accs;
        for (bool pdep : {false, true}) {
          std::vector<float> out(size_t(m) * n), acc = acc0;
          kernels::dot_three_bit_planes32_variant(pdep)(q.data(), m, codes.data(), code_bytes, n, table.data(), 3, d,
                                                        out.data(), n, {});
          kernels::axpy_three_bit_planes32_variant(pdep)(w.data(), n, m, codes.data(), code_bytes, n, table.data(), 3,
                                                         d, acc.data());
          scores.push_back(out);
          accs.push_back(acc);
        }
        const std::string where = "d " + std::to_string(d) + " pad " + std::to_string(pad) + " m " + std::to_string(m);
        ASSERT_EQ(scores[0], scores[1]) << where;
        ASSERT_EQ(accs[0], accs[1]) << where;
        expect_table_products(q, w, acc0, idx, table, m, n, d, scores[1], accs[1], where);
      }
    }
  }
  EXPECT_THROW(kernels::dot_three_bit_planes32_variant(true)(nullptr, 1, nullptr, 12, 0, table.data(), 4, 32, nullptr, 0, {}),
               std::invalid_argument);
  EXPECT_THROW(kernels::axpy_three_bit_planes32_variant(false)(nullptr, 0, 1, nullptr, 15, 0, table.data(), 3, 40, nullptr),
               std::invalid_argument);
#else
  EXPECT_EQ(kernels::dot_three_bit_planes32_variant(true), nullptr);
#endif
}

// The AVX2 level's float32 kernels look 2- and 3-bit keys and values up by vpermps on the packed
// rows, except on Zen 1 (slow lane swaps), which keeps the byte planes: both routes run here
// whatever the CPU (the one it does not take only here), at every width 1-4 (1 and 4 bits take the
// planes either way), head_dims 16-256 (rows of whole 4-byte groups or not: a 3-bit row of 48
// codes ends inside one; the last group of 8 codes loads the 4 bytes that end with it, no slack
// after the last row, ASan), padded rows and 1-8 queries. Scores match the table's products;
// values match them and agree bit for bit across the routes (each coordinate sums the tokens in
// order by one FMA either way).
TEST(SimdParity, BothAvx2LaneRoutesMatchTheTable) {
#if TURBOKV_X86
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  std::cout << "[ info     ] AVX2 float32 2-3-bit lookups here by "
            << (kernels::kLaneSwapIsSlow ? "byte planes (lane swaps are slow)" : "vpermps") << "\n";
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  std::mt19937 gen(29);
  std::normal_distribution<float> normal;
  for (int bits = 1; bits <= 4; ++bits) {
    std::vector<float> table(16, 0.0f);
    for (int e = 0; e < (1 << bits); ++e) table[size_t(e)] = std::ldexp(float(e) - 7.5f, e % 3 - 4);
    for (int d : {16, 32, 48, 64, 80, 96, 112, 128, 256}) {
      for (int pad : {0, 3}) {
        const int64_t code_bytes = int64_t(packed_bytes(bits, size_t(d))) + pad, n = 31;
        std::vector<uint8_t> idx(size_t(n) * d), codes(size_t(n * code_bytes), 0xC3);
        for (auto& v : idx) v = uint8_t(gen() % (1u << bits));
        for (int64_t j = 0; j < n; ++j) scalar.pack(idx.data() + j * d, d, bits, codes.data() + j * code_bytes);
        for (int m : {1, 2, 3, 4, 5, 8}) {
          std::vector<float> q(size_t(m) * d), w(size_t(m) * n), acc0(size_t(m) * d);
          for (auto& x : q) x = normal(gen);
          for (auto& x : w) x = normal(gen);
          for (auto& x : acc0) x = normal(gen);
          std::vector<std::vector<float>> accs;
          for (bool permutes : {false, true}) {
            std::vector<float> out(size_t(m) * n, -1.0f), acc = acc0;
            kernels::dot_packed_avx2_lane_variant(permutes)(q.data(), m, codes.data(), code_bytes, n, table.data(),
                                                            bits, d, out.data(), n, {});
            kernels::axpy_packed_avx2_lane_variant(permutes)(w.data(), n, m, codes.data(), code_bytes, n,
                                                             table.data(), bits, d, acc.data());
            const std::string where = "bits " + std::to_string(bits) + " d " + std::to_string(d) + " pad " +
                                      std::to_string(pad) + " m " + std::to_string(m) + (permutes ? " vpermps" : " planes");
            expect_table_products(q, w, acc0, idx, table, m, n, d, out, acc, where);
            accs.push_back(acc);
          }
          ASSERT_EQ(accs[0], accs[1]) << "bits " << bits << " d " << d << " pad " << pad << " m " << m;
        }
      }
    }
  }
#else
  EXPECT_EQ(kernels::dot_packed_avx2_lane_variant(true), nullptr);
  EXPECT_EQ(kernels::axpy_packed_avx2_lane_variant(false), nullptr);
#endif
}

// The AVX2 level's int8 kernel uses AVX-VNNI where the CPU has it, and pdep for 3-bit keys where
// pdep is fast: every variant must return the scalar kernel's floats (exact integer sums): the
// plain ones on every AVX2 machine, the VNNI ones where the CPU can run them (the level's own
// kernel, also in the test above, is the one it picks). 3-bit keys at head_dim 32-256 (multiples of
// 32) take the pdep or SIMD route, 48, 80 and 112 the pdep route with a partial last chunk (8 or 24
// nibble bytes; SIMD: unpacked), 40 and 72 the unpacked one. 1-7 and 9 queries: eight keys at a
// time for tiles of 4 and a last one of 1-3 (37 keys: the last 5 key by key).
TEST(SimdParity, BothAvx2Int8VariantsEqualScalar) {
#if TURBOKV_X86
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const std::vector<kernels::VnniForm> forms = runnable_vnni_forms("AVX2 int8 scores");
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  std::mt19937 gen(21);
  std::vector<int8_t> table8(16);
  for (auto& t : table8) t = int8_t(int(gen() % 127) - kernels::kInt8CentroidTop);
  table8[0] = -kernels::kInt8CentroidTop;  // both bounds: c + 64 = 1 and 127 for plain AVX2's maddubs
  table8[15] = kernels::kInt8CentroidTop;
  for (int variant = 0; variant < 2 * int(forms.size()); ++variant) {
    const kernels::VnniForm vnni = forms[size_t(variant / 2)];
    const bool pdep = variant & 1;
    const kernels::DotPackedInt8Fn kernel = kernels::dot_packed_int8_avx2_variant(vnni, pdep);
    ASSERT_NE(kernel, nullptr);
    for (int bits = 1; bits <= 4; ++bits) {
      // Rows ending 4-28 bytes into a 32-byte step (4 bits at 40, 48, 72, 80, 112; 2 bits at 32,
      // 80, 96, 112, 160; 1 bit at 32, 64, 96, 160, 192) as well as whole steps; no slack after the
      // last row (ASan).
      for (int d : {32, 40, 48, 64, 72, 80, 96, 112, 128, 160, 192, 256}) {
        const int64_t code_bytes = (int64_t(d) * bits + 7) / 8, n = 37;
        std::vector<uint8_t> codes(size_t(code_bytes * n));
        for (auto& c : codes) c = uint8_t(gen());
        for (int m : {1, 2, 3, 4, 5, 6, 7, 9}) {
          std::vector<int8_t> q8(size_t(m) * d);
          for (auto& q : q8) q = int8_t(int(gen() % 255) - 127);
          std::vector<float> q_scale(m, 0.01f), a(size_t(m) * n), b(size_t(m) * n);
          scalar.dot_packed_int8(q8.data(), q_scale.data(), m, codes.data(), code_bytes, n, table8.data(), 0.02f,
                                 bits, d, a.data(), n, {});
          // With rows to prefetch beside the keys (a hint: the same scores).
          kernel(q8.data(), q_scale.data(), m, codes.data(), code_bytes, n, table8.data(), 0.02f, bits, d, b.data(), n,
                 kernels::RowsAhead{codes.data(), code_bytes});
          ASSERT_EQ(a, b) << "vnni=" << int(vnni) << " pdep=" << pdep << " bits=" << bits << " d=" << d << " m=" << m;
        }
        // The largest pair sums maddubs can see: every index the table's last entry (+63, so
        // 127 * 127 twice per int16 lane), queries all +127 or all -127, 8 keys at a time and alone.
        for (int sign : {1, -1}) {
          std::vector<uint8_t> top_codes(codes.size(), 0xFF);
          std::vector<int8_t> q8(size_t(5) * d, int8_t(127 * sign));
          std::vector<float> q_scale(5, 1.0f), a(size_t(5) * n), b(size_t(5) * n);
          scalar.dot_packed_int8(q8.data(), q_scale.data(), 5, top_codes.data(), code_bytes, n, table8.data(),
                                 1.0f, bits, d, a.data(), n, {});
          kernel(q8.data(), q_scale.data(), 5, top_codes.data(), code_bytes, n, table8.data(), 1.0f, bits, d,
                 b.data(), n, {});
          ASSERT_EQ(a, b) << "extreme sums, vnni=" << int(vnni) << " bits=" << bits << " d=" << d;
          if (bits == 4 || bits == 2 || bits == 1) {  // indices of all ones: 2^bits - 1 (3 bits: 7)
            ASSERT_EQ(a[0], float(127 * sign * table8[(1 << bits) - 1] * d)) << bits;
          }
        }
      }
    }
  }
#else
  EXPECT_EQ(kernels::dot_packed_int8_avx2_variant(kernels::VnniForm::kVex, true), nullptr);
  EXPECT_FALSE(kernels::kHasAvxVnni);
  EXPECT_FALSE(kernels::vnni_form_runs(kernels::VnniForm::kEvex));
#endif
}

// Int8 scores and values take centroid bytes within +-kInt8CentroidTop (plain AVX2 adds 64 to them
// for scores and sums two steps of values in int16): every level refuses a table outside it, rather
// than returning saturated sums on one level only, and leaves the values' accumulator untouched.
TEST(SimdParity, Int8KernelsRefuseCentroidBytesPastTheirBound) {
  const int d = 64, bits = 4;
  const int64_t code_bytes = d * bits / 8, n = 9;
  std::vector<uint8_t> codes(size_t(code_bytes * n), 0xFF);
  std::vector<int8_t> q8(d, 1);
  std::vector<float> q_scale(1, 1.0f), out(n);
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    for (int8_t bad : {int8_t(kernels::kInt8CentroidTop + 1), int8_t(-kernels::kInt8CentroidTop - 1), int8_t(-128)}) {
      std::vector<int8_t> table8(16, 1);
      table8[7] = bad;
      EXPECT_THROW(k.dot_packed_int8(q8.data(), q_scale.data(), 1, codes.data(), code_bytes, n, table8.data(), 1.0f,
                                     bits, d, out.data(), n, {}),
                   std::invalid_argument)
          << simd_name(level) << " " << int(bad);
      std::vector<float> w(n, 1.0f), acc(d, 0.5f);
      EXPECT_THROW(k.axpy_packed_int8(w.data(), n, 1, codes.data(), code_bytes, n, table8.data(), 1.0f, bits, d,
                                      acc.data()),
                   std::invalid_argument)
          << simd_name(level) << " " << int(bad);
      EXPECT_EQ(acc, std::vector<float>(d, 0.5f));
    }
    std::vector<int8_t> edge(16, int8_t(-kernels::kInt8CentroidTop));
    edge[15] = int8_t(kernels::kInt8CentroidTop);
    k.dot_packed_int8(q8.data(), q_scale.data(), 1, codes.data(), code_bytes, n, edge.data(), 1.0f, bits, d,
                      out.data(), n, {});
    EXPECT_EQ(out[0], float(kernels::kInt8CentroidTop * d)) << simd_name(level);
  }
}

// select_fwht takes one of two AVX2 transforms by CPU (128-bit halves on Zen 1, vperm2f128
// elsewhere): both must give the scalar floats on every machine, whichever this one would pick.
TEST(SimdParity, BothAvx2HadamardVariantsEqualScalar) {
#if TURBOKV_X86
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  for (bool halves : {false, true}) {
    const kernels::FwhtFn fwht = kernels::fwht_avx2_variant(halves);
    ASSERT_NE(fwht, nullptr);
    for (int n : {8, 16, 32, 64, 128, 256, 512, 1024}) {
      const auto x = test_util::gaussian_rows(1, n, 15);
      const auto pre = test_util::gaussian_rows(1, n, 16), post = test_util::gaussian_rows(1, n, 17);
      for (const float* p : {pre.data(), static_cast<const float*>(nullptr)}) {
        for (const float* q : {post.data(), static_cast<const float*>(nullptr)}) {
          std::vector<float> a(n), b(n);
          scalar.fwht(x.data(), p, q, a.data(), n);
          fwht(x.data(), p, q, b.data(), n);
          ASSERT_EQ(a, b) << "halves=" << halves << " n=" << n;
          b = x;
          fwht(b.data(), p, q, b.data(), n);
          ASSERT_EQ(a, b) << "in place, halves=" << halves << " n=" << n;
        }
      }
    }
  }
#else
  EXPECT_EQ(kernels::fwht_avx2_variant(true), nullptr);
#endif
}

TEST(SimdParity, KernelsMatchScalarOnEdgeValues) {
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    for (int n : {8, 16, 32, 64, 128, 256, 512, 1024}) {
      const auto x = test_util::gaussian_rows(1, n, 5);
      const auto pre = test_util::gaussian_rows(1, n, 6);
      std::vector<float> a(n), b(n);
      scalar.fwht(x.data(), pre.data(), nullptr, a.data(), n);
      k.fwht(x.data(), pre.data(), nullptr, b.data(), n);
      ASSERT_EQ(a, b) << "fwht n=" << n;
      b = x;  // in place
      k.fwht(b.data(), pre.data(), nullptr, b.data(), n);
      ASSERT_EQ(a, b) << "in-place fwht n=" << n;
    }
    for (int n : {1, 5, 8, 15, 16, 17, 33, 100, 1024}) {
      auto x = test_util::gaussian_rows(1, n, 6);
      ASSERT_EQ(scalar.sum_squares(x.data(), n), k.sum_squares(x.data(), n)) << n;
    }
    // Values exactly on a boundary go up at every level.
    for (int bits = 1; bits <= 8; ++bits) {
      const auto& book = lloyd_max_codebook(bits);
      std::vector<float> table(std::max<size_t>(16, book.centroids.size()));
      std::vector<float> bounds(table.size(), INFINITY);
      std::copy(book.centroids.begin(), book.centroids.end(), table.begin());
      std::copy(book.boundaries.begin(), book.boundaries.end(), bounds.begin());
      std::vector<float> v(book.boundaries.begin(), book.boundaries.end());
      for (float b : book.boundaries) {
        v.push_back(std::nextafter(b, -INFINITY));
        v.push_back(std::nextafter(b, INFINITY));
      }
      v.push_back(-100.0f);
      v.push_back(100.0f);
      // Signed zero and the smallest subnormals (the symmetric count reads v < 0 and |v| - 1 ulp).
      for (float z : {-0.0f, 0.0f, std::numeric_limits<float>::denorm_min(),
                      -std::numeric_limits<float>::denorm_min()}) {
        v.push_back(z);
      }
      const int n = int(v.size());
      std::vector<uint8_t> ia(n), ib(n);
      std::vector<float> ra(n), rb(n);
      scalar.quantize(v.data(), 1.0f, bounds.data(), table.data(), nullptr, bits, ia.data(), ra.data(), n);
      k.quantize(v.data(), 1.0f, bounds.data(), table.data(), &kernels::codebook_grid(bits), bits, ib.data(), rb.data(), n);
      ASSERT_EQ(ia, ib) << "bits " << bits;
      ASSERT_EQ(ra, rb) << "bits " << bits;
      for (size_t j = 0; j < book.boundaries.size(); ++j) ASSERT_EQ(ia[j], j + 1);
      // Boundaries that are not symmetric take the full count (1-4 bits) and agree as well.
      std::vector<float> shifted = bounds;
      for (size_t j = 0; j < book.boundaries.size(); ++j) shifted[j] += 0.01f;
      scalar.quantize(v.data(), 1.0f, shifted.data(), table.data(), nullptr, bits, ia.data(), ra.data(), n);
      k.quantize(v.data(), 1.0f, shifted.data(), table.data(), nullptr, bits, ib.data(), rb.data(), n);
      ASSERT_EQ(ia, ib) << "shifted boundaries, bits " << bits;
    }
  }
}

TEST(SimdParity, ExpMatchesLibm) {
  std::vector<float> x;
  for (float v = -110.0f; v <= 0.0f; v += 0.0137f) x.push_back(v);
  x.push_back(-INFINITY);
  for (SimdLevel level : simd_levels()) {
    auto y = x;
    const float sum = kernels::kernel_set(level).exp_shifted(y.data(), int64_t(y.size()), 0.0f);
    double expect_sum = 0;
    for (float v : x) expect_sum += std::exp(double(v));
    ASSERT_NEAR(sum, expect_sum, 1e-5 * expect_sum);
    auto z = x;
    const float expect_max = 2.0f * *std::max_element(x.begin(), x.end() - 1);
    ASSERT_EQ(kernels::kernel_set(level).scale_max(z.data(), int64_t(z.size()) - 1, 2.0f), expect_max);
    for (size_t i = 0; i + 1 < x.size(); ++i) ASSERT_EQ(z[i], 2.0f * x[i]);
    for (size_t i = 0; i < x.size(); ++i) {
      const double expect = std::exp(double(x[i]));
      // Results under FLT_MIN may flush to 0 (subnormal weights are slow and weigh nothing).
      ASSERT_NEAR(y[i], expect, 4e-7 * expect + 1.18e-38) << x[i];
    }
  }
}

// Scores times key norms and weights times value norms / sqrt(d): the same two products per
// element as the scalar loop, bit for bit, for every length 0..300 (vector bodies, tails), row
// strides wider than the rows, a few queries, and in place (out = w, as finish_scores calls it).
TEST(SimdParity, ScaleRowsMatchScalar) {
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> value(-50.0f, 50.0f), norm(0.0f, 30.0f);
  const auto scalar = kernels::kernel_set(SimdLevel::kScalar).scale_rows;
  for (SimdLevel level : simd_levels()) {
    const auto kernel = kernels::kernel_set(level).scale_rows;
    ASSERT_NE(kernel, scalar) << simd_name(level) << ": a SIMD kernel of its own";
    for (int n = 0; n <= 300; ++n) {
      for (int m : {1, 4, 5}) {
        const int64_t stride = n + 3;
        std::vector<float> w(static_cast<size_t>(m * stride)), v(static_cast<size_t>(n));
        for (auto& x : w) x = value(gen);
        for (auto& x : v) x = norm(gen);
        const float c = n % 2 ? 0.088388f : 1.0f;
        std::vector<float> want(w.size(), -7.0f), got(w.size(), -7.0f);
        scalar(w.data(), stride, m, v.data(), c, n, want.data(), stride);
        kernel(w.data(), stride, m, v.data(), c, n, got.data(), stride);
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
            << simd_name(level) << " n=" << n << " m=" << m << " (the gap past each row stays untouched too)";
        kernel(w.data(), stride, m, v.data(), c, n, w.data(), stride);  // in place
        for (int a = 0; a < m; ++a) {
          ASSERT_EQ(0, std::memcmp(want.data() + a * stride, w.data() + a * stride, size_t(n) * sizeof(float)))
              << simd_name(level) << " in place, n=" << n << " m=" << m;
        }
      }
    }
    float one = 3.0f, two = 0.5f, out = 0.0f;
    kernel(&one, 1, 1, &two, 4.0f, 1, &out, 1);
    ASSERT_EQ(out, 6.0f) << simd_name(level) << ": 3 * (0.5 * 4)";
  }
}

// Softmax rows as attention makes them: every length 1..300 (vector bodies and scalar tails), a
// shift at or above every value, masked -inf entries.
TEST(SimdParity, ExpShiftedOnSoftmaxRows) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> value(-120.0f, 0.0f);
  for (SimdLevel level : simd_levels()) {
    // Each SIMD level has its own exp and scale_max (NEON too): this compares two kernels.
    ASSERT_NE(kernels::kernel_set(level).exp_shifted, kernels::kernel_set(SimdLevel::kScalar).exp_shifted);
    ASSERT_NE(kernels::kernel_set(level).scale_max, kernels::kernel_set(SimdLevel::kScalar).scale_max);
    for (int n = 1; n <= 300; ++n) {
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = value(gen);
      if (n > 3) x[size_t(n / 2)] = -INFINITY;
      const float shift = *std::max_element(x.begin(), x.end()) + (n % 3 == 0 ? 0.0f : 1.5f);
      auto y = x;
      const float sum = kernels::kernel_set(level).exp_shifted(y.data(), n, shift);
      double want_sum = 0;
      for (int i = 0; i < n; ++i) {
        const float shifted = x[size_t(i)] - shift;  // the kernels' input: rounded to float
        const double want = std::exp(double(shifted));
        want_sum += want;
        ASSERT_NEAR(y[size_t(i)], want, 4e-7 * want + 1.18e-38) << simd_name(level) << " n " << n << " i " << i;
      }
      ASSERT_NEAR(sum, want_sum, 1e-6 * want_sum + 1e-37) << simd_name(level) << " n " << n;
    }
  }
}

// The tile product at every level against a double oracle, over shapes that hit every tail of
// the register blocks (rows 1..13, columns with 16-, 8- and scalar tails, strides past the width).
// The dense rotation (head_dims that are not powers of two) and the QJL sketch: every row count
// from 1 to 300 meets each register block (64, 32, 16, 8 rows on AVX2; 128 ... 16 on AVX-512) and
// the tails after them; the output must be the scalar's bits, and nothing past the rows written.
TEST(SimdParity, MatvecColumnsIsBitIdenticalAtEveryRowCount) {
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    ASSERT_NE(k.matvec_columns, scalar.matvec_columns) << simd_name(level);
    for (int rows = 1; rows <= 300; ++rows) {
      for (int cols : {1, 7, 96}) {
        const auto columns = test_util::gaussian_rows(cols, rows, uint32_t(rows));
        const auto x = test_util::gaussian_rows(1, cols, uint32_t(cols));
        std::vector<float> want(size_t(rows) + 1, -7.0f), got(size_t(rows) + 1, -7.0f);
        scalar.matvec_columns(columns.data(), rows, cols, x.data(), want.data());
        k.matvec_columns(columns.data(), rows, cols, x.data(), got.data());
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), sizeof(float) * want.size()))
            << simd_name(level) << " rows " << rows << " cols " << cols;
        ASSERT_EQ(got[size_t(rows)], -7.0f);
      }
    }
  }
}

// The AVX-512 product runs one FMA per depth step in order for every element, as the AVX2
// product's vectors do: where those cover every column (n a multiple of 8) the two agree bit for
// bit, at every band of rows and with the AVX-512 tail masked (n = 8, 24, 40).
TEST(SimdParity, Avx512GemmEqualsAvx2GemmOnWholeAvx2Vectors) {
  if (!simd_supported(SimdLevel::kAvx512)) GTEST_SKIP() << "no AVX-512 on this CPU";
  const auto& wide = kernels::kernel_set(SimdLevel::kAvx512);
  const auto& narrow = kernels::kernel_set(SimdLevel::kAvx2);
  for (int m : {1, 5, 6, 7, 13}) {
    for (int n : {8, 16, 24, 32, 40, 64, 256}) {
      for (int depth : {1, 64, 128}) {
        for (bool accumulate : {false, true}) {
          const int64_t lda = depth + 1, ldb = n + 3, ldc = n + 5;
          const auto a = test_util::gaussian_rows(m, int(lda), 94);
          const auto b = test_util::gaussian_rows(depth, int(ldb), 95);
          auto c512 = test_util::gaussian_rows(m, int(ldc), 96);
          auto c256 = c512;
          wide.gemm(a.data(), lda, b.data(), ldb, c512.data(), ldc, m, n, depth, accumulate);
          narrow.gemm(a.data(), lda, b.data(), ldb, c256.data(), ldc, m, n, depth, accumulate);
          ASSERT_EQ(c512, c256) << "m " << m << " n " << n << " depth " << depth;
        }
      }
    }
  }
}

TEST(SimdParity, GemmMatchesDoubleProduct) {
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    // Every SIMD level has its own register-blocked product.
    ASSERT_NE(k.gemm, kernels::kernel_set(SimdLevel::kScalar).gemm) << simd_name(level);
    if (level == SimdLevel::kAvx512) {
      ASSERT_NE(k.gemm, kernels::kernel_set(SimdLevel::kAvx2).gemm);
    }
    for (int m : {1, 5, 6, 7, 13}) {
      for (int n : {1, 8, 15, 16, 37, 64}) {
        for (int depth : {1, 32, 67}) {
          for (bool accumulate : {false, true}) {
            const int64_t lda = depth + 3, ldb = n + 5, ldc = n + 2;
            const auto a = test_util::gaussian_rows(m, int(lda), 91);
            const auto b = test_util::gaussian_rows(depth, int(ldb), 92);
            auto c = test_util::gaussian_rows(m, int(ldc), 93);
            const auto before = c;
            k.gemm(a.data(), lda, b.data(), ldb, c.data(), ldc, m, n, depth, accumulate);
            for (int i = 0; i < m; ++i) {
              for (int j = 0; j < int(ldc); ++j) {
                const size_t at = size_t(i * ldc + j);
                if (j >= n) {  // past the width: untouched
                  ASSERT_EQ(c[at], before[at]);
                  continue;
                }
                double want = accumulate ? before[at] : 0.0;
                for (int x = 0; x < depth; ++x) want += double(a[size_t(i * lda + x)]) * b[size_t(x * ldb + j)];
                ASSERT_NEAR(c[at], want, 1e-5 * (1 + std::sqrt(double(depth))))
                    << simd_name(level) << " m " << m << " n " << n << " depth " << depth;
              }
            }
          }
        }
      }
    }
  }
}

// float16 storage at every level: conversions bit-identical to the scalar ones (stored halves never
// depend on the level) over every finite half and floats rounding into all of them (ties,
// subnormals, the largest), and the window / full-precision scores and values against double sums.
TEST(SimdParity, HalfKernelsMatchTheirOracles) {
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  std::vector<uint16_t> every;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00u) != 0x7C00u) every.push_back(static_cast<uint16_t>(h));  // finite halves
  }
  std::vector<float> floats;
  for (uint16_t h : every) {
    const float f = half_to_float(h);
    floats.push_back(f);
    // The midpoint to the next half up (a tie, rounds to even) and points just either side of it.
    if ((h & 0x7FFFu) < 0x7BFFu) {
      const float next = half_to_float(static_cast<uint16_t>(h + 1));
      const float mid = f + (next - f) / 2;
      floats.push_back(mid);
      floats.push_back(std::nextafter(mid, next));
      floats.push_back(std::nextafter(mid, f));
    }
  }
  std::vector<uint16_t> want_halves(floats.size());
  scalar.to_half(floats.data(), want_halves.data(), int64_t(floats.size()));
  std::vector<float> want_floats(every.size());
  scalar.from_half(every.data(), want_floats.data(), int64_t(every.size()));
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    const std::string where = simd_name(level);
    ASSERT_NE(k.to_half, scalar.to_half) << where;  // each SIMD level converts with its own
    ASSERT_NE(k.dot_half, scalar.dot_half) << where;
    ASSERT_NE(k.axpy_half, scalar.axpy_half) << where;
    std::vector<uint16_t> halves(floats.size());
    k.to_half(floats.data(), halves.data(), int64_t(floats.size()));
    ASSERT_EQ(halves, want_halves) << where;
    std::vector<float> back(every.size());
    k.from_half(every.data(), back.data(), int64_t(every.size()));
    ASSERT_EQ(0, std::memcmp(back.data(), want_floats.data(), back.size() * sizeof(float))) << where;
    for (int d : {8, 12, 16, 40, 64, 128}) {
      for (int m : {1, 2, 3, 4, 5, 8}) {
        const int64_t n = 37;
        std::vector<float> x(size_t(n) * d), q(size_t(m) * d), w(size_t(m) * n), acc(size_t(m) * d);
        for (auto& v : x) v = normal(gen);
        for (auto& v : q) v = normal(gen);
        for (auto& v : w) v = normal(gen);
        for (auto& v : acc) v = normal(gen);
        std::vector<uint16_t> h(x.size());
        scalar.to_half(x.data(), h.data(), int64_t(x.size()));
        const std::vector<float> acc0 = acc;
        std::vector<float> scores(size_t(m) * n);
        k.dot_half(q.data(), m, h.data(), n, d, scores.data(), n);
        k.axpy_half(w.data(), n, m, h.data(), n, d, acc.data());
        const std::string at = where + " d " + std::to_string(d) + " m " + std::to_string(m);
        expect_products(q, w, acc0, m, n, d, [&](int64_t j, int i) { return double(half_to_float(h[size_t(j * d + i)])); },
                        scores, acc, at);
      }
    }
  }
}

// Each field of every level's KernelSet does what its name says (checked against direct oracles,
// not against another KernelSet, so a field swapped at every level would still be caught).
TEST(SimdParity, KernelSetFieldsDoWhatTheirNamesSay) {
  for (SimdLevel level : supported_simd()) {
    const auto& k = kernels::kernel_set(level);
    const std::string where = simd_name(level);
    EXPECT_EQ(k.level, level) << where;
    const std::vector<uint8_t> idx{1, 2, 3, 0, 2, 1, 3, 3, 0, 1};
    std::vector<uint8_t> packed(3, 0xAA), back(idx.size());
    k.pack(idx.data(), int(idx.size()), 2, packed.data());
    EXPECT_EQ(packed[0], 1 | 2 << 2 | 3 << 4 | 0 << 6) << where;  // little-endian bit stream
    k.unpack(packed.data(), int(idx.size()), 2, back.data());
    EXPECT_EQ(back, idx) << where;
    std::vector<float> x{1.0f, -2.0f, 0.5f};
    EXPECT_EQ(k.scale_max(x.data(), 3, 2.0f), 2.0f) << where;
    EXPECT_EQ(x, (std::vector<float>{2.0f, -4.0f, 1.0f})) << where;
    const float a2x2[4] = {1.0f, 2.0f, 3.0f, 4.0f}, b2x2[4] = {5.0f, 6.0f, 7.0f, 8.0f};
    float c2x2[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    k.gemm(a2x2, 2, b2x2, 2, c2x2, 2, 2, 2, 2, true);  // 1 + [[19, 22], [43, 50]]
    EXPECT_EQ(std::vector<float>(c2x2, c2x2 + 4), (std::vector<float>{20.0f, 23.0f, 44.0f, 51.0f})) << where;
    std::vector<float> e{0.0f, -INFINITY, 1.0f};
    EXPECT_NEAR(k.exp_shifted(e.data(), 3, 1.0f), std::exp(-1.0f) + 1.0f, 1e-6f) << where;
    EXPECT_EQ(e[1], 0.0f) << where;
    const std::vector<float> sq{3.0f, 4.0f};
    EXPECT_EQ(k.sum_squares(sq.data(), 2), 25.0f) << where;
    uint16_t h[2];
    const float two[2] = {1.0f, -2.0f};
    float round_trip[2];
    k.to_half(two, h, 2);
    EXPECT_EQ(h[0], 0x3C00) << where;  // float16 1.0
    k.from_half(h, round_trip, 2);
    EXPECT_EQ(round_trip[1], -2.0f) << where;
  }
}

#if TURBOKV_X86
TURBOKV_TARGET_AVX2 void lookup_both_ways(const float* table, const uint8_t* idx, float* by_loads,
                                          float* by_gather) {
  _mm256_storeu_ps(by_loads, kernels::lookup8_loads(table, idx));
  _mm256_storeu_ps(by_gather, kernels::lookup8_gather(table, idx));
}

// The Zen workarounds key on the generation read from CPUID (amd_zen.hpp), not on the compiler's
// CPU names (GCC 12 calls Zen 4 "znver3"). Family and model of released parts, from AMD's
// revision guides and /proc/cpuinfo of the machines this project ran on.
TEST(SimdParity, ZenGenerationFromFamilyAndModel) {
  using kernels::zen_generation;
  EXPECT_EQ(zen_generation(true, 0x17, 0x01), 1);   // EPYC 7001 (Naples), the Zen 1 VM
  EXPECT_EQ(zen_generation(true, 0x17, 0x08), 1);   // Ryzen 2000 (Zen+)
  EXPECT_EQ(zen_generation(true, 0x17, 0x31), 2);   // EPYC 7002 (Rome)
  EXPECT_EQ(zen_generation(true, 0x17, 0x71), 2);   // Ryzen 3000 (Matisse)
  EXPECT_EQ(zen_generation(true, 0x18, 0x00), 1);   // Hygon Dhyana (HygonGenuine, a Zen 1 core)
  EXPECT_EQ(zen_generation(true, 0x19, 0x01), 3);   // EPYC 7003 (Milan), the Zen 3 VM
  EXPECT_EQ(zen_generation(true, 0x19, 0x21), 3);   // Ryzen 5000 (Vermeer)
  EXPECT_EQ(zen_generation(true, 0x19, 0x50), 3);   // Ryzen 5000 mobile (Cezanne)
  EXPECT_EQ(zen_generation(true, 0x19, 0x11), 4);   // EPYC 9004 (Genoa), the Zen 4 VM
  EXPECT_EQ(zen_generation(true, 0x19, 0x61), 4);   // Ryzen 7000 (Raphael)
  EXPECT_EQ(zen_generation(true, 0x19, 0xa0), 4);   // EPYC 97x4 (Bergamo)
  EXPECT_EQ(zen_generation(true, 0x1a, 0x02), 5);   // EPYC 9005 (Turin)
  EXPECT_EQ(zen_generation(true, 0x15, 0x02), 0);   // Bulldozer-era AMD
  EXPECT_EQ(zen_generation(false, 0x06, 0xa7), 0);  // Intel (the 2-core AVX-512 VM)
  const int here = kernels::amd_zen_generation();
  // Zen 1-4, or Intel's GDS mitigation, or the override (each case: test_gather_speed.cpp).
  EXPECT_EQ(kernels::kGathersAreSlow,
            kernels::gather_speed(here, std::getenv("TURBOKV_GATHERS"), kernels::read_gds_status()).slow);
  std::cout << "AMD Zen generation here: " << here << "\n";
}

// The AVX-512 level's 6-8-bit quantisation and 8-bit row encoder look the grid up by gathers, or
// where gathers are slow (AMD Zen 4) by the AVX2 level's scalar loads. Both routes run here on any
// AVX-512 CPU: indices and residuals equal the scalar level's; codes and norms equal the AVX2 row
// encoder's (which the codec tests hold to the scalar stages).
TEST(SimdParity, BothAvx512GridRoutesEqualScalar) {
  if (!simd_supported(SimdLevel::kAvx512)) GTEST_SKIP() << "no AVX-512 here";
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  const auto& avx512 = kernels::kernel_set(SimdLevel::kAvx512);
  const kernels::QuantizeFn routes[2] = {avx512.quantize, kernels::select_quantize_avx512_gathers()};
  std::mt19937 rng(33);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int n = 1000;  // not a multiple of 16: a masked tail
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  for (int bits = 6; bits <= 8; ++bits) {
    const auto& book = lloyd_max_codebook(bits);
    std::vector<float> table(book.centroids.begin(), book.centroids.end());
    std::vector<float> bounds(table.size(), INFINITY);
    std::copy(book.boundaries.begin(), book.boundaries.end(), bounds.begin());
    std::vector<uint8_t> ia(n), ib(n);
    std::vector<float> ra(n), rb(n);
    scalar.quantize(v.data(), 0.9f, bounds.data(), table.data(), nullptr, bits, ia.data(), ra.data(), n);
    for (int route = 0; route < 2; ++route) {
      routes[route](v.data(), 0.9f, bounds.data(), table.data(), &kernels::codebook_grid(bits), bits, ib.data(),
                    rb.data(), n);
      ASSERT_EQ(ia, ib) << "bits " << bits << (route ? " by gathers" : " as routed here");
      ASSERT_EQ(ra, rb) << "bits " << bits << (route ? " by gathers" : " as routed here");
    }
  }
  const kernels::EncodeRowsFn encoders[3] = {kernels::kernel_set(SimdLevel::kAvx2).encode_rows, avx512.encode_rows,
                                             kernels::select_encode_rows_avx512_gathers()};
  const auto& book = lloyd_max_codebook(8);
  const std::vector<float> bounds(book.boundaries.begin(), book.boundaries.end());
  for (int d : {64, 128, 256}) {
    const int rows = 7;
    std::vector<float> x(size_t(rows) * d), flips(d);
    for (float& f : x) f = normal(rng);
    for (float& f : flips) f = normal(rng) < 0 ? -1.0f : 1.0f;
    std::vector<uint8_t> codes[3];
    std::vector<float> norms[3];
    for (int e = 0; e < 3; ++e) {
      codes[e].assign(size_t(rows) * d, 0);
      norms[e].assign(rows, 0.0f);
      ASSERT_EQ(encoders[e](x.data(), rows, d, d, 8, flips.data(), std::sqrt(float(d)), 1e-30f, bounds.data(),
                            kernels::codebook_grid(8), codes[e].data(), norms[e].data()),
                rows);
    }
    for (int e = 1; e < 3; ++e) {
      EXPECT_EQ(codes[e], codes[0]) << "d " << d << (e == 2 ? " by gathers" : " as routed here");
      EXPECT_EQ(norms[e], norms[0]) << "d " << d << (e == 2 ? " by gathers" : " as routed here");
    }
  }
  std::cout << "AVX-512 6-8-bit grid lookups here by: " << (kernels::kGathersAreSlow ? "scalar loads" : "gathers")
            << "\n";
}

// Lookups above 4 bits go by gather or by scalar loads depending on the CPU (kGathersAreSlow):
// both must give the table's floats for every index, whichever this machine uses.
TEST(SimdParity, BothLookupRoutesReadTheTableExactly) {
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 here";
  std::vector<float> table(256);
  for (int i = 0; i < 256; ++i) table[i] = std::ldexp(float(i) - 127.5f, i % 9 - 4);
  std::vector<uint8_t> idx(256 + 8);
  for (int i = 0; i < 256; ++i) idx[i] = uint8_t((i * 37 + 11) % 256);
  for (int i = 0; i + 8 <= 256; i += 8) {
    float a[8], b[8];
    lookup_both_ways(table.data(), idx.data() + i, a, b);
    for (int l = 0; l < 8; ++l) {
      ASSERT_EQ(a[l], table[idx[i + l]]) << i + l;
      ASSERT_EQ(b[l], table[idx[i + l]]) << i + l;
    }
  }
  std::cout << "lookups above 4 bits here: " << (kernels::kGathersAreSlow ? "scalar loads" : "gathers") << "\n";
}
#endif

#if TURBOKV_X86
// Scores of 8 keys (rows of `codes`) by the broadcast lookups, as dot_packed_rows_avx2 calls them.
template <int kLanes>
TURBOKV_TARGET_AVX2 void eight_keys_by_broadcast(const float* q, int m, int d, const float* table,
                                                 const uint8_t* codes, int64_t code_bytes, int bits, float* out) {
  std::vector<float> qt(static_cast<size_t>(kLanes * d));
  kernels::interleave_rows<kLanes>(q, d, m, d, qt.data());
  if (bits == 8) {
    kernels::dot_eight_keys_broadcast<kLanes>(qt.data(), m, d, table, kernels::InPlaceWords{codes, code_bytes}, 0, out, 8);
  } else {
    const kernels::SpreadWords words{codes, code_bytes, bits, d, kernels::spread_mask(bits)};
    kernels::dot_eight_keys_broadcast<kLanes>(qt.data(), m, d, table, words, 0, out, 8);
  }
}

// Values of 5-8 queries over n keys by the broadcast lookups, as axpy_broadcast_rows calls them.
TURBOKV_TARGET_AVX2 void values_by_broadcast(const float* w, int m, int64_t n, int d, const float* table,
                                             const uint8_t* codes, int64_t code_bytes, int bits, float* acc) {
  std::vector<float> wt(static_cast<size_t>(8 * n));
  kernels::interleave_rows<8>(w, n, m, n, wt.data());
  if (bits == 8) {
    kernels::axpy_eight_queries_broadcast(wt.data(), m, n, kernels::InPlaceWords{codes, code_bytes}, table, d, acc);
  } else {
    const kernels::SpreadWords words{codes, code_bytes, bits, d, kernels::spread_mask(bits)};
    kernels::axpy_eight_queries_broadcast(wt.data(), m, n, words, table, d, acc);
  }
}

// The broadcast lookups run where gathers are slow (Zen 1-3: broadcast_fits); their scores are
// checked here on every AVX2 machine against double sums of the table's floats: 8-bit codes in
// place and 5-7-bit ones spread from packed rows, scores of 1-8 queries and values of 5-8, head_dims
// 16, 24 (8 bits) and 128.
TEST(SimdParity, BroadcastLookupsMatchTheTable) {
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 here";
  EXPECT_EQ(kernels::broadcast_fits(4, 8, 128), kernels::kGathersAreSlow);
  EXPECT_EQ(kernels::broadcast_fits(1, 7, 128), kernels::kGathersAreSlow && !kernels::kPdepIsSlow);
  EXPECT_FALSE(kernels::broadcast_fits(1, 8, 128));  // one query keeps the fused loads
  EXPECT_FALSE(kernels::broadcast_fits(9, 8, 128));
  EXPECT_FALSE(kernels::broadcast_fits(4, 4, 128));
  std::mt19937 gen(17);
  std::vector<float> table(256);
  for (int i = 0; i < 256; ++i) table[i] = std::ldexp(float(i) - 127.5f, i % 7 - 3);
  const kernels::PackFn pack = kernels::select_pack(SimdLevel::kScalar);
  for (int d : {16, 24, 128}) {
    for (int bits = d % 16 == 0 ? 5 : 8; bits <= 8; ++bits) {  // 5-7 bits: head_dims of 16s (spread_fits)
      const int64_t code_bytes = int64_t(d) * bits / 8;
      std::vector<uint8_t> idx(size_t(8) * d), codes(size_t(8) * code_bytes);
      for (auto& i : idx) i = uint8_t(gen() % (1u << bits));
      for (int k = 0; k < 8; ++k) pack(idx.data() + k * d, d, bits, codes.data() + k * code_bytes);
      for (int m = 1; m <= 8; ++m) {
        auto q = test_util::gaussian_rows(m, d, uint32_t(m * 7 + bits));
        std::vector<float> out(size_t(m) * 8, -1.0f);
        (m <= 4 ? eight_keys_by_broadcast<4> : eight_keys_by_broadcast<8>)(q.data(), m, d, table.data(), codes.data(),
                                                                           code_bytes, bits, out.data());
        for (int a = 0; a < m; ++a) {
          for (int k = 0; k < 8; ++k) {
            double exact = 0.0, magnitude = 0.0;
            for (int i = 0; i < d; ++i) {
              exact += double(q[a * d + i]) * table[idx[k * d + i]];
              magnitude += std::abs(double(q[a * d + i]) * table[idx[k * d + i]]);
            }
            ASSERT_NEAR(out[a * 8 + k], exact, 1e-6 * magnitude + 1e-6)
                << "d=" << d << " bits=" << bits << " m=" << m << " query " << a << " key " << k;
          }
        }
        if (m < 5) continue;
        // Values: acc_a += sum over the 8 keys of w_a,k * table[index i of key k], from acc_a = 1.
        auto w = test_util::gaussian_rows(m, 8, uint32_t(m * 5 + bits));
        std::vector<float> acc(size_t(m) * d, 1.0f);
        values_by_broadcast(w.data(), m, 8, d, table.data(), codes.data(), code_bytes, bits, acc.data());
        for (int a = 0; a < m; ++a) {
          for (int i = 0; i < d; ++i) {
            double exact = 1.0, magnitude = 1.0;
            for (int k = 0; k < 8; ++k) {
              exact += double(w[a * 8 + k]) * table[idx[k * d + i]];
              magnitude += std::abs(double(w[a * 8 + k]) * table[idx[k * d + i]]);
            }
            ASSERT_NEAR(acc[a * d + i], exact, 1e-6 * magnitude)
                << "values d=" << d << " bits=" << bits << " m=" << m << " query " << a << " coordinate " << i;
          }
        }
      }
    }
  }
}

TURBOKV_TARGET_AVX2 void grid_cells_by_loads(const kernels::GridCell* table, const int32_t* cells,
                                             float* candidate, int32_t* below) {
  __m256 c;
  __m256i b;
  kernels::grid_cells_loads(table, cells, &c, &b);
  _mm256_storeu_ps(candidate, c);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(below), b);
}

// The AVX2 quantiser reads its grid cells by 64-bit scalar loads, two per register half, then
// splits the pairs by shuffles: each lane must get its own cell, in lane order.
TEST(SimdParity, GridCellLoadsReadEachLanesCell) {
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 here";
  const auto& grid = kernels::codebook_grid(8);
  const int cells = grid.cells;
  ASSERT_GT(cells, 8);
  std::vector<int32_t> lanes(512);
  for (size_t i = 0; i < lanes.size(); ++i) lanes[i] = int32_t((i * 733 + 5) % cells);
  lanes[0] = 0;
  lanes[7] = cells - 1;
  for (size_t i = 0; i + 8 <= lanes.size(); i += 8) {
    float candidate[8];
    int32_t below[8];
    grid_cells_by_loads(grid.table.data(), lanes.data() + i, candidate, below);
    for (int l = 0; l < 8; ++l) {
      const kernels::GridCell& want = grid.table[lanes[i + l]];
      ASSERT_EQ(candidate[l], want.candidate) << i + l;
      ASSERT_EQ(below[l], want.below) << i + l;
    }
  }
}
#endif

// The grid route of quantize (6+ bits on AVX-512, 5+ on AVX2 and NEON) counts boundaries exactly like the binary search,
// for the codebooks' own grids and for hand-made boundaries that force a fine grid or none.
TEST(SimdParity, QuantizeGridCountsBoundariesExactly) {
  for (int bits = 5; bits <= 8; ++bits) ASSERT_GT(kernels::codebook_grid(bits).cells, 0) << bits;
  // The narrow grid (AVX-512's 4-bit route, at most 32 cells) exists for 2-4 bits, not beyond.
  for (int bits = 2; bits <= 4; ++bits) {
    ASSERT_GT(kernels::codebook_grid(bits).narrow.cells, 0) << bits;
    ASSERT_LE(kernels::codebook_grid(bits).narrow.cells, 32) << bits;
  }
  EXPECT_EQ(kernels::codebook_grid(5).narrow.cells, 0);
  // The 4-bit codebook's 7 positive boundaries fit the AVX2 quantiser's 8-cell positive grid.
  ASSERT_TRUE(kernels::codebook_grid(4).symmetric_with_zero);
  ASSERT_EQ(kernels::codebook_grid(4).positive.cells, 8);
  const std::vector<float> close = {-1.0f, 0.0f, 0.001f, 1.0f};
  const auto fine = kernels::BoundaryGrid::build(close.data(), 4);
  ASSERT_GE(fine.cells, 2000);
  const std::vector<float> too_close = {-1.0f, 0.0f, 1e-7f, 1.0f};
  ASSERT_EQ(kernels::BoundaryGrid::build(too_close.data(), 4).cells, 0);  // falls back to search

  std::mt19937 gen(3);
  std::normal_distribution<float> normal;
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
    for (int bits = 4; bits <= 8; ++bits) {
      const auto& book = lloyd_max_codebook(bits);
      std::vector<float> table(std::max<size_t>(book.centroids.size(), kernels::kMinTableSize), 0.0f);
      std::copy(book.centroids.begin(), book.centroids.end(), table.begin());
      std::vector<float> bounds(table.size(), INFINITY);
      std::copy(book.boundaries.begin(), book.boundaries.end(), bounds.begin());
      // Lengths ending on, before and after the AVX2 route's 128-value chunks, with 8-value tails.
      for (int n : {4099, 203, 128, 136, 7}) {
        std::vector<float> v(n);
        for (size_t i = 0; i < v.size(); ++i) v[i] = normal(gen) * (i % 3 == 0 ? 3.0f : 1.0f);
        std::vector<uint8_t> ia(n), ib(n);
        std::vector<float> ra(n), rb(n);
        scalar.quantize(v.data(), 0.7f, bounds.data(), table.data(), nullptr, bits, ia.data(), ra.data(), n);
        k.quantize(v.data(), 0.7f, bounds.data(), table.data(), &kernels::codebook_grid(bits), bits,
                   ib.data(), rb.data(), n);
        ASSERT_EQ(ia, ib) << "bits " << bits << " n " << n << " level " << int(level);
        ASSERT_EQ(ra, rb) << "bits " << bits << " n " << n << " level " << int(level);
      }
      // Every boundary, and the floats on either side of it (scale 1: the values are the products).
      std::vector<float> on;
      for (float b : book.boundaries) on.insert(on.end(), {b, std::nextafter(b, -INFINITY), std::nextafter(b, INFINITY)});
      const int count = int(on.size());
      std::vector<uint8_t> ia(count), ib(count);
      scalar.quantize(on.data(), 1.0f, bounds.data(), table.data(), nullptr, bits, ia.data(), nullptr, count);
      k.quantize(on.data(), 1.0f, bounds.data(), table.data(), &kernels::codebook_grid(bits), bits, ib.data(),
                 nullptr, count);
      ASSERT_EQ(ia, ib) << "bits " << bits << " on the boundaries, level " << int(level);
    }
    // Hand-made boundaries padded with +inf to a 5-bit table: values on and next to each of them.
    std::vector<float> bounds(32, INFINITY), table(32, 0.0f);
    std::copy(close.begin(), close.end(), bounds.begin());
    for (int c = 0; c < 5; ++c) table[c] = float(c);
    std::vector<float> v;
    for (float b : close) {
      v.insert(v.end(), {b, std::nextafter(b, -INFINITY), std::nextafter(b, INFINITY)});
    }
    for (int i = 0; i < 40; ++i) v.push_back(normal(gen));
    const int n = int(v.size());
    std::vector<uint8_t> ia(n), ib(n);
    scalar.quantize(v.data(), 1.0f, bounds.data(), table.data(), nullptr, 5, ia.data(), nullptr, n);
    k.quantize(v.data(), 1.0f, bounds.data(), table.data(), &fine, 5, ib.data(), nullptr, n);
    ASSERT_EQ(ia, ib) << "level " << int(level);
  }
}

#if TURBOKV_X86
// 4 symmetric bits at the AVX2 level count by the positive grid where the codebook has one (not on
// Zen 1) and by the 3-step search otherwise: both routes against the scalar binary search, on
// and beside every boundary, with and without packing.
TEST(SimdParity, BothFourBitCountRoutesEqualTheSearch) {
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX2 here";
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  const auto& avx2 = kernels::kernel_set(SimdLevel::kAvx2);
  const auto& book = lloyd_max_codebook(4);
  std::vector<float> table(kernels::kMinTableSize, 0.0f), bounds(kernels::kMinTableSize, INFINITY);
  std::copy(book.centroids.begin(), book.centroids.end(), table.begin());
  std::copy(book.boundaries.begin(), book.boundaries.end(), bounds.begin());
  const kernels::BoundaryGrid& with_positive = kernels::codebook_grid(4);
  kernels::BoundaryGrid without_positive = with_positive;
  without_positive.positive.cells = 0;
  std::mt19937 gen(17);
  std::normal_distribution<float> normal;
  std::vector<float> v;
  for (float b : book.boundaries) {
    v.insert(v.end(), {b, std::nextafter(b, -INFINITY), std::nextafter(b, INFINITY), -b});
  }
  v.insert(v.end(), {0.0f, -0.0f, 1e-40f, -1e-40f, 30.0f, -30.0f});
  while (v.size() % 64 != 0 || v.size() < 1024) v.push_back(normal(gen) * 1.5f);
  const int n = int(v.size());
  std::vector<uint8_t> want(n), packed_want(n / 2);
  scalar.quantize(v.data(), 1.0f, bounds.data(), table.data(), nullptr, 4, want.data(), nullptr, n);
  scalar.pack(want.data(), n, 4, packed_want.data());
  for (const kernels::BoundaryGrid* grid : {&with_positive, static_cast<const kernels::BoundaryGrid*>(&without_positive)}) {
    std::vector<uint8_t> got(n), packed(n / 2), scratch(n);
    avx2.quantize(v.data(), 1.0f, bounds.data(), table.data(), grid, 4, got.data(), nullptr, n);
    ASSERT_EQ(want, got) << (grid->positive.cells ? "positive grid" : "3-step search");
    avx2.quantize_packed(v.data(), 1.0f, bounds.data(), table.data(), grid, 4, scratch.data(), packed.data(), n);
    ASSERT_EQ(packed_want, packed) << (grid->positive.cells ? "positive grid" : "3-step search");
  }
  std::cout << "the AVX2 level here counts 4 bits by "
            << (kernels::kLaneSwapIsSlow ? "the 3-step search" : "the positive grid") << "\n";
}
#endif

// quantize_packed (AVX2: 4 bits packed in registers, 64 indices at a time) must write the bytes
// pack(quantize(x)) writes: Lloyd-Max boundaries with their grid (the symmetric count) and without
// (every boundary compared), values on and beside every boundary, lengths with and without a tail
// after the last 64, and nothing past the row's bytes.
TEST(SimdParity, QuantizePackedWritesWhatQuantizeThenPackWrites) {
  const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  bool fused_somewhere = false;
  for (SimdLevel level : supported_simd()) {
    const auto& k = kernels::kernel_set(level);
    if (k.quantize_packed == nullptr) continue;  // that level quantises, then packs
    fused_somewhere = true;
    for (int bits = 1; bits <= 8; ++bits) {
      const auto& book = lloyd_max_codebook(bits);
      std::vector<float> table(std::max<size_t>(book.centroids.size(), kernels::kMinTableSize), 0.0f);
      std::copy(book.centroids.begin(), book.centroids.end(), table.begin());
      std::vector<float> bounds(table.size(), INFINITY);
      std::copy(book.boundaries.begin(), book.boundaries.end(), bounds.begin());
      for (int n : {8, 64, 128, 136, 192, 1024}) {
        std::vector<float> v(size_t(n) + 8);
        for (auto& x : v) x = normal(gen) * 1.3f;
        for (size_t b = 0; b < book.boundaries.size() && 3 * b + 2 < size_t(n); ++b) {
          const float at = book.boundaries[b];
          v[3 * b] = at;
          v[3 * b + 1] = std::nextafter(at, -INFINITY);
          v[3 * b + 2] = std::nextafter(at, INFINITY);
        }
        for (const kernels::BoundaryGrid* grid : {&kernels::codebook_grid(bits),
                                                   static_cast<const kernels::BoundaryGrid*>(nullptr)}) {
          const size_t bytes = size_t(n) * bits / 8;
          std::vector<uint8_t> ia(n), want(bytes + 1, 0xA5), ib(n), got(bytes + 1, 0xA5);
          scalar.quantize(v.data(), 1.0f, bounds.data(), table.data(), nullptr, bits, ia.data(), nullptr, n);
          scalar.pack(ia.data(), n, bits, want.data());
          k.quantize_packed(v.data(), 1.0f, bounds.data(), table.data(), grid, bits, ib.data(), got.data(), n);
          ASSERT_EQ(want, got) << simd_name(level) << " bits " << bits << " n " << n
                               << (grid ? " grid" : " no grid");
        }
      }
    }
  }
#if TURBOKV_X86
  EXPECT_EQ(fused_somewhere, simd_supported(SimdLevel::kAvx2));  // the AVX2 level fuses
#endif
  (void)fused_somewhere;
}

#if TURBOKV_X86
namespace {

// XINUSE (xgetbv with ecx = 1): which state components are not in their initial state. Bit 2 is
// the upper halves of ymm0-15, which vzeroupper clears (writing a zmm register sets it too). Bit 7
// (zmm bits 256-511) is not used: a Sapphire Rapids Xeon reports it set even after vzeroupper,
// which the SDM allows (a 1 may be reported for a component in its initial state).
bool upper_halves_in_use() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(1));
  return (eax & (1u << 2)) != 0;
}

bool cpu_reports_xinuse() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid_count(0xD, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 2)) != 0;
}

TURBOKV_TARGET_AVX2 void clear_upper_halves() { _mm256_zeroupper(); }

}  // namespace

// Every kernel returns with the upper halves of the vector registers clear (vzeroupper), so the
// SSE-encoded code around it (everything compiled for the x86-64 baseline) pays no transition
// penalty. GCC leaves them dirty across a tail call into a scalar function and around helpers that
// take __m256 arguments; on a Zen 3 core that cost a 4-bit quantise-and-pack call 115 ns on top of
// its 30 (kernel_choices_avx2.md, round 13). Tails (n not a multiple of the width) are included.
TEST(SimdParity, KernelsReturnWithCleanUpperHalves) {
  if (!simd_supported(SimdLevel::kAvx2)) GTEST_SKIP() << "no AVX here";
  ASSERT_TRUE(cpu_reports_xinuse()) << "this CPU cannot report XINUSE (xgetbv ecx = 1)";
  clear_upper_halves();
  ASSERT_FALSE(upper_halves_in_use());
  const int d = 128;
  const auto x = test_util::gaussian_rows(8, 2 * d, 11);
  const auto& book = lloyd_max_codebook(4);
  std::vector<float> table(kernels::kMinTableSize * 16, 0.0f), bounds(table.size(), INFINITY);
  std::copy(book.centroids.begin(), book.centroids.end(), table.begin());
  std::copy(book.boundaries.begin(), book.boundaries.end(), bounds.begin());
  std::vector<float> out(8 * 2 * d), acc(8 * 2 * d, 0.0f), weights(8 * 32, 0.25f), q_scale(8, 0.01f);
  std::vector<uint8_t> idx(2 * d, 3), codes(64 * 2 * d, 0x5A);
  std::vector<int8_t> q8(8 * 2 * d, 3), table8(16, 5);
  std::vector<uint16_t> halves(64 * 2 * d, 0x3C00);
  for (SimdLevel level : simd_levels()) {
    const auto& k = kernels::kernel_set(level);
    int bits = 0;  // in the messages of the kernels that take a width
    auto check = [&](const char* kernel, int n) {
      EXPECT_FALSE(upper_halves_in_use()) << simd_name(level) << " " << kernel << " n " << n
                                     << (bits >= 1 && bits <= 8 ? " bits " + std::to_string(bits) : "");
      clear_upper_halves();
    };
    for (int n : {8, 13, 64, 128, 131}) {
      k.matvec_columns(x.data(), n, 7, x.data(), out.data());
      check("matvec_columns", n);
      (void)k.sum_squares(x.data(), n);
      check("sum_squares", n);
      k.to_half(x.data(), halves.data(), n);
      check("to_half", n);
      k.from_half(halves.data(), out.data(), n);
      check("from_half", n);
      std::vector<float> e(x.begin(), x.begin() + n);
      (void)k.exp_shifted(e.data(), n, 3.0f);
      check("exp_shifted", n);
      (void)k.scale_max(e.data(), n, 0.5f);
      check("scale_max", n);
      k.gemm(x.data(), n, x.data(), n, out.data(), n, 5, n, 7, false);
      check("gemm", n);
      for (bits = 1; bits <= 8; ++bits) {
        const auto& grid = kernels::codebook_grid(bits);
        k.quantize(x.data(), 1.0f, bounds.data(), table.data(), &grid, bits, idx.data(), out.data(), n);
        check("quantize", n);
        k.quantize(x.data(), 1.0f, bounds.data(), table.data(), &grid, bits, idx.data(), nullptr, n);
        check("quantize without residual", n);
        if (k.quantize_packed != nullptr) {
          k.quantize_packed(x.data(), 1.0f, bounds.data(), table.data(), &grid, bits, idx.data(),
                            codes.data(), n);
          check("quantize_packed", n);
        }
        if (k.encode_rows != nullptr) {  // two rows of 128 floats, table as the sign flips
          (void)k.encode_rows(x.data(), 2, d, d, bits, table.data(), 11.3f, 1e-30f, bounds.data(), grid, codes.data(), out.data());
          check("encode_rows", n);
        }
        k.pack(idx.data(), n, bits, codes.data());
        check("pack", n);
        k.unpack(codes.data(), n, bits, idx.data());
        check("unpack", n);
        (void)k.dot_lookup(x.data(), idx.data(), table.data(), bits, n);
        check("dot_lookup", n);
        k.axpy_lookup(0.5f, idx.data(), table.data(), bits, acc.data(), n);
        check("axpy_lookup", n);
      }
      (void)k.sign_dot(x.data(), codes.data(), n);
      check("sign_dot", n);
    }
    for (int dim : {16, 64, 96, 128}) {
      for (bits = 1; bits <= 8; ++bits) {
        const int64_t code_bytes = int64_t(dim) * bits / 8;
        for (int m : {1, 3, 4, 8}) {
          for (int64_t keys : {1, 5, 32}) {
            k.dot_packed(x.data(), m, codes.data(), code_bytes, keys, table.data(), bits, dim, out.data(), keys, {});
            check("dot_packed", dim);
            k.axpy_packed(weights.data(), keys, m, codes.data(), code_bytes, keys, table.data(), bits, dim,
                          acc.data());
            check("axpy_packed", dim);
            if (bits <= 4) {
              k.dot_packed_int8(q8.data(), q_scale.data(), m, codes.data(), code_bytes, keys, table8.data(),
                                0.1f, bits, dim, out.data(), keys, {});
              check("dot_packed_int8", dim);
              k.axpy_packed_int8(weights.data(), keys, m, codes.data(), code_bytes, keys, table8.data(), 0.1f,
                                 bits, dim, acc.data());
              check("axpy_packed_int8", dim);
            }
          }
        }
      }
      for (int m : {1, 4}) {
        k.dot_half(x.data(), m, halves.data(), 5, dim, out.data(), 5);
        check("dot_half", dim);
        k.axpy_half(weights.data(), 5, m, halves.data(), 5, dim, acc.data());
        check("axpy_half", dim);
      }
    }
    for (int n : {8, 16, 64, 128, 256}) {
      for (const float* pre : {static_cast<const float*>(nullptr), x.data()}) {
        k.fwht(x.data(), pre, pre, out.data(), n);
        check("fwht", n);
      }
    }
  }
}
#endif

// The levels this build runs are the ones its architecture has: on arm64 the suite above runs
// scalar and NEON (scripts/test_arm.sh, under qemu-user); on x86 scalar, AVX2 and AVX-512 as the
// CPU allows.
// Fused scores and values of 1-8-bit codes at every level against a double-precision sum over the
// table: on AVX-512 with VBMI the 3- and 5-8-bit codes take the byte-plane route (asserted), whose
// in-register unpacking, plane-order transpose and plane halves (bit 7 at 8 bits) a wrong index
// would break, and 5-bit scores vpermi2ps on indices cut from the rows by vpermb and vpsrlvd (a
// wrong shift or source byte for one code failed this test; 37 keys end with one alone); 1, 2
// and 4 bits the lane kernels, whose queries and accumulators are permuted in registers where
// head_dim is whole 16-byte chunks (4 bits: d = 64 ... 256; 2 bits: 64, 128, 256;
// 1 bit: 128, 256) and by scalar copies elsewhere (2 bits at 96, 1 bit at 64 and 96). Elsewhere
// the level's own route: at the AVX2 level 5-7-bit rows are read by pdep where it is fast
// (asserted), whose last 8-index group of a row loads the 8 bytes that end with it, and 2-3-bit
// scores and values go by vpermps on the rows except on Zen 1 (asserted), whose last group of 8
// codes loads the 4 bytes that end with it. Rows are padded past their packed bytes at d = 96
// and 256, so the stride is honoured, and end at their packed bytes elsewhere (d = 16 and 32 too); none has
// slack after the last row. At 4 queries the AVX2 float scores of byte planes (2-6 bits, d a
// multiple of 32) and of 8-bit or spread rows take keys two at a time (dot_two_keys_avx2): 37
// keys leave the last one to the one-key tiles.
TEST(SimdParity, PackedScoresAndValuesMatchTheTable) {
  std::mt19937 gen(11);
  std::normal_distribution<float> normal;
  for (SimdLevel level : supported_simd()) {
    const auto& k = kernels::kernel_set(level);
    const auto& scalar = kernels::kernel_set(SimdLevel::kScalar);
    if (level == SimdLevel::kAvx512) {
      for (int bits : {3, 5, 6, 7, 8}) EXPECT_EQ(kernels::planes_vbmi_fit(bits, 128), kernels::kHasAvx512Vbmi);
      EXPECT_FALSE(kernels::planes_vbmi_fit(4, 128));
      EXPECT_FALSE(kernels::planes_vbmi_fit(8, 96));
      std::cout << "3- and 5-8-bit codes at the AVX-512 level here: "
                << (kernels::kHasAvx512Vbmi ? "VBMI byte planes (5-bit scores: vpermi2ps)" : "AVX2 routes") << "\n";
    }
    if (level == SimdLevel::kAvx2) {  // 5-7-bit rows: pdep where it is fast, else unpacked
#if TURBOKV_X86
      for (int bits = 1; bits <= 8; ++bits) {
        EXPECT_EQ(kernels::rows_spread_by_pdep(bits, 128), bits >= 5 && bits <= 7 && !kernels::kPdepIsSlow) << bits;
      }
      EXPECT_FALSE(kernels::rows_spread_by_pdep(5, 40));
      std::cout << "5-7-bit codes at the AVX2 level here: "
                << (kernels::kPdepIsSlow ? "unpacked (pdep is slow)" : "read by pdep") << "\n";
      for (int bits = 1; bits <= 8; ++bits) {
        const bool permutes = (bits == 2 || bits == 3) && !kernels::kLaneSwapIsSlow;
        EXPECT_EQ(kernels::lookups_by_permutes(bits, 128), permutes) << bits;
      }
      EXPECT_FALSE(kernels::lookups_by_permutes(3, 40));
      EXPECT_FALSE(kernels::lookups_by_permutes(2, 40));
      std::cout << "2-3-bit float32 scores and values at the AVX2 level here: "
                << (kernels::kLaneSwapIsSlow ? "byte planes (lane swaps are slow)" : "vpermps on the rows") << "\n";
#endif
    }
    for (int bits = 1; bits <= 8; ++bits) {
     // 5-8 bits also with an antisymmetric table (every codebook is): signed planes at AVX-512
     // VBMI (8 bits) and at the AVX2 level (5 and 6 bits, head_dim a multiple of 32).
     for (bool antisymmetric : {false, true}) {
      if (antisymmetric && bits < 5) continue;
      std::vector<float> table(std::max(16, 1 << bits));
      for (size_t e = 0; e < table.size(); ++e) table[e] = std::ldexp(float(e) - 0.5f * float(table.size()), int(e % 5) - 9);
      const size_t half = size_t(1) << (bits - 1);
      if (antisymmetric) {
        for (size_t e = 0; e < half; ++e) table[half - 1 - e] = -table[half + e];
      }
      EXPECT_EQ(kernels::float_table_antisymmetric(table.data(), bits), antisymmetric) << bits;
      EXPECT_EQ(kernels::planes_vbmi_signed(table.data(), bits), TURBOKV_X86 && antisymmetric && bits == 8) << bits;
      for (int d : {16, 32, 48, 64, 80, 96, 112, 128, 256}) {
        const bool signed_avx2 = TURBOKV_X86 && antisymmetric && (bits == 5 || bits == 6) && d % 32 == 0 &&
                                 !kernels::kernel_routes().pdep_slow;
        EXPECT_EQ(kernels::planes_avx2_signed(table.data(), bits, d), signed_avx2) << bits << " " << d;
        const int pad = d == 96 || d == 256 ? 3 : 0;
        const int64_t code_bytes = int64_t(packed_bytes(bits, size_t(d))) + pad;
        for (int m : {1, 2, 3, 4, 5, 8}) {
          const int64_t n = 37;
          // No slack after the last row: a read past it shows under ASan.
          std::vector<uint8_t> idx(size_t(n) * d), codes(size_t(n * code_bytes), 0xA5);
          for (auto& v : idx) v = uint8_t(gen() % (1u << bits));
          for (int64_t j = 0; j < n; ++j) scalar.pack(idx.data() + j * d, d, bits, codes.data() + j * code_bytes);
          std::vector<float> q(size_t(m) * d), w(size_t(m) * n), scores(size_t(m) * n, -1.0f);
          for (auto& x : q) x = normal(gen);
          for (auto& x : w) x = normal(gen);
          std::vector<float> acc(size_t(m) * d);
          for (auto& x : acc) x = normal(gen);
          const std::vector<float> acc0 = acc;
          // With rows to prefetch beside the keys on every route (a hint: the same scores).
          k.dot_packed(q.data(), m, codes.data(), code_bytes, n, table.data(), bits, d, scores.data(), n,
                       kernels::RowsAhead{codes.data(), code_bytes});
          k.axpy_packed(w.data(), n, m, codes.data(), code_bytes, n, table.data(), bits, d, acc.data());
          const std::string where = std::string(simd_name(level)) + " bits " + std::to_string(bits) +
                                    " d " + std::to_string(d) + " m " + std::to_string(m);
          expect_table_products(q, w, acc0, idx, table, m, n, d, scores, acc, where + (antisymmetric ? " signed" : ""));
        }
      }
     }
    }
  }
  // The codebooks' own tables take the signed planes (8 bits at AVX-512 VBMI; 5 and 6 at AVX2).
  EXPECT_EQ(kernels::planes_vbmi_signed(lloyd_max_codebook(8).centroids.data(), 8), bool(TURBOKV_X86));
  EXPECT_FALSE(kernels::planes_vbmi_signed(lloyd_max_codebook(7).centroids.data(), 7));
  for (int bits = 5; bits <= 6; ++bits) {
    EXPECT_EQ(kernels::planes_avx2_signed(lloyd_max_codebook(bits).centroids.data(), bits, 128),
              TURBOKV_X86 && !kernels::kernel_routes().pdep_slow) << bits;
  }
}

TEST(SimdParity, SupportedLevelsMatchTheArchitecture) {
  const auto levels = supported_simd();
  ASSERT_EQ(levels.front(), SimdLevel::kScalar);
  ASSERT_EQ(levels.back(), detect_simd());
#if defined(__aarch64__)
  ASSERT_EQ(detect_simd(), SimdLevel::kNeon);
  ASSERT_EQ(levels.size(), 2u);
#else
  for (SimdLevel level : levels) ASSERT_NE(level, SimdLevel::kNeon);
  ASSERT_FALSE(simd_supported(SimdLevel::kNeon));
#endif
  for (SimdLevel level : levels) ASSERT_EQ(parse_simd(simd_name(level)), level);
}
