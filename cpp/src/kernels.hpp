// Internal: the hot loops, one scalar version and its SIMD twins per stage, chosen once per codec.
//
// Bit-identity contract: every kernel that decides a stored bit (sum_squares, fwht, matvec_columns,
// quantize, pack) performs the same IEEE operations in the same order at every SIMD level, so codes
// and norms never depend on the CPU. The whole library is built with -ffp-contract=off so the
// compiler cannot fuse a multiply and an add behind our back. Kernels that only produce floats for
// the caller (lookups, decode) may use FMA and differ in the last bits.
#pragma once
#include <cmath>
#include <cstdint>

#include "turbokv/simd.hpp"

#if defined(__x86_64__) || defined(__i386__)
#define TURBOKV_X86 1
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12's AVX-512 headers self-initialise undefined registers and then warn about it when the
// intrinsics are inlined into target("avx512f") functions (GCC bug 105593), so these two warnings
// are off for the kernel files; clang and other GCC versions keep them.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define TURBOKV_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2,f16c")))
#define TURBOKV_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,f16c")))
#else
#define TURBOKV_X86 0
#endif

namespace turbokv {
namespace kernels {

// The variant for a level: the AVX names are only evaluated (and only exist) on x86. The NEON
// level starts from the scalar variants and use_neon_kernels replaces those it has, by name.
#if TURBOKV_X86
#define TURBOKV_PICK(level, scalar, avx2, avx512) \
  ((level) == SimdLevel::kAvx512 ? (avx512) : (level) == SimdLevel::kAvx2 ? (avx2) : (scalar))
#else
#define TURBOKV_PICK(level, scalar, avx2, avx512) ((void)(level), (scalar))
#endif

struct BoundaryGrid;  // boundary_grid.hpp

// Prefetches every 64-byte line that [p, p + bytes) touches (p need not start one), by address:
// nothing is read.
inline void prefetch_lines(const void* p, int64_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p);
  const uintptr_t end = first + static_cast<uintptr_t>(bytes);
  for (uintptr_t line = first & ~uintptr_t{63}; line < end; line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line));
  }
}

// Rows the caller reads right after a score kernel (decode: the block's value codes). Row j, at
// rows + j * stride, is prefetched while key j is scored, so that its loads overlap the arithmetic:
// one burst of 256 prefetches before the scores waited on the line-fill buffers (kernel_choices
// round 18). A hint only: nothing is read through it. rows == nullptr: nothing is fetched.
struct RowsAhead {
  const uint8_t* rows = nullptr;
  int64_t stride = 0;
  void fetch(int64_t j) const {
    if (!rows) return;
    const uint8_t* row = rows + j * stride;
    for (int64_t offset = 0; offset < stride; offset += 64) __builtin_prefetch(row + offset);
  }
  // Rows j .. j + count - 1, each line they touch once: rows shorter than a line share lines, which
  // fetch(j) for each row would request once per row.
  void fetch_lines(int64_t j, int64_t count) const {
    if (rows) prefetch_lines(rows + j * stride, count * stride);
  }
  RowsAhead from(int64_t j) const { return rows ? RowsAhead{rows + j * stride, stride} : RowsAhead{}; }
  // Rows j .. j + count - 1 that lie below n (a kernel's own rows kKeysAhead on, every line).
  void fetch_below(int64_t j, int64_t count, int64_t n) const {
    for (int64_t k = j; k < n && k < j + count; ++k) fetch(k);
  }
};

// Keys ahead of the one being scored that a score kernel prefetches from its own rows: the
// hardware prefetchers left the key loads of a 256-key block waiting on memory (perf: a quarter of
// the AVX-512 int8 kernel's samples on them). 16 and 32 measured alike (kernel_choices round 18).
constexpr int64_t kKeysAhead = 16;
inline void fetch_key_ahead(const uint8_t* codes, int64_t code_bytes, int64_t j, int64_t n,
                            int64_t ahead = kKeysAhead) {
  if (j + ahead < n) __builtin_prefetch(codes + (j + ahead) * code_bytes);
}

// Tables handed to lookups and to quantize are padded to at least this many floats.
constexpr int kMinTableSize = 16;

struct KernelSet {
  SimdLevel level;
  // out = post * H (pre * in): unnormalised Walsh-Hadamard transform of n = 2^k >= 8 floats,
  // with optional elementwise scalings (nullptr = none); in and out may be the same array.
  void (*fwht)(const float* in, const float* pre, const float* post, float* out, int n);
  // y[r] = sum_c x[c] * columns[c * rows + r], accumulated in order of c (mul, then add).
  void (*matvec_columns)(const float* columns, int rows, int cols, const float* x, float* y);
  // Sum of x[i]^2 in 16 interleaved partial sums, folded pairwise (8, 4, 2, 1).
  float (*sum_squares)(const float* x, int n);
  // idx[i] = number of boundaries <= x[i] * scale (nearest centroid); when residual is not null,
  // residual[i] = x[i] * scale - centroids[idx[i]]. boundaries has 2^bits - 1 entries. grid, when
  // not null, is BoundaryGrid::build of these boundaries (a faster route to the same indices).
  void (*quantize)(const float* x, float scale, const float* boundaries, const float* centroids,
                   const BoundaryGrid* grid, int bits, uint8_t* idx, float* residual, int n);
  // pack(quantize(x)) without a residual, in one pass where the level fuses the two (same bytes;
  // idx is scratch for what it does not fuse); null where it does not: call quantize, then pack.
  void (*quantize_packed)(const float* x, float scale, const float* boundaries, const float* centroids,
                          const BoundaryGrid* grid, int bits, uint8_t* idx, uint8_t* out, int n);
  // Rows [0, n) of x (row_stride floats apart) encoded row after row under the Hadamard rotation
  // with sign flips pre (Rotation::scaled_signs): codes + row * (d * bits / 8) and norms[row] =
  // sqrt(sum_squares(row)) get what sum_squares, fwht(pre) and quantize_packed with scale
  // sqrt_dim / norm write (boundaries and grid as for quantize). AVX-512 holds each row in
  // registers from its first load to its packed bytes; AVX2 runs the stage kernels; both issue the
  // next row's norm before this row's transform. Stops before the first row whose sum of squares
  // is outside [min_sum_squares, FLT_MAX] (the caller rescales it) and returns how many rows it
  // encoded: 0 where (bits, d) is not one it takes (encode_rows_fit). Null where the level has none.
  int64_t (*encode_rows)(const float* x, int64_t n, int64_t row_stride, int d, int bits,
                         const float* pre, float sqrt_dim, float min_sum_squares, const float* boundaries,
                         const BoundaryGrid& grid, uint8_t* codes, float* norms);
  // Dense little-endian bit stream: index i occupies bits [i*bits, (i+1)*bits).
  void (*pack)(const uint8_t* idx, int n, int bits, uint8_t* out);
  void (*unpack)(const uint8_t* packed, int n, int bits, uint8_t* idx);
  // sum_i q[i] * table[idx[i]]
  float (*dot_lookup)(const float* q, const uint8_t* idx, const float* table, int bits, int n);
  // acc[i] += w * table[idx[i]]
  void (*axpy_lookup)(float w, const uint8_t* idx, const float* table, int bits, float* acc, int n);
  // sum_i (bit i of signs set ? v[i] : -v[i])
  float (*sign_dot)(const float* v, const uint8_t* signs, int n);
  // out[a * out_stride + j] = sum_i q_a[i] * table[index i of key j] for m queries of d floats
  // (query a at q + a * d) against n keys of packed b-bit codes, key j at codes + j * code_bytes.
  // The fused-score inner loop: codes are read packed, never unpacked to memory.
  // ahead: rows prefetched beside the keys (RowsAhead).
  void (*dot_packed)(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                     const float* table, int bits, int d, float* out, int64_t out_stride,
                     RowsAhead ahead);
  // acc_a[i] += sum_j w[a * w_stride + j] * table[index i of key j], acc_a at acc + a * d:
  // the value side of fused attention, also straight from packed bytes.
  void (*axpy_packed)(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                      int64_t code_bytes, int64_t n, const float* table, int bits, int d,
                      float* acc);
  // out[a * out_stride + j] = float(sum_i q8_a[i] * table8[index i of key j]) * (q_scale[a] *
  // table_scale): dot_packed with an int8 query and the centroids rounded to kInt8CentroidTop
  // (quantize_int8), summed exactly, so bit-identical at every level. bits <= 4; table8 holds 16
  // entries in +-kInt8CentroidTop (else std::invalid_argument at every level).
  // ahead: rows prefetched beside the keys (RowsAhead).
  void (*dot_packed_int8)(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                          int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                          int bits, int d, float* out, int64_t out_stride, RowsAhead ahead);
  // out[a * out_stride + j] = float(sum_i q16_a[i] * table16[index i of key j]) * (q_scale[a] *
  // table_scale): the integer scores of 5-8-bit keys (dot_int16_kernels.cpp), query and centroids
  // rounded to int16_top(d) (quantize_int16) so that every sum fits int32 and is exact, hence
  // bit-identical at every level. bits 5..8; table16 holds 256 int32 entries (zero past 2^bits).
  void (*dot_packed_int16)(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int32_t* table16, float table_scale,
                           int bits, int d, float* out, int64_t out_stride, RowsAhead ahead);
  // axpy_packed with the weights rounded to 7-bit bytes per group of kInt8ValueGroup tokens and
  // the centroids rounded to kInt8CentroidTop (quantize_int8), summed exactly
  // (axpy_int8_kernels.cpp), so bit-identical at every level. Weights must be >= 0 (softmax
  // weights); bits <= 4; table8 holds 16 entries in +-kInt8CentroidTop (else std::invalid_argument).
  void (*axpy_packed_int8)(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                           int bits, int d, float* acc);
  // out[a * out_stride + j] = <q_a, float(v_j)> for n float16 vectors v_j = halves + j * d.
  void (*dot_half)(const float* q, int m, const uint16_t* halves, int64_t n, int d, float* out,
                   int64_t out_stride);
  // acc_a += sum_j w[a * w_stride + j] * float(v_j).
  void (*axpy_half)(const float* w, int64_t w_stride, int m, const uint16_t* halves, int64_t n,
                    int d, float* acc);
  // Round to nearest even float16, and back (exact).
  void (*to_half)(const float* x, uint16_t* out, int64_t n);
  void (*from_half)(const uint16_t* x, float* out, int64_t n);
  // x[i] = exp(x[i] - shift), returning the sum; -inf maps to 0. SIMD versions: a degree-6
  // polynomial after range reduction, relative error below 4e-7 (tested against std::exp), for
  // x[i] - shift up to 88 (a softmax row's are at most 0; AVX2 gives inf from 88.03 on).
  float (*exp_shifted)(float* x, int64_t n, float shift);
  // x[i] *= scale, returning the maximum (-inf for n = 0).
  float (*scale_max)(float* x, int64_t n, float scale);
  // out[a * out_stride + j] = w[a * w_stride + j] * (v[j] * c) for a < m, j < n (out may be w):
  // scores times their keys' norms (c = 1), softmax weights times their values' norms / sqrt(d).
  // The same two products per element at every level.
  void (*scale_rows)(const float* w, int64_t w_stride, int m, const float* v, float c, int64_t n,
                     float* out, int64_t out_stride);
  // c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum_k a[i * lda + k] * b[k * ldb + j]
  // for i < m, j < n, k < depth: the dense products over decoded prefill tiles.
  void (*gemm)(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
               int m, int n, int depth, bool accumulate);
  // Rows of d floats (x, rows x d) each rounded as quantize_int8 (top 127) or quantize_int16 (top)
  // rounds it into out (rows x d), scales[r] its returned scale: the rotated queries of int8 and
  // int16 scores, the same integers and scales at every level.
  void (*quantize_rows_int8)(const float* x, int64_t rows, int d, int8_t* out, float* scales);
  void (*quantize_rows_int16)(const float* x, int64_t rows, int d, int top, int16_t* out, float* scales);
};

// 3- and 5-8-bit codes by byte planes on AVX-512 with VBMI (planes_vbmi_kernels.cpp):
// dot_packed and axpy_packed of the AVX-512 level hand over to these where
// planes_vbmi_fit(bits, d) holds (this CPU has VBMI, those widths, head_dim a multiple of 64).
// Same contracts as those two; defined on x86 only (fit is false elsewhere).
extern const bool kHasAvx512Vbmi;  // this CPU has AVX-512 VBMI (false off x86); set before main
bool planes_vbmi_fit(int bits, int d);
// Whether those kernels read an 8-bit table as signed magnitudes (half the lookups): its lower
// half is its upper half negated, bit for bit (table[127 - k] == -table[128 + k], as every
// Lloyd-Max codebook); false for other widths and off x86.
bool planes_vbmi_signed(const float* table, int bits);
void dot_planes_vbmi(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                     const float* table, int bits, int d, float* out, int64_t out_stride,
                     RowsAhead ahead);
void axpy_planes_vbmi(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                      int64_t code_bytes, int64_t n, const float* table, int bits, int d, float* acc);
// 3 bits of the above (three_bit_float_vbmi_kernels.cpp): 16 coordinates per vpmultishiftqb and
// vpermps, in coordinate order; head_dim a multiple of 64, table of at least 8 floats.
void dot_three_bit_lanes_vbmi(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                              const float* table, int d, float* out, int64_t out_stride, RowsAhead ahead);
void axpy_three_bit_lanes_vbmi(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                               int64_t code_bytes, int64_t n, const float* table, int d, float* acc);

// Int8 scores of 1-4-bit keys on AVX-512 with VNNI (dot_int8_vnni_kernels.cpp): the AVX-512
// level's int8 kernel hands over to it where int8_vnni_fit(bits, code_bytes, d) holds (this CPU
// has VNNI; 1, 2, 4 bits on packed lanes: whole indices per byte, rows of whole 16-byte blocks; 3
// bits where the CPU also has VBMI and head_dim is a multiple of 32, read as the 4-bit rows of their
// indices: three_bit_nibbles_vbmi.hpp). Same contract as KernelSet::dot_packed_int8; defined on x86
// only (fit is false elsewhere).
extern const bool kHasAvx512Vnni;  // this CPU has AVX-512 VNNI (false off x86); set before main
bool int8_vnni_fit(int bits, int64_t code_bytes, int d);
void dot_packed_int8_vnni(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                          int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                          int bits, int d, float* out, int64_t out_stride, RowsAhead ahead);

// Int8 values (axpy_int8_kernels.cpp): tokens per weight scale, counted from a call's first token.
// 32: each group's int32 sums of a query meet their float epilogue (convert, scale, add) half as
// often as at 16. Int8 decode at 32K, 12 layers, one thread, AVX2 level with AVX-VNNI, model-167
// VM, both A/B orders: K2V2 0.95x the time, K4V4 0.94x; 64 tokens gained no more (K2V2 0.95x)
// (kernel_choices_avx2.md round 61). A multiple of 16 (the rounding kernels' stores).
constexpr int kInt8ValueGroup = 32;
// A group whose largest weight is below this counts as all zeros (scale 0), so that 127 / max stays
// finite (a denormal max made it infinite and the rounding undefined; found by
// fuzz_packed_readers). Such a group adds nothing instead of at most 32 x 2^-120 x |centroid|.
constexpr float kSmallestGroupMax = 0x1p-120f;
// out[j] = nearest(w[j] * 127 / max w) for the count <= kInt8ValueGroup weights of one group (all
// finite and >= 0, else std::invalid_argument), returning (max w / 127) * table_scale (0 if max w is
// below kSmallestGroupMax, and out all zeros): the group's scale.
float quantize_group_weights(const float* w, int64_t count, float table_scale, uint8_t* out);
// What every level's int8 value kernel throws (std::invalid_argument) for a negative, NaN or
// infinite weight, before adding anything.
extern const char* const kBadWeights;
// The AVX-512 level's int8 value kernel by vpdpbusd (axpy_int8_vnni_kernels.cpp) where
// int8_values_vnni_fit holds (VNNI and VBMI; 1, 2 or 4 bits on packed lanes, 3 bits at head_dim a
// multiple of 32 as 4-bit rows); elsewhere the AVX2 kernel. Same contract as
// KernelSet::axpy_packed_int8; x86 only (fit is false elsewhere).
bool int8_values_vnni_fit(int bits, int64_t code_bytes, int d);
// Where that kernel transposes each step of 4 rows in registers (4-bit rows); the others go
// through a transposed copy in memory (transpose_rows).
bool int8_values_vnni_in_registers(int bits, int64_t code_bytes, int d);
void axpy_packed_int8_vnni(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                           int bits, int d, float* acc);

// Int8 scores of 3-bit keys on AVX2 (AVX-512 shares that kernel): each group of 16 indices is
// taken apart in registers from its 6 packed bytes (unpack3_x16_avx2) where rows hold at least
// 8 bytes and head_dim is a multiple of 32; other shapes unpack each key to index bytes first.
// The float32 kernels unpack 3-bit keys first everywhere: in registers they were 6% (scores) and
// 10% (values) slower on a Zen 3 core, int8 scores 10% faster (kernel_choices_avx2.md, round 12).
inline bool int8_three_bit_in_registers(int64_t code_bytes, int d) {
  return code_bytes >= 8 && d % 32 == 0;
}
// Where pdep is fast (!kPdepIsSlow) the AVX2 int8 kernels rewrite 3-bit rows as nibble rows also
// at head_dims 16 more than a multiple of 32 (48, 80, 112), with a half last chunk
// (kernel_choices_avx2.md, round 30).
inline bool int8_three_bit_by_pdep(int64_t code_bytes, int d) {
  return code_bytes >= 8 && d % 16 == 0;
}

// The kernels for one level; throws if the CPU lacks it.
const KernelSet& kernel_set(SimdLevel level);

// The CPU facts the kernels pick their routes by, each set once before main (all false off x86):
// for benchmark reports and bug reports, so that a figure says which routes produced it. Throws
// std::invalid_argument, as kernel_set does, where TURBOKV_GATHERS holds a value it cannot take.
struct KernelRoutes {
  bool avx512_vnni;     // int8 sums by 512-bit vpdpbusd (kHasAvx512Vnni)
  bool avx512_vbmi;     // byte planes and 3-bit rows by vpermb / vpmultishiftqb (kHasAvx512Vbmi)
  bool avx_vnni;        // the AVX2 level's int8 sums by 256-bit vpdpbusd (kHasAvxVnni)
  bool gathers_slow;    // 5-8-bit lookups by scalar loads instead of vgatherdps (AMD Zen 1-4, GDS
                        // microcode mitigation; TURBOKV_GATHERS overrides: gather_speed.hpp)
  bool gds_mitigation;  // Linux reports Intel's Gather Data Sampling microcode mitigation
  bool pdep_slow;       // 3- and 5-7-bit rows taken apart by SIMD instead of pdep (Zen 1-2)
  bool lane_swap_slow;  // the FWHT without vperm2f128 (Zen 1)
};
KernelRoutes kernel_routes();

// Per-stage selectors, each defined in the file that holds that stage's variants.
using FwhtFn = void (*)(const float*, const float*, const float*, float*, int);
using MatvecFn = void (*)(const float*, int, int, const float*, float*);
using SumSquaresFn = float (*)(const float*, int);
using QuantizeFn = void (*)(const float*, float, const float*, const float*, const BoundaryGrid*, int,
                            uint8_t*, float*, int);
using PackFn = void (*)(const uint8_t*, int, int, uint8_t*);
using QuantizePackedFn = void (*)(const float*, float, const float*, const float*, const BoundaryGrid*,
                                  int, uint8_t*, uint8_t*, int);
using UnpackFn = void (*)(const uint8_t*, int, int, uint8_t*);
using EncodeRowsFn = int64_t (*)(const float*, int64_t, int64_t, int, int, const float*, float, float,
                                 const float*, const BoundaryGrid&, uint8_t*, float*);
using DotLookupFn = float (*)(const float*, const uint8_t*, const float*, int, int);
using AxpyLookupFn = void (*)(float, const uint8_t*, const float*, int, float*, int);
using SignDotFn = float (*)(const float*, const uint8_t*, int);
using DotPackedFn = void (*)(const float*, int, const uint8_t*, int64_t, int64_t, const float*, int,
                             int, float*, int64_t, RowsAhead);

FwhtFn select_fwht(SimdLevel level);
// The AVX2 transform with its 4-apart butterflies on 128-bit halves (true) or by vperm2f128
// (false): select_fwht picks per CPU (kLaneSwapIsSlow), the tests run both; nullptr off x86.
FwhtFn fwht_avx2_variant(bool halves);
MatvecFn select_matvec_columns(SimdLevel level);
SumSquaresFn select_sum_squares(SimdLevel level);
QuantizeFn select_quantize(SimdLevel level);
QuantizePackedFn select_quantize_packed(SimdLevel level);  // null: not fused
EncodeRowsFn select_encode_rows(SimdLevel level);          // null: no level-wide fusion
EncodeRowsFn select_encode_rows_avx2();                    // quantize_kernels.cpp; null off x86
// The AVX-512 level's 6-8-bit grid lookups by gathers, which its quantize and encode_rows take only
// where gathers are fast (kGathersAreSlow: else the AVX2 level's scalar loads), for tests of both
// routes on any AVX-512 CPU; null off x86.
QuantizeFn select_quantize_avx512_gathers();
EncodeRowsFn select_encode_rows_avx512_gathers();
// Whether this level's encode_rows takes (bits, d): head_dim 64, 128 or 256, at AVX-512 2, 4 or 8
// bits, at AVX2 4 or 8.
bool encode_rows_fit(SimdLevel level, int bits, int d);
PackFn select_pack(SimdLevel level);
UnpackFn select_unpack(SimdLevel level);
DotLookupFn select_dot_lookup(SimdLevel level);
AxpyLookupFn select_axpy_lookup(SimdLevel level);
SignDotFn select_sign_dot(SimdLevel level);
DotPackedFn select_dot_packed(SimdLevel level);
using DotPackedInt8Fn = void (*)(const int8_t*, const float*, int, const uint8_t*, int64_t, int64_t,
                                 const int8_t*, float, int, int, float*, int64_t, RowsAhead);
DotPackedInt8Fn select_dot_packed_int8(SimdLevel level);
// The AVX2 level's int8 kernel runs with AVX-VNNI (256-bit vpdpbusd) where the CPU has it
// (kHasAvxVnni; false off x86), and reads 3-bit keys as nibble rows by pdep or as index bytes by
// SIMD (the level picks by kPdepIsSlow); each variant, for tests (nullptr off x86).
extern const bool kHasAvxVnni;
// How the AVX2 level's integer kernels (int8 scores and values, int16 scores) sum byte and word
// products: vpmaddubsw / vpmaddwd (kNone), AVX-VNNI's 256-bit vpdpbusd / vpdpwssd (kVex: what the
// level runs where the CPU has it), or the same instructions EVEX-encoded (kEvex: AVX-512 VL and
// VNNI). kEvex runs kVex's code on AVX-512 machines without AVX-VNNI, so that tests there (as on
// CI) cover what AVX-VNNI laptops run; no level picks it. vnni_form_runs: this CPU can run it.
enum class VnniForm { kNone, kVex, kEvex };
// 0 in test builds made without kVex and kEvex (CMake's TURBOKV_VNNI_FORMS=OFF, for CPUs that run
// neither): their variants are nullptr, vnni_form_runs says false, and the level takes kNone.
#ifndef TURBOKV_VNNI_FORMS
#define TURBOKV_VNNI_FORMS 1
#endif
bool vnni_form_runs(VnniForm form);
// The form the AVX2 level takes: kVex where the CPU has AVX-VNNI, else kNone; a build with
// TURBOKV_AVX2_EVEX_VNNI defined (for timing only: bench/ab/run.sh's AB_HEAD_FLAGS) takes kEvex on
// AVX-512 VNNI hosts without AVX-VNNI, to time there what an AVX-VNNI machine's AVX2 level runs;
// one with TURBOKV_AVX2_PLAIN takes kNone, what AMD Zen 1-4 run.
extern const VnniForm kAvx2VnniForm;
DotPackedInt8Fn dot_packed_int8_avx2_variant(VnniForm vnni, bool pdep);
// out[i] = round(x[i] * top / max|x|), returning max|x| / top (0 and all zeros for x = 0; 1 <= top
// <= 127): the int8 form of a rotated query (top 127) or of a codebook, shared by every level.
float quantize_int8(const float* x, int n, int8_t* out, int top = 127);
// The magnitude int8 scores and values round centroids to. With |c| <= 63 plain AVX2 takes c + 64
// as pmaddubsw's unsigned operand and the query bytes as they are (2 * 127^2 < 2^15, no
// saturation; no per-query sign step, a third of the scores' multiply-port work on Zen 3), and
// adds two steps of value products in int16 before widening (2 * 2 * 127 * 63 < 2^15; kernel_choices
// round 28). Its error, weighted by how often each centroid occurs: 0.56% of the 4-bit codec's own
// squared error (0.34% at +-127), 0.14% at 3 bits, nil at 1-2.
constexpr int kInt8CentroidTop = 63;
// Throws std::invalid_argument unless the 16 entries of table8 lie in +-kInt8CentroidTop.
void require_int8_centroids(const int8_t* table8);
// The integer magnitude that queries and centroids of head_dim d are rounded to for int16 scores:
// the largest t with d * t^2 < 2^31 (4095 at d = 128), so that no partial sum overflows int32.
int int16_top(int d);
// out[i] = round(x[i] * top / max|x|), returning max|x| / top (0 and all zeros for x = 0); the
// rounding of quantize_int8 with another top (1 <= top <= 32767).
float quantize_int16(const float* x, int n, int top, int16_t* out);
// How quantize_int8 and quantize_int16 round a row whose largest magnitude is top (> 0): every
// level's row kernel (KernelSet::quantize_rows_int8 / _int16) multiplies and rounds with these
// same floats, so the integers agree bit for bit.
struct RowRounding {
  float pre;    // 2^64 where top < 1e-30 (top_int / top would overflow; exact there), else 1
  float inv;    // top_int / (top * pre)
  float limit;  // top_int
};
RowRounding row_rounding(float top, int top_int);
// ((x * pre) * inv) to the nearest integer, ties to even: adding and subtracting 1.5 * 2^23 does
// that for |v| < 2^22 in the default rounding mode, as lrint does, without a libm call per element
// (one was 1.4% of K4V4 int8 decode at a 1K context; the build's -ffp-contract=off keeps the
// product rounded before the add). A finite row never leaves +-limit; a non-finite coordinate
// (which the Python API refuses; C++ callers may pass one) rounds to 0 instead of reaching an
// undefined cast (found by fuzz_packed_readers): NaN, and an infinity, whose row has inv 0.
inline float round_scaled(float x, const RowRounding& r) {
  constexpr float kRound = 12582912.0f;
  float v = ((x * r.pre) * r.inv + kRound) - kRound;
  if (!(std::fabs(v) <= r.limit)) v = v > 0.0f ? r.limit : v < 0.0f ? -r.limit : 0.0f;
  return v;
}
using DotPackedInt16Fn = void (*)(const int16_t*, const float*, int, const uint8_t*, int64_t, int64_t,
                                  const int32_t*, float, int, int, float*, int64_t, RowsAhead);
DotPackedInt16Fn select_dot_packed_int16(SimdLevel level);
// How the AVX2 int16 kernel looks centroids up: gathers, scalar loads, or vpshufb on byte planes
// of the magnitudes where the table is antisymmetric (int16_shuffle_fits; else gathers).
enum class Int16Lookup { kGather, kLoads, kShuffle };
// Whether a table of 2^bits int16 centroids (5-8 bits) takes the shuffle route: antisymmetric
// (table[half - 1 - k] == -table[half + k], as every Lloyd-Max codebook) with the upper half in
// 0 .. 32767.
bool int16_shuffle_fits(const int32_t* table, int bits);
// The lookup the AVX2 level's int16 kernel takes for keys of `bits` (5-8) with a fitting table,
// scoring m queries per call.
Int16Lookup int16_avx2_lookup(int bits, int m);
// The AVX2 level's int16 kernel with and without AVX-VNNI (vpdpwssd), by each lookup (the level
// picks the shuffle route), for tests (nullptr off x86); and whether the AVX-512 level takes its
// byte-plane kernel (VBMI and VNNI, head_dim a multiple of 64).
DotPackedInt16Fn dot_packed_int16_avx2_variant(VnniForm vnni, Int16Lookup lookup);
bool int16_planes_fit(int d);
// That kernel (planes_vbmi_kernels.cpp): same contract as KernelSet::dot_packed_int16; x86 only.
void dot_planes_int16_vbmi(const int16_t* q16, const float* q_scale, int m, const uint8_t* codes,
                           int64_t code_bytes, int64_t n, const int32_t* table16, float table_scale,
                           int bits, int d, float* out, int64_t out_stride, RowsAhead ahead);
using AxpyPackedFn = void (*)(const float*, int64_t, int, const uint8_t*, int64_t, int64_t,
                              const float*, int, int, float*);
// Whether the AVX2 rows route (5-7-bit codes below AVX-512 VBMI) reads codes of this width and
// head_dim from their packed bytes by pdep rather than unpacking them (false off x86).
bool rows_spread_by_pdep(int bits, int d);
// Whether the AVX2 level's float32 scores and values of these codes look their centroids up by
// vpermps on the packed rows (2 and 3 bits, head_dim a multiple of 16, lane-crossing permutes
// fast: not Zen 1; false off x86).
bool lookups_by_permutes(int bits, int d);
// Whether a table of 2^bits floats is its upper half negated, bit for bit:
// table[half - 1 - k] == -table[half + k] (every Lloyd-Max codebook).
bool float_table_antisymmetric(const float* table, int bits);
// Whether the AVX2 level reads 5- and 6-bit codes (float32 scores and values) by byte planes of
// the table's magnitudes: an antisymmetric table, head_dim a multiple of 32, where pdep is fast
// (false off x86 and for other widths).
bool planes_avx2_signed(const float* table, int bits, int d);
// The AVX2 level's float32 kernels for 3-bit rows at head_dim a multiple of 32 (32-wide byte
// planes), the indices taken apart by pdep or by SIMD (the level picks by kPdepIsSlow), for tests:
// they refuse other widths and shapes (nullptr off x86).
DotPackedFn dot_three_bit_planes32_variant(bool pdep);
AxpyPackedFn axpy_three_bit_planes32_variant(bool pdep);
// The AVX2 level's float32 dot_packed / axpy_packed with the vpermps routes (2- and 3-bit scores
// and values) on or off (the level: on unless lane swaps are slow, Zen 1), for tests of both
// on any AVX2 CPU (nullptr off x86).
DotPackedFn dot_packed_avx2_lane_variant(bool permutes);
AxpyPackedFn axpy_packed_avx2_lane_variant(bool permutes);
using AxpyPackedInt8Fn = void (*)(const float*, int64_t, int, const uint8_t*, int64_t, int64_t,
                                  const int8_t*, float, int, int, float*);
AxpyPackedInt8Fn select_axpy_packed_int8(SimdLevel level);
// The AVX2 level's int8 value kernel without and with AVX-VNNI, 3-bit rows spread to nibbles by
// pdep or by SIMD (the level picks by kPdepIsSlow), for tests (nullptr off x86).
AxpyPackedInt8Fn axpy_packed_int8_avx2_variant(VnniForm vnni, bool pdep);
using DotHalfFn = void (*)(const float*, int, const uint16_t*, int64_t, int, float*, int64_t);
using AxpyHalfFn = void (*)(const float*, int64_t, int, const uint16_t*, int64_t, int, float*);
using ToHalfFn = void (*)(const float*, uint16_t*, int64_t);
using FromHalfFn = void (*)(const uint16_t*, float*, int64_t);
AxpyPackedFn select_axpy_packed(SimdLevel level);
using ExpShiftedFn = float (*)(float*, int64_t, float);
using ScaleMaxFn = float (*)(float*, int64_t, float);
ExpShiftedFn select_exp_shifted(SimdLevel level);
ScaleMaxFn select_scale_max(SimdLevel level);
using ScaleRowsFn = void (*)(const float*, int64_t, int, const float*, float, int64_t, float*, int64_t);
ScaleRowsFn select_scale_rows(SimdLevel level);
using GemmFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int, int, int,
                        bool);
GemmFn select_gemm(SimdLevel level);
using QuantizeRowsInt8Fn = void (*)(const float*, int64_t, int, int8_t*, float*);
using QuantizeRowsInt16Fn = void (*)(const float*, int64_t, int, int, int16_t*, float*);
QuantizeRowsInt8Fn select_quantize_rows_int8(SimdLevel level);
QuantizeRowsInt16Fn select_quantize_rows_int16(SimdLevel level);
DotHalfFn select_dot_half(SimdLevel level);
AxpyHalfFn select_axpy_half(SimdLevel level);
ToHalfFn select_to_half(SimdLevel level);
FromHalfFn select_from_half(SimdLevel level);

// Replaces the fields of k that have NEON variants (neon_kernels.cpp; a no-op off arm64).
void use_neon_kernels(KernelSet& k);

}  // namespace kernels
}  // namespace turbokv
