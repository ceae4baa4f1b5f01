// arm64 NEON variants. The stages that decide stored bits (fwht, sum_squares, matvec_columns,
// quantize) repeat the scalar reference's IEEE operations in its order, so codes and norms are
// bit-identical to scalar, AVX2 and AVX-512 (kernels.hpp). The fused dot/axpy on packed codes
// unpack and look each key up once, then run 4-wide multiply-adds for every query. Int8 scores,
// the softmax rows (exp_shifted, scale_max) and the prefill tiles' product (gemm) have their NEON
// twins beside the AVX2 ones (dot_int8_kernels.cpp, exp_kernels.cpp, gemm_kernels.cpp). Kernels
// neither here nor there (pack, lookups, float16) stay scalar for now.
#include "boundary_grid.hpp"
#include "kernels.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstring>
#include <vector>

namespace turbokv {
namespace kernels {
namespace {

// One butterfly stage of span h < 4 inside each 4-float vector, as (a + b, a - b).
float32x4_t butterflies_within_neon(float32x4_t x) {
  // h = 1: [x0 + x1, x0 - x1, x2 + x3, x2 - x3]
  float32x4_t a = vtrn1q_f32(x, x), b = vtrn2q_f32(x, x);
  x = vtrn1q_f32(vaddq_f32(a, b), vsubq_f32(a, b));
  // h = 2: [x0 + x2, x1 + x3, x0 - x2, x1 - x3]
  a = vcombine_f32(vget_low_f32(x), vget_low_f32(x));
  b = vcombine_f32(vget_high_f32(x), vget_high_f32(x));
  return vcombine_f32(vget_low_f32(vaddq_f32(a, b)), vget_high_f32(vsubq_f32(a, b)));
}

void fwht_neon(const float* in, const float* pre, const float* post, float* out, int n) {
  if (n < 4) return select_fwht(SimdLevel::kScalar)(in, pre, post, out, n);
  for (int i = 0; i < n; i += 4) {
    const float32x4_t v = pre ? vmulq_f32(vld1q_f32(in + i), vld1q_f32(pre + i)) : vld1q_f32(in + i);
    vst1q_f32(out + i, butterflies_within_neon(v));
  }
  for (int h = 4; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; j += 4) {
        const float32x4_t a = vld1q_f32(out + j), b = vld1q_f32(out + j + h);
        vst1q_f32(out + j, vaddq_f32(a, b));
        vst1q_f32(out + j + h, vsubq_f32(a, b));
      }
    }
  }
  if (post) {
    for (int i = 0; i < n; i += 4) vst1q_f32(out + i, vmulq_f32(vld1q_f32(out + i), vld1q_f32(post + i)));
  }
}

// Lane j of 16 accumulates x[i]^2 for i = j (mod 16); the tail continues the same lanes, and the
// fold is the scalar one (reduce_kernels.cpp).
float sum_squares_neon(const float* x, int n) {
  float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 4; ++k) {
      const float32x4_t v = vld1q_f32(x + i + 4 * k);
      acc[k] = vaddq_f32(acc[k], vmulq_f32(v, v));
    }
  }
  float lanes[16];
  for (int k = 0; k < 4; ++k) vst1q_f32(lanes + 4 * k, acc[k]);
  for (; i < n; ++i) lanes[i % 16] += x[i] * x[i];
  for (int width = 8; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = lanes[j] + lanes[j + width];
  }
  return lanes[0];
}

// y[r] accumulates x[c] * column_c[r] in order of c, multiply then add (no fused multiply-add).
// Rows [r0, r0 + 4 * kRegs) with kRegs independent accumulators (one accumulator waited on its
// own adds: the AVX2 twin took 3.5x longer at d = 96 that way; not timed on Arm).
template <int kRegs>
void matvec_block_neon(const float* columns, int rows, int cols, const float* x, float* y, int r0) {
  float32x4_t acc[kRegs];
  for (int k = 0; k < kRegs; ++k) acc[k] = vdupq_n_f32(0.0f);
  for (int c = 0; c < cols; ++c) {
    const float32x4_t xc = vdupq_n_f32(x[c]);
    const float* col = columns + static_cast<int64_t>(c) * rows + r0;
    for (int k = 0; k < kRegs; ++k) acc[k] = vaddq_f32(acc[k], vmulq_f32(xc, vld1q_f32(col + 4 * k)));
  }
  for (int k = 0; k < kRegs; ++k) vst1q_f32(y + r0 + 4 * k, acc[k]);
}

void matvec_columns_neon(const float* columns, int rows, int cols, const float* x, float* y) {
  int r = 0;
  for (; r + 32 <= rows; r += 32) matvec_block_neon<8>(columns, rows, cols, x, y, r);
  if (r + 16 <= rows) { matvec_block_neon<4>(columns, rows, cols, x, y, r); r += 16; }
  if (r + 8 <= rows) { matvec_block_neon<2>(columns, rows, cols, x, y, r); r += 8; }
  if (r + 4 <= rows) { matvec_block_neon<1>(columns, rows, cols, x, y, r); r += 4; }
  for (; r < rows; ++r) {
    float acc = 0.0f;
    for (int c = 0; c < cols; ++c) acc += x[c] * columns[static_cast<int64_t>(c) * rows + r];
    y[r] = acc;
  }
}

// 5-8 bits: the boundary grid (boundary_grid.hpp). The cell is computed 4 lanes at a time with
// BoundaryGrid::cell's operations in its order (truncation of a non-negative float, as its cast);
// each lane then reads its 8-byte cell, one load instead of 8 dependent search steps.
void quantize_grid_neon(const float* x, float32x4_t vscale, const BoundaryGrid& grid,
                        const float* centroids, uint8_t* idx, float* residual, int n) {
  const float32x4_t origin = vdupq_n_f32(grid.origin), inv_width = vdupq_n_f32(grid.inv_width);
  const float32x4_t last = vdupq_n_f32(static_cast<float>(grid.cells - 1)), zero = vdupq_n_f32(0.0f);
  for (int i = 0; i + 4 <= n; i += 4) {
    const float32x4_t v = vmulq_f32(vld1q_f32(x + i), vscale);
    const float32x4_t t = vminq_f32(vmaxq_f32(vmulq_f32(vsubq_f32(v, origin), inv_width), zero), last);
    int32_t cells[4];
    float values[4];
    vst1q_s32(cells, vcvtq_s32_f32(t));
    vst1q_f32(values, v);
    for (int k = 0; k < 4; ++k) {
      const GridCell& cell = grid.table[cells[k]];
      const int index = cell.below + (values[k] >= cell.candidate ? 1 : 0);
      idx[i + k] = static_cast<uint8_t>(index);
      if (residual != nullptr) residual[i + k] = values[k] - centroids[index];
    }
  }
}

// Up to 4 bits the index is the count of boundaries <= v (one compare each, all independent).
void quantize_count_neon(const float* x, float32x4_t vscale, const float* boundaries,
                         const float* centroids, int bits, uint8_t* idx, float* residual, int n) {
  const int count = (1 << bits) - 1;
  for (int i = 0; i + 4 <= n; i += 4) {
    const float32x4_t v = vmulq_f32(vld1q_f32(x + i), vscale);
    uint32x4_t below = vdupq_n_u32(0);
    for (int k = 0; k < count; ++k) {
      below = vsubq_u32(below, vcgeq_f32(v, vdupq_n_f32(boundaries[k])));  // all-ones is -1
    }
    uint32_t lanes[4];
    float values[4];
    vst1q_u32(lanes, below);
    vst1q_f32(values, v);
    for (int k = 0; k < 4; ++k) {
      idx[i + k] = static_cast<uint8_t>(lanes[k]);
      if (residual != nullptr) residual[i + k] = values[k] - centroids[lanes[k]];
    }
  }
}

// Counting up to 4 bits, the grid above (where the codebook has one), else the scalar binary
// search; the last n % 4 values are the scalar reference's.
void quantize_neon(const float* x, float scale, const float* boundaries, const float* centroids,
                   const BoundaryGrid* grid, int bits, uint8_t* idx, float* residual, int n) {
  const QuantizeFn scalar = select_quantize(SimdLevel::kScalar);
  const float32x4_t vscale = vdupq_n_f32(scale);
  if (bits >= 1 && bits <= 4) {
    quantize_count_neon(x, vscale, boundaries, centroids, bits, idx, residual, n);
  } else if (grid != nullptr && grid->cells > 0) {
    quantize_grid_neon(x, vscale, *grid, centroids, idx, residual, n);
  } else {
    return scalar(x, scale, boundaries, centroids, grid, bits, idx, residual, n);
  }
  const int i = n - n % 4;
  scalar(x + i, scale, boundaries, centroids, grid, bits, idx + i,
         residual == nullptr ? nullptr : residual + i, n - i);
}

float dot_neon(const float* a, const float* b, int d) {
  float32x4_t acc = vdupq_n_f32(0.0f);
  int i = 0;
  for (; i + 4 <= d; i += 4) acc = vfmaq_f32(acc, vld1q_f32(a + i), vld1q_f32(b + i));
  float sum = vaddvq_f32(acc);
  for (; i < d; ++i) sum += a[i] * b[i];
  return sum;
}

// Rows of key or value floats, looked up once per key from its packed code. Tables of at most 16
// floats (bits <= 4, head_dim a multiple of 16) go by byte planes: tbl fetches byte b of 16
// centroids from plane b, two rounds of zips reassemble the floats exactly (the NEON twin of the
// AVX2 PlaneValues); 4-bit codes are split into nibbles in registers. Other sizes unpack and
// index the table one coordinate at a time.
class RowDecoderNeon {
 public:
  RowDecoderNeon(const float* table, int bits, int d)
      : table_(table), bits_(bits), d_(d), planes_ok_(bits <= 4 && d % 16 == 0),
        idx_(static_cast<size_t>(d)) {
    if (!planes_ok_) return;
    uint8_t bytes[4][16] = {};
    for (int e = 0; e < (1 << bits); ++e) {
      uint32_t u;
      std::memcpy(&u, table + e, sizeof(u));
      for (int b = 0; b < 4; ++b) bytes[b][e] = static_cast<uint8_t>(u >> (8 * b));
    }
    for (int b = 0; b < 4; ++b) planes_[b] = vld1q_u8(bytes[b]);
  }

  // row[0, d) = table[index i of the code], exactly.
  void decode(const uint8_t* code, float* row) {
    if (!planes_ok_) {
      select_unpack(SimdLevel::kScalar)(code, d_, bits_, idx_.data());
      for (int i = 0; i < d_; ++i) row[i] = table_[idx_[i]];
      return;
    }
    if (bits_ == 4) {
      const uint8x8_t low_nibbles = vdup_n_u8(0x0F);
      for (int i = 0; i < d_; i += 16) {
        const uint8x8_t bytes = vld1_u8(code + i / 2);
        // Index 2k is byte k's low nibble (little-endian bit stream).
        const uint8x8x2_t split = vzip_u8(vand_u8(bytes, low_nibbles), vshr_n_u8(bytes, 4));
        lookup16(vcombine_u8(split.val[0], split.val[1]), row + i);
      }
      return;
    }
    select_unpack(SimdLevel::kScalar)(code, d_, bits_, idx_.data());
    for (int i = 0; i < d_; i += 16) lookup16(vld1q_u8(idx_.data() + i), row + i);
  }

 private:
  void lookup16(uint8x16_t idx, float* out) const {
    const uint8x16_t b0 = vqtbl1q_u8(planes_[0], idx), b1 = vqtbl1q_u8(planes_[1], idx);
    const uint8x16_t b2 = vqtbl1q_u8(planes_[2], idx), b3 = vqtbl1q_u8(planes_[3], idx);
    const uint16x8_t t0 = vreinterpretq_u16_u8(vzip1q_u8(b0, b1)), t1 = vreinterpretq_u16_u8(vzip2q_u8(b0, b1));
    const uint16x8_t t2 = vreinterpretq_u16_u8(vzip1q_u8(b2, b3)), t3 = vreinterpretq_u16_u8(vzip2q_u8(b2, b3));
    vst1q_f32(out, vreinterpretq_f32_u16(vzip1q_u16(t0, t2)));
    vst1q_f32(out + 4, vreinterpretq_f32_u16(vzip2q_u16(t0, t2)));
    vst1q_f32(out + 8, vreinterpretq_f32_u16(vzip1q_u16(t1, t3)));
    vst1q_f32(out + 12, vreinterpretq_f32_u16(vzip2q_u16(t1, t3)));
  }

  const float* table_;
  int bits_, d_;
  bool planes_ok_;
  uint8x16_t planes_[4] = {};
  std::vector<uint8_t> idx_;
};

void dot_packed_neon(const float* q, int m, const uint8_t* codes, int64_t code_bytes, int64_t n,
                     const float* table, int bits, int d, float* out, int64_t out_stride,
                     RowsAhead ahead) {
  RowDecoderNeon decoder(table, bits, d);
  std::vector<float> row(static_cast<size_t>(d));
  for (int64_t j = 0; j < n; ++j) {
    ahead.fetch(j);
    decoder.decode(codes + j * code_bytes, row.data());
    for (int a = 0; a < m; ++a) out[a * out_stride + j] = dot_neon(q + static_cast<int64_t>(a) * d, row.data(), d);
  }
}

void axpy_packed_neon(const float* w, int64_t w_stride, int m, const uint8_t* codes,
                      int64_t code_bytes, int64_t n, const float* table, int bits, int d,
                      float* acc) {
  RowDecoderNeon decoder(table, bits, d);
  std::vector<float> row(static_cast<size_t>(d));
  for (int64_t j = 0; j < n; ++j) {
    bool any = false;
    for (int a = 0; a < m && !any; ++a) any = w[a * w_stride + j] != 0.0f;
    if (!any) continue;
    decoder.decode(codes + j * code_bytes, row.data());
    for (int a = 0; a < m; ++a) {
      const float weight = w[a * w_stride + j];
      if (weight == 0.0f) continue;
      float* acc_a = acc + static_cast<int64_t>(a) * d;
      const float32x4_t vw = vdupq_n_f32(weight);
      int i = 0;
      for (; i + 4 <= d; i += 4) vst1q_f32(acc_a + i, vfmaq_f32(vld1q_f32(acc_a + i), vw, vld1q_f32(row.data() + i)));
      for (; i < d; ++i) acc_a[i] += weight * row[i];
    }
  }
}

}  // namespace

void use_neon_kernels(KernelSet& k) {
  k.fwht = fwht_neon;
  k.sum_squares = sum_squares_neon;
  k.matvec_columns = matvec_columns_neon;
  k.quantize = quantize_neon;
  k.dot_packed = dot_packed_neon;
  k.axpy_packed = axpy_packed_neon;
}

}  // namespace kernels
}  // namespace turbokv

#else

namespace turbokv {
namespace kernels {
void use_neon_kernels(KernelSet&) {}
}  // namespace kernels
}  // namespace turbokv

#endif
