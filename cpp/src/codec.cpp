#include "turbokv/codec.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "boundary_grid.hpp"
#include "kernels.hpp"
#include "turbokv/half.hpp"
#include "turbokv/packing.hpp"

namespace turbokv {
namespace {

// Below this sum of squares the squares themselves may have lost precision to underflow, and
// above FLT_MAX they overflowed: such vectors are rescaled by their largest coordinate first.
constexpr float kSmallestSafeSumSquares = 1e-30f;

void check_config(const CodecConfig& c) {
  if (c.head_dim < kMinHeadDim || c.head_dim > kMaxHeadDim) {
    throw std::invalid_argument("head_dim must be in 8..1024, got " + std::to_string(c.head_dim));
  }
  if (c.bits < 1 || c.bits > kMaxBits) {
    throw std::invalid_argument("bits must be in 1..8, got " + std::to_string(c.bits));
  }
  if (c.norm_correction && c.mode == Mode::kProd) {
    throw std::invalid_argument(
        "norm_correction applies to mode='mse' only: in prod mode the QJL term already corrects "
        "inner products, and rescaling would bias them");
  }
}

size_t padded_table_size(int bits) {
  return std::max<size_t>(kernels::kMinTableSize, size_t{1} << bits);
}

}  // namespace

Codec::Codec(const CodecConfig& config, SimdLevel level)
    : config_((check_config(config), config)),
      level_(level),
      kernels_(&kernels::kernel_set(level)),
      codebook_(&lloyd_max_codebook(mse_bits())),
      grid_(&kernels::codebook_grid(mse_bits())),
      rotation_(config.head_dim, config.seed, level),
      sqrt_dim_(std::sqrt(static_cast<float>(config.head_dim))),
      inv_sqrt_dim_(1.0f / std::sqrt(static_cast<float>(config.head_dim))) {
  if (config_.mode == Mode::kProd) qjl_.emplace_back(config_.head_dim, config_.seed, level);
  centroids_.assign(padded_table_size(mse_bits()), 0.0f);
  std::copy(codebook_->centroids.begin(), codebook_->centroids.end(), centroids_.begin());
  if (scores_use_int16()) {
    std::vector<int16_t> c16(codebook_->centroids.size());
    centroids_int16_scale_ = kernels::quantize_int16(codebook_->centroids.data(),
                                                     static_cast<int>(c16.size()),
                                                     kernels::int16_top(config_.head_dim), c16.data());
    centroids_int16_.assign(256, 0);
    std::copy(c16.begin(), c16.end(), centroids_int16_.begin());
  } else {
    const int count = static_cast<int>(codebook_->centroids.size());
    centroids_int8_.assign(16, 0);
    centroids_int8_scale_ = kernels::quantize_int8(codebook_->centroids.data(), count,
                                                   centroids_int8_.data(), kernels::kInt8CentroidTop);
  }
  boundaries_.assign(padded_table_size(mse_bits()), INFINITY);
  std::copy(codebook_->boundaries.begin(), codebook_->boundaries.end(), boundaries_.begin());
}

bool Codec::encodes_rows_fused() const {
  return kernels_->encode_rows != nullptr && config_.mode == Mode::kMse && !config_.norm_correction &&
         rotation_.is_hadamard() && kernels::encode_rows_fit(level_, mse_bits(), config_.head_dim);
}

size_t Codec::code_bytes() const { return packed_bytes(mse_bits(), config_.head_dim); }

size_t Codec::qjl_bytes() const {
  return config_.mode == Mode::kProd ? packed_bytes(1, config_.head_dim) : 0;
}

size_t Codec::bytes_per_vector() const {
  const size_t norms = config_.mode == Mode::kProd ? 2 : 1;
  return code_bytes() + qjl_bytes() + norms * norm_bytes();
}

double Codec::bits_per_coordinate() const {
  return 8.0 * static_cast<double>(bytes_per_vector()) / config_.head_dim;
}

void Codec::store_norm(void* base, int64_t row, float value) const {
  if (config_.norm_dtype == NormDtype::kFloat16) {
    static_cast<uint16_t*>(base)[row] = float_to_half(value);
  } else {
    static_cast<float*>(base)[row] = value;
  }
}

void Codec::store_vector_norm(void* base, int64_t row, float value) const {
  if (config_.norm_dtype == NormDtype::kFloat16 && value > 65504.0f) {
    throw NonFiniteInput("the norm of input vector " + std::to_string(row) + " (" +
                             std::to_string(value) + ") exceeds the float16 range; use norm_dtype='float32'",
                         row);
  }
  store_norm(base, row, value);
}

float Codec::load_norm(const void* base, int64_t row) const {
  if (config_.norm_dtype == NormDtype::kFloat16) {
    return half_to_float(static_cast<const uint16_t*>(base)[row]);
  }
  return static_cast<const float*>(base)[row];
}

const float* Codec::load_norms(const void* base, int64_t first, int64_t count,
                               float* buffer) const {
  if (config_.norm_dtype == NormDtype::kFloat32) return static_cast<const float*>(base) + first;
  kernels_->from_half(static_cast<const uint16_t*>(base) + first, buffer, count);
  return buffer;
}

void Codec::encode(const float* x, int64_t n, int64_t row_stride, const EncodedBuffers& out) const {
  encode_rows(x, n, row_stride, out);
}

void Codec::encode(const uint16_t* x_half, int64_t n, int64_t row_stride,
                   const EncodedBuffers& out) const {
  encode_rows(x_half, n, row_stride, out);
}

template <typename T>
void Codec::encode_rows(const T* x, int64_t n, int64_t row_stride, const EncodedBuffers& out) const {
  const int d = config_.head_dim;
  // Layout: [0, d) input copy or rescaled input, [d, 2d) rotated, [2d, 3d) residual or centroid
  // values, [3d, 4d) sketch projections.
  std::vector<float> scratch(4 * static_cast<size_t>(d));
  std::vector<uint8_t> idx(static_cast<size_t>(d));
  if (encodes_rows_fused()) {
    std::vector<float> block;  // float16 rows, converted (exactly) a block at a time
    if constexpr (!std::is_same_v<T, float>) block.resize(static_cast<size_t>(kFusedBlock) * d);
    for (int64_t first = 0; first < n; first += kFusedBlock) {
      const int64_t count = std::min(kFusedBlock, n - first);
      if constexpr (std::is_same_v<T, float>) {
        encode_block_fused(x + first * row_stride, row_stride, first, count, scratch, idx, out);
      } else {
        for (int64_t r = 0; r < count; ++r) kernels_->from_half(x + (first + r) * row_stride, block.data() + r * d, d);
        encode_block_fused(block.data(), d, first, count, scratch, idx, out);
      }
    }
    return;
  }
  for (int64_t row = 0; row < n; ++row) {
    const T* src = x + row * row_stride;
    if constexpr (std::is_same_v<T, float>) {
      encode_one(src, row, scratch, idx, out);
    } else {
      for (int i = 0; i < d; ++i) scratch[i] = half_to_float(src[i]);
      encode_one(scratch.data(), row, scratch, idx, out);
    }
  }
}

void Codec::encode_block_fused(const float* rows, int64_t row_stride, int64_t first, int64_t count,
                               std::vector<float>& scratch, std::vector<uint8_t>& idx,
                               const EncodedBuffers& out) const {
  // Whole rows by the level's one-pass kernel; a row it stops at (too small or too large a sum of
  // squares, or not finite) goes through encode_one, which rescales or refuses it.
  float norms[kFusedBlock];
  int64_t r = 0;
  while (r < count) {
    const int64_t row = first + r;
    const int64_t done = kernels_->encode_rows(rows + r * row_stride, count - r, row_stride, config_.head_dim,
                                               mse_bits(), rotation_.scaled_signs().data(), sqrt_dim_,
                                               kSmallestSafeSumSquares, boundaries_.data(), *grid_,
                                               out.codes + row * static_cast<int64_t>(code_bytes()), norms);
    for (int64_t i = 0; i < done; ++i) store_vector_norm(out.norms, row + i, norms[i]);
    r += done;
    if (r < count) {
      encode_one(rows + r * row_stride, first + r, scratch, idx, out);
      ++r;
    }
  }
}

void Codec::encode_one(const float* x, int64_t row, std::vector<float>& scratch,
                       std::vector<uint8_t>& idx, const EncodedBuffers& out) const {
  const int d = config_.head_dim;
  float* unit_input = scratch.data();
  float* rotated = unit_input + d;
  float* work = rotated + d;
  float* projected = work + d;

  float sum_squares = kernels_->sum_squares(x, d);
  float magnitude = 1.0f;  // the input is x = magnitude * src
  const float* src = x;
  if (!(sum_squares >= kSmallestSafeSumSquares && sum_squares <= FLT_MAX)) {
    float max_abs = 0.0f;
    for (int i = 0; i < d; ++i) max_abs = std::fmax(max_abs, std::fabs(x[i]));
    bool finite = std::isfinite(max_abs);
    for (int i = 0; i < d && finite; ++i) finite = !std::isnan(x[i]);
    if (!finite) {
      throw NonFiniteInput("input vector " + std::to_string(row) +
                               " contains NaN or Inf; replace or drop non-finite values (for "
                               "example with numpy.nan_to_num) before encoding",
                           row);
    }
    if (max_abs > 0.0f) {
      for (int i = 0; i < d; ++i) unit_input[i] = x[i] / max_abs;
      src = unit_input;
      magnitude = max_abs;
      sum_squares = kernels_->sum_squares(src, d);
    }
  }
  const float norm = std::sqrt(sum_squares);
  float stored_norm = magnitude * norm;
  if (!std::isfinite(stored_norm)) {
    throw NonFiniteInput("the norm of input vector " + std::to_string(row) +
                             " overflows float32; scale the input down",
                         row);
  }

  rotation_.forward(src, rotated);
  // Rotated coordinates of the unit vector, times sqrt(d), are ~N(0, 1): the codebook's scale.
  const float scale = norm > 0.0f ? sqrt_dim_ / norm : 0.0f;
  const bool prod = config_.mode == Mode::kProd;
  uint8_t* codes = out.codes + row * static_cast<int64_t>(code_bytes());
  if (kernels_->quantize_packed != nullptr && !prod && !config_.norm_correction) {
    // Nothing below reads the index bytes: the level may pack as it quantises.
    kernels_->quantize_packed(rotated, scale, boundaries_.data(), centroids_.data(), grid_,
                              mse_bits(), idx.data(), codes, d);
  } else {
    kernels_->quantize(rotated, scale, boundaries_.data(), centroids_.data(),
                       grid_, mse_bits(), idx.data(),
                       prod ? work : nullptr, d);
    kernels_->pack(idx.data(), d, mse_bits(), codes);
  }

  if (config_.norm_correction) {
    for (int i = 0; i < d; ++i) work[i] = centroids_[idx[i]];
    const float centroid_sum_squares = kernels_->sum_squares(work, d);
    // ||u_hat|| = ||c[idx]|| / sqrt(d); storing ||x|| / ||u_hat|| makes the decoded norm exact.
    if (centroid_sum_squares > 0.0f) stored_norm = stored_norm * sqrt_dim_ / std::sqrt(centroid_sum_squares);
  }
  store_vector_norm(out.norms, row, stored_norm);

  if (prod) {
    // work holds the residual in codebook units: sqrt(d) (u - u_hat) in the rotated domain.
    const float residual_norm = std::sqrt(kernels_->sum_squares(work, d)) * inv_sqrt_dim_;
    qjl_.front().project(work, projected);
    for (int i = 0; i < d; ++i) idx[i] = projected[i] >= 0.0f ? 1 : 0;
    kernels_->pack(idx.data(), d, 1, out.qjl_signs + row * static_cast<int64_t>(qjl_bytes()));
    store_norm(out.residual_norms, row, residual_norm);
  }
}

void Codec::decode(const ConstEncodedBuffers& in, int64_t n, float* out) const {
  const int d = config_.head_dim;
  const bool prod = config_.mode == Mode::kProd;
  std::vector<float> rotated(d), signs(d), correction(d);
  std::vector<uint8_t> idx(d);
  for (int64_t row = 0; row < n; ++row) {
    kernels_->unpack(in.codes + row * static_cast<int64_t>(code_bytes()), d, mse_bits(), idx.data());
    const float norm = load_norm(in.norms, row);
    std::fill(rotated.begin(), rotated.end(), 0.0f);
    // x_hat = ||x|| R^T c[idx] / sqrt(d)   (paper, Algorithm 1, DeQuant)
    kernels_->axpy_lookup(norm * inv_sqrt_dim_, idx.data(), centroids_.data(), mse_bits(),
                          rotated.data(), d);
    if (prod) {
      // + ||x|| sqrt(pi/2)/m ||r|| S^T sign(S r)   (paper, Algorithm 2, DeQuant)
      const uint8_t* bits = in.qjl_signs + row * static_cast<int64_t>(qjl_bytes());
      for (int i = 0; i < d; ++i) signs[i] = ((bits[i >> 3] >> (i & 7)) & 1u) ? 1.0f : -1.0f;
      qjl_.front().project_transpose(signs.data(), correction.data());
      const float weight = norm * qjl_.front().estimator_scale() * load_norm(in.residual_norms, row);
      for (int i = 0; i < d; ++i) rotated[i] += weight * correction[i];
    }
    rotation_.inverse(rotated.data(), out + row * d);
  }
}

void Codec::prepare_queries(const float* q, int64_t m, int64_t q_stride, float* rotated,
                            float* sketched) const {
  const int d = config_.head_dim;
  for (int64_t a = 0; a < m; ++a) {
    float* qa = rotated + a * d;
    rotation_.forward(q + a * q_stride, qa);
    if (config_.mode == Mode::kProd) {
      float* sa = sketched + a * d;
      qjl_.front().project(qa, sa);
      for (int i = 0; i < d; ++i) sa[i] *= qjl_.front().estimator_scale();
    }
    for (int i = 0; i < d; ++i) qa[i] *= inv_sqrt_dim_;
  }
}

void Codec::scores(const float* q, int64_t m, int64_t q_stride, const ConstEncodedBuffers& keys,
                   int64_t n, float* out, ScorePrecision precision) const {
  // <q, x_hat> = ||x|| <R q, c[idx]> / sqrt(d) [+ ||x|| sqrt(pi/2)/m ||r|| <S R q, sign(S r)>]:
  // rotate (and sketch) each query once, then every key is lookups on its codes.
  const size_t size = static_cast<size_t>(m) * config_.head_dim;
  std::vector<float> rotated(size), sketched(config_.mode == Mode::kProd ? size : 0);
  prepare_queries(q, m, q_stride, rotated.data(), sketched.data());
  // Integer rounding maps NaN coordinates to 0 (an all-NaN query would score 0 everywhere): a
  // query row that is not all finite gets a NaN scale instead, so that its integer scores are NaN
  // as its exact ones are (IEEE arithmetic for any query, as numpy's matmul). KVCache's attention
  // refuses such queries before it gets here.
  const auto nan_scales_where_not_finite = [&](float* scales) {
    for (int64_t r = 0; r < m; ++r) {
      const float* row = rotated.data() + r * config_.head_dim;
      if (!std::all_of(row, row + config_.head_dim, [](float v) { return std::isfinite(v); })) scales[r] = NAN;
    }
  };
  if (precision == ScorePrecision::kInt8 && scores_use_int16()) {
    std::vector<int16_t> q16(size);
    std::vector<float> scales(static_cast<size_t>(m));
    prepare_queries_int16(rotated.data(), m, q16.data(), scales.data());
    nan_scales_where_not_finite(scales.data());
    return scores_prepared_int16(q16.data(), scales.data(), sketched.data(), m, keys, n, out, n);
  }
  if (precision == ScorePrecision::kInt8) {
    std::vector<int8_t> q8(size);
    std::vector<float> scales(static_cast<size_t>(m));
    prepare_queries_int8(rotated.data(), m, q8.data(), scales.data());
    nan_scales_where_not_finite(scales.data());
    return scores_prepared_int8(q8.data(), scales.data(), sketched.data(), m, keys, n, out, n);
  }
  scores_prepared(rotated.data(), sketched.data(), m, keys, n, out, n);
}

template <typename Dot>
void Codec::finish_scores(const float* sketched, int64_t m, const ConstEncodedBuffers& keys,
                          int64_t n, float* out, int64_t out_stride, Dot dot) const {
  const int d = config_.head_dim;
  const bool prod = config_.mode == Mode::kProd;
  // Tiles of keys keep the partial scores in cache while the norms and sketch terms are added;
  // rows of out are walked contiguously (a column walk strides out_stride floats per step).
  constexpr int64_t kKeyTile = 256;
  float norm_buffer[kKeyTile], residual_buffer[kKeyTile];
  for (int64_t j0 = 0; j0 < n; j0 += kKeyTile) {
    const int64_t count = std::min(kKeyTile, n - j0);
    dot(j0, count, out + j0);
    const float* norms = load_norms(keys.norms, j0, count, norm_buffer);
    const float* residual_norms =
        prod ? load_norms(keys.residual_norms, j0, count, residual_buffer) : nullptr;
    if (prod) {
      for (int64_t a = 0; a < m; ++a) {
        float* row = out + a * out_stride + j0;
        for (int64_t j = 0; j < count; ++j) {
          const uint8_t* signs = keys.qjl_signs + (j0 + j) * static_cast<int64_t>(qjl_bytes());
          row[j] += residual_norms[j] * kernels_->sign_dot(sketched + a * d, signs, d);
        }
      }
    }
    kernels_->scale_rows(out + j0, out_stride, static_cast<int>(m), norms, 1.0f, count, out + j0, out_stride);
  }
}

void Codec::scores_prepared(const float* rotated, const float* sketched, int64_t m,
                            const ConstEncodedBuffers& keys, int64_t n, float* out,
                            int64_t out_stride, const uint8_t* prefetch_rows,
                            int64_t prefetch_stride) const {
  const int d = config_.head_dim;
  finish_scores(sketched, m, keys, n, out, out_stride, [&](int64_t j0, int64_t count, float* o) {
    kernels_->dot_packed(rotated, static_cast<int>(m), keys.codes + j0 * code_bytes(),
                         static_cast<int64_t>(code_bytes()), count, centroids_.data(), mse_bits(), d,
                         o, out_stride, kernels::RowsAhead{prefetch_rows, prefetch_stride}.from(j0));
  });
}

void Codec::prepare_queries_int8(const float* rotated, int64_t m, int8_t* q8, float* scales) const {
  kernels_->quantize_rows_int8(rotated, m, config_.head_dim, q8, scales);
}

void Codec::prepare_queries_int16(const float* rotated, int64_t m, int16_t* q16, float* scales) const {
  const int d = config_.head_dim;
  kernels_->quantize_rows_int16(rotated, m, d, kernels::int16_top(d), q16, scales);
}

void Codec::scores_prepared_int16(const int16_t* q16, const float* scales, const float* sketched,
                                  int64_t m, const ConstEncodedBuffers& keys, int64_t n, float* out,
                                  int64_t out_stride, const uint8_t* prefetch_rows,
                                  int64_t prefetch_stride) const {
  if (!scores_use_int16()) {
    throw std::invalid_argument("int16 scores are for keys of 5-8 bits, these have " +
                                std::to_string(mse_bits()) + " (use int8 ones)");
  }
  const int d = config_.head_dim;
  finish_scores(sketched, m, keys, n, out, out_stride, [&](int64_t j0, int64_t count, float* o) {
    kernels_->dot_packed_int16(q16, scales, static_cast<int>(m), keys.codes + j0 * code_bytes(),
                               static_cast<int64_t>(code_bytes()), count, centroids_int16_.data(),
                               centroids_int16_scale_, mse_bits(), d, o, out_stride,
                               kernels::RowsAhead{prefetch_rows, prefetch_stride}.from(j0));
  });
}

void Codec::scores_prepared_int8(const int8_t* q8, const float* scales, const float* sketched,
                                 int64_t m, const ConstEncodedBuffers& keys, int64_t n, float* out,
                                 int64_t out_stride, const uint8_t* prefetch_rows,
                                 int64_t prefetch_stride) const {
  if (scores_use_int16()) {
    throw std::invalid_argument("int8 scores need keys of at most 4 bits, these have " +
                                std::to_string(mse_bits()) + " (use int16 ones)");
  }
  const int d = config_.head_dim;
  finish_scores(sketched, m, keys, n, out, out_stride, [&](int64_t j0, int64_t count, float* o) {
    kernels_->dot_packed_int8(q8, scales, static_cast<int>(m), keys.codes + j0 * code_bytes(),
                              static_cast<int64_t>(code_bytes()), count, centroids_int8_.data(),
                              centroids_int8_scale_, mse_bits(), d, o, out_stride,
                              kernels::RowsAhead{prefetch_rows, prefetch_stride}.from(j0));
  });
}

void Codec::accumulate(const float* w, int64_t w_stride, int64_t m,
                       const ConstEncodedBuffers& values, int64_t n, float* acc_rotated,
                       float* acc_sketch, float* scratch, ValuePrecision precision) const {
  const int d = config_.head_dim;
  const bool int8 = precision == ValuePrecision::kInt8;
  if (int8 && !int8_values_supported()) {
    throw std::invalid_argument("int8 values need values of at most 4 bits, these have " +
                                std::to_string(mse_bits()));
  }
  // decode(v_j) = R^T (||v_j|| c[idx_j] / sqrt(d) + ||v_j|| beta gamma_j S^T s_j): fold the
  // per-token scalars into the weights, then sum codes and signs in their own domains.
  const float* norms = load_norms(values.norms, 0, n, scratch + m * n);  // scratch: (m + 1) n
  kernels_->scale_rows(w, w_stride, static_cast<int>(m), norms, inv_sqrt_dim_, n, scratch, n);
  if (int8) {
    // The kernel refuses negative, NaN and infinite weights (rounded on each group's largest) before
    // adding anything.
    kernels_->axpy_packed_int8(scratch, n, static_cast<int>(m), values.codes,
                               static_cast<int64_t>(code_bytes()), n, centroids_int8_.data(),
                               centroids_int8_scale_, mse_bits(), d, acc_rotated);
  } else {
    kernels_->axpy_packed(scratch, n, static_cast<int>(m), values.codes,
                          static_cast<int64_t>(code_bytes()), n, centroids_.data(), mse_bits(), d,
                          acc_rotated);
  }
  if (config_.mode != Mode::kProd) return;
  const float beta = qjl_.front().estimator_scale() * sqrt_dim_;  // undoes the 1/sqrt(d) above
  for (int64_t j = 0; j < n; ++j) {
    const float gamma = beta * load_norm(values.residual_norms, j);
    const uint8_t* signs = values.qjl_signs + j * static_cast<int64_t>(qjl_bytes());
    for (int64_t a = 0; a < m; ++a) {
      const float weight = scratch[a * n + j] * gamma;
      if (weight == 0.0f) continue;
      float* acc = acc_sketch + a * d;
      for (int i = 0; i < d; ++i) acc[i] += ((signs[i >> 3] >> (i & 7)) & 1u) ? weight : -weight;
    }
  }
}

bool Codec::int8_values_fast() const {
  if (!int8_values_supported()) return false;
  const int bits = mse_bits(), d = config_.head_dim;
  const int64_t code_bytes = static_cast<int64_t>(this->code_bytes());
  const bool x86 = level_ == SimdLevel::kAvx2 || level_ == SimdLevel::kAvx512;
  const bool vnni_kernel = level_ == SimdLevel::kAvx512 && kernels::int8_values_vnni_fit(bits, code_bytes, d);
  // 3 bits pay where the rows are rewritten as 4-bit rows in registers (head_dim a multiple of 32):
  // 0.86x the time of float32 values at 32K K3V3 on the AVX-VNNI kernel, 0.77-0.92x on the AVX-512
  // VBMI one. Unpacked to index bytes (other head_dims), the unpacking costs what the integer sums
  // save: 0.98-1.05x (bench/results/kernel_choices_avx2.md, rounds 16, 19 and 20).
  if (bits == 3 && !kernels::int8_three_bit_in_registers(code_bytes, d)) return false;
  // Plain AVX2 (maddubs) too since session 28's ±63 centroids let it add two steps' products in
  // int16 before widening: head_dim at least 64 and rows of whole 16-byte chunks (3 bits: in
  // registers), or 4-bit rows ending in half a chunk (head_dim an odd multiple of 16, since session
  // 29 reads such tails without a stack copy). On Zen 3 the kernel alone then takes 0.46-0.82x the
  // time of float32 values (d = 128: 1 bit 0.50x, 2 bits 0.72x, 3 bits 0.72x, 4 bits 0.66x; 4 bits
  // at d = 80-208 0.55-0.68x), decode at 32K 0.79-0.90x; other tails and head_dim 32 tie or lose
  // (0.98-1.9x; a few partial shapes gain without being claimed; bench/results/int8_values_zen3_s29.md,
  // kernel_choices_avx2.md round 29). At the AVX-512 level without a vpdpbusd kernel the float32
  // alternative is the AVX-512 one, against which it was never timed: not claimed there.
  // At the AVX2 level 3-bit float32 values go by vpermps since session 39 (all but Zen 1), faster
  // than int8 ones on Zen 4 plain (K4V3 int8 scores at 32K: 6.44 ms against 7.05-7.20 with int8
  // values) and in the AVX-VNNI form (6.41 against 6.72-6.83; kernel_choices_avx2.md, round 39).
  if (level_ == SimdLevel::kAvx2 && bits == 3 && kernels::lookups_by_permutes(bits, d)) return false;
  const bool whole_chunks = code_bytes % 16 == 0 || (bits == 4 && code_bytes % 8 == 0);
  const bool plain_avx2_fits = level_ == SimdLevel::kAvx2 && d >= 64 && (bits == 3 || whole_chunks);
  return vnni_kernel || plain_avx2_fits || (x86 && kernels::kAvx2VnniForm != kernels::VnniForm::kNone);
}

void Codec::finish_accumulated(float* acc_rotated, const float* acc_sketch, float* out) const {
  const int d = config_.head_dim;
  if (config_.mode == Mode::kProd) {
    std::vector<float> projected(d);
    qjl_.front().project_transpose(acc_sketch, projected.data());
    for (int i = 0; i < d; ++i) acc_rotated[i] += projected[i];
  }
  rotation_.inverse(acc_rotated, out);
}

Codec::TermScales Codec::value_scales() const {
  // accumulate: acc_rotated += w ||v|| c[idx] / sqrt(d), acc_sketch += w ||v|| beta' ||r|| s with
  // beta' = sqrt(pi/2)/m (the estimator scale; see accumulate's beta).
  return {inv_sqrt_dim_, config_.mode == Mode::kProd ? qjl_.front().estimator_scale() : 0.0f};
}

namespace {
constexpr int kTermGroup = 16;  // floats per 64-byte line
}  // namespace

void Codec::decode_terms(const ConstEncodedBuffers& in, int64_t n, float main_scale,
                         float sketch_scale, bool transposed, int64_t ld, float* main,
                         float* sketch) const {
  const int d = config_.head_dim;
  const bool prod = config_.mode == Mode::kProd;
  const int64_t step = transposed ? ld : 1;  // distance between coordinates i and i + 1
  std::vector<uint8_t> idx(static_cast<size_t>(d) * kTermGroup);
  std::vector<float> norm_buffer(static_cast<size_t>(n)), residual_buffer(prod ? static_cast<size_t>(n) : 0);
  const float* norms = load_norms(in.norms, 0, n, norm_buffer.data());
  const float* residual_norms = prod ? load_norms(in.residual_norms, 0, n, residual_buffer.data()) : nullptr;
  int64_t j = 0;
  if (transposed) {
    // Groups of kTermGroup vectors, coordinate by coordinate: each coordinate's row of the group
    // is one 64-byte line. Vector by vector, each wrote d lines a stride apart (the key tile of
    // a 256-token block is 128 KB at d = 128): the scalar loop took 2x the tile's matrix products
    // in a decode at 8 query rows (Zen 3, session 25).
    for (; j + kTermGroup <= n; j += kTermGroup) {
      for (int k = 0; k < kTermGroup; ++k) {
        kernels_->unpack(in.codes + (j + k) * static_cast<int64_t>(code_bytes()), d, mse_bits(), idx.data() + k * d);
      }
      float weight[kTermGroup];
      for (int k = 0; k < kTermGroup; ++k) weight[k] = main_scale * norms[j + k];
      for (int i = 0; i < d; ++i) {
        float* row = main + i * ld + j;
        for (int k = 0; k < kTermGroup; ++k) row[k] = weight[k] * centroids_[idx[static_cast<size_t>(k) * d + i]];
      }
      if (!prod) continue;
      for (int k = 0; k < kTermGroup; ++k) {
        const uint8_t* bits = in.qjl_signs + (j + k) * static_cast<int64_t>(qjl_bytes());
        const float signed_weight = sketch_scale * norms[j + k] * residual_norms[j + k];
        for (int i = 0; i < d; ++i) sketch[i * ld + j + k] = ((bits[i >> 3] >> (i & 7)) & 1u) ? signed_weight : -signed_weight;
      }
    }
  }
  for (; j < n; ++j) {
    const int64_t first = transposed ? j : j * ld;
    kernels_->unpack(in.codes + j * static_cast<int64_t>(code_bytes()), d, mse_bits(), idx.data());
    const float weight = main_scale * norms[j];
    float* m = main + first;
    for (int i = 0; i < d; ++i) m[i * step] = weight * centroids_[idx[i]];
    if (!prod) continue;
    const uint8_t* bits = in.qjl_signs + j * static_cast<int64_t>(qjl_bytes());
    const float signed_weight = sketch_scale * norms[j] * residual_norms[j];
    float* sk = sketch + first;
    for (int i = 0; i < d; ++i) sk[i * step] = ((bits[i >> 3] >> (i & 7)) & 1u) ? signed_weight : -signed_weight;
  }
}

}  // namespace turbokv
