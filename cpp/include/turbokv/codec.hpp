// TurboQuant codec for one head_dim: encode vectors to packed codes, decode them, and score queries
// against codes without decoding (paper, Algorithms 1 and 2).
//
// Stored per vector (all arrays caller-owned, one row per vector):
//   codes           code_bytes() bytes: the packed b-bit (mse) or (b-1)-bit (prod) indices
//   norms           float32 or float16: ||x|| (or ||x|| / ||u_hat|| with norm correction)
//   qjl_signs       prod only, qjl_bytes() bytes: sign(S r) packed 1 bit per row of S
//   residual_norms  prod only, same dtype as norms: ||r|| = ||u - u_hat|| of the unit vector
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "turbokv/codebook.hpp"
#include "turbokv/qjl.hpp"
#include "turbokv/rotation.hpp"
#include "turbokv/simd.hpp"

namespace turbokv {

namespace kernels {
struct KernelSet;
struct BoundaryGrid;
}

enum class Mode { kMse, kProd };
// How scores on the codes are summed. kExact: float32 products with the float codebook. kInt8:
// the rotated query and the centroids rounded to integers, products summed exactly in int32:
// int8 for keys of 1-4 bits (pshufb/maddubs on AVX2), int16 for 5-8 bits
// (Codec::scores_use_int16).
enum class ScorePrecision { kExact, kInt8 };
// How value sums on the codes are done. kExact: float32 multiply-adds with the float codebook.
// kInt8: each query's weights rounded to 7-bit bytes per group of 16 tokens (scaled to that
// group's largest), the centroids to int8, products summed exactly in int32 (vpdpbusd with
// AVX-512 VNNI or AVX-VNNI, maddubs on plain AVX2; the scalar reference on other levels); values
// of at most 4 bits only (Codec::int8_values_supported).
enum class ValuePrecision { kExact, kInt8 };
enum class NormDtype { kFloat32, kFloat16 };

struct CodecConfig {
  int head_dim = 128;
  int bits = 4;  // total bits per coordinate, 1..8; prod spends one of them on the QJL sketch
  Mode mode = Mode::kMse;
  uint64_t seed = 0;
  NormDtype norm_dtype = NormDtype::kFloat32;
  bool norm_correction = false;  // mse only: store ||x|| / ||u_hat|| so decoded norms are exact
};

struct EncodedBuffers {
  uint8_t* codes = nullptr;
  void* norms = nullptr;
  uint8_t* qjl_signs = nullptr;
  void* residual_norms = nullptr;
};

struct ConstEncodedBuffers {
  const uint8_t* codes = nullptr;
  const void* norms = nullptr;
  const uint8_t* qjl_signs = nullptr;
  const void* residual_norms = nullptr;
};

// Thrown by encode for NaN/Inf input (or a norm that overflows its storage type).
class NonFiniteInput : public std::invalid_argument {
 public:
  NonFiniteInput(const std::string& what, int64_t row) : std::invalid_argument(what), row_(row) {}
  int64_t row() const { return row_; }

 private:
  int64_t row_;
};

class Codec {
 public:
  explicit Codec(const CodecConfig& config, SimdLevel level = default_simd());

  const CodecConfig& config() const { return config_; }
  SimdLevel simd_level() const { return level_; }
  int head_dim() const { return config_.head_dim; }
  int mse_bits() const { return config_.mode == Mode::kProd ? config_.bits - 1 : config_.bits; }
  size_t code_bytes() const;
  size_t qjl_bytes() const;  // 0 in mse mode
  size_t norm_bytes() const { return config_.norm_dtype == NormDtype::kFloat16 ? 2 : 4; }
  size_t bytes_per_vector() const;
  double bits_per_coordinate() const;

  const Codebook& codebook() const { return *codebook_; }
  const Rotation& rotation() const { return rotation_; }
  const QjlSketch* qjl() const { return qjl_.empty() ? nullptr : &qjl_.front(); }

  // Encodes n vectors; vector i starts at x + i * row_stride (in elements; may be negative).
  // Throws NonFiniteInput naming the first bad vector; out is then partially written.
  void encode(const float* x, int64_t n, int64_t row_stride, const EncodedBuffers& out) const;
  void encode(const uint16_t* x_half, int64_t n, int64_t row_stride,
              const EncodedBuffers& out) const;

  // out: n x head_dim float32.
  void decode(const ConstEncodedBuffers& in, int64_t n, float* out) const;

  // out[a * n + j] = <q_a, decode(key j)>, computed from the codes: the query is rotated once and
  // each key costs a table lookup per coordinate (plus a signed sum of the sketch in prod mode).
  // Query a starts at q + a * q_stride. A query holding NaN or Inf scores NaN at every precision.
  void scores(const float* q, int64_t m, int64_t q_stride, const ConstEncodedBuffers& keys,
              int64_t n, float* out, ScorePrecision precision = ScorePrecision::kExact) const;

  // The two halves of scores, for callers that score one query batch against many key blocks:
  // rotated (m x d) = R q / sqrt(d), and in prod mode sketched (m x d) = sqrt(pi/2)/m S R q.
  void prepare_queries(const float* q, int64_t m, int64_t q_stride, float* rotated,
                       float* sketched) const;
  // out[a * out_stride + j] = <q_a, decode(key j)> from prepared queries. prefetch_rows: n rows of
  // prefetch_stride bytes the caller reads next (decode: the block's value codes), prefetched
  // beside the keys as they are scored; a hint, nothing is read.
  void scores_prepared(const float* rotated, const float* sketched, int64_t m,
                       const ConstEncodedBuffers& keys, int64_t n, float* out,
                       int64_t out_stride, const uint8_t* prefetch_rows = nullptr,
                       int64_t prefetch_stride = 0) const;

  // Integer scores (ScorePrecision::kInt8, #13 item 2), for every mse width (int8_scores_supported):
  // up to 4 bits each prepared query is rounded to int8 with one scale (prepare_queries_int8: q8
  // m x d, scales m) and the centroids likewise; at 5-8 bits (scores_use_int16) both are rounded
  // to int16 (prepare_queries_int16, kernels::int16_top), as an int8 query would dominate the
  // error of those codebooks. Products are summed exactly; the sketch term of prod mode stays
  // float32. Bit-identical at every SIMD level; the error is the query's and the centroids'
  // rounding.
  bool int8_scores_supported() const { return mse_bits() <= 8; }
  bool scores_use_int16() const { return mse_bits() > 4; }
  // Whether encode runs rows (float16 ones converted a block at a time) through the level's row
  // encoder (KernelSet::encode_rows: on AVX-512 norm, rotation and quantiser in registers, on AVX2
  // the stage kernels with the next row's norm issued early; the same codes and norms as
  // encode_one): mse mode without norm correction, the Hadamard rotation, and a (bits, head_dim)
  // the level takes.
  bool encodes_rows_fused() const;
  void prepare_queries_int8(const float* rotated, int64_t m, int8_t* q8, float* scales) const;
  void prepare_queries_int16(const float* rotated, int64_t m, int16_t* q16, float* scales) const;
  // prefetch_rows: as in scores_prepared.
  void scores_prepared_int8(const int8_t* q8, const float* scales, const float* sketched,
                            int64_t m, const ConstEncodedBuffers& keys, int64_t n, float* out,
                            int64_t out_stride, const uint8_t* prefetch_rows = nullptr,
                            int64_t prefetch_stride = 0) const;
  void scores_prepared_int16(const int16_t* q16, const float* scales, const float* sketched,
                             int64_t m, const ConstEncodedBuffers& keys, int64_t n, float* out,
                             int64_t out_stride, const uint8_t* prefetch_rows = nullptr,
                             int64_t prefetch_stride = 0) const;

  // Weighted sums of encoded vectors without decoding them (the value side of attention):
  //   sum_j w[a * w_stride + j] decode(v_j) = finish(acc_rotated_a, acc_sketch_a)
  // where accumulate adds block after block into acc_rotated (m x d, rotated domain) and, in prod
  // mode, acc_sketch (m x d, sketch domain). scratch holds (m + 1) * n floats.
  // ValuePrecision::kInt8 (int8_values_supported) needs finite w >= 0 (softmax weights; else
  // std::invalid_argument, nothing added) and sums the codes in integers; the sketch term stays
  // float32.
  void accumulate(const float* w, int64_t w_stride, int64_t m, const ConstEncodedBuffers& values,
                  int64_t n, float* acc_rotated, float* acc_sketch, float* scratch,
                  ValuePrecision precision = ValuePrecision::kExact) const;
  bool int8_values_supported() const { return mse_bits() <= 4; }
  // Whether int8 values are faster than float32 ones here: 1, 2 or 4 bits by vpdpbusd (AVX-VNNI at
  // either x86 level, any shape; AVX-512 VNNI with VBMI, head_dim a multiple of 128 / bits) or by
  // plain AVX2's maddubs (head_dim at least 64, rows of whole 16-byte chunks, 8-byte ones at 4 bits);
  // 3 bits too where the rows become 4-bit rows in registers (head_dim a multiple of 32; unpacked
  // to index bytes, the unpacking costs what the sums save). Not the scalar reference (scalar,
  // NEON levels): the same results, no faster.
  bool int8_values_fast() const;
  // out (d floats) = R^T (acc_rotated + S^T acc_sketch): one inverse rotation per query.
  void finish_accumulated(float* acc_rotated, const float* acc_sketch, float* out) const;

  // Dense terms of n encoded vectors, for matrix products with many queries at once (prefill
  // tiles): main[j] = main_scale ||x_j|| c[idx_j] and, in prod mode,
  // sketch[j] = sketch_scale ||x_j|| ||r_j|| sign(S r_j). With scales 1 and 1 they are the key
  // terms: <q, decode(x_j)> = <rotated q, main[j]> + <sketched q, sketch[j]> (prepare_queries).
  // With value_scales() they are the value terms: a weighted sum of them is what accumulate adds
  // to acc_rotated and acc_sketch. transposed: coordinate i of vector j at [i * ld + j] (d rows);
  // else at [j * ld + i] (n rows).
  void decode_terms(const ConstEncodedBuffers& in, int64_t n, float main_scale, float sketch_scale,
                    bool transposed, int64_t ld, float* main, float* sketch) const;
  struct TermScales {
    float main, sketch;
  };
  TermScales value_scales() const;

 private:
  template <typename T>
  void encode_rows(const T* x, int64_t n, int64_t row_stride, const EncodedBuffers& out) const;
  void encode_one(const float* x, int64_t row, std::vector<float>& scratch, std::vector<uint8_t>& idx,
                  const EncodedBuffers& out) const;
  // Rows [first, first + count) of the output from count <= kFusedBlock float32 rows, by the
  // level's one-pass kernel (encodes_rows_fused) and encode_one for the rows it hands back.
  static constexpr int64_t kFusedBlock = 64;
  void encode_block_fused(const float* rows, int64_t row_stride, int64_t first, int64_t count,
                          std::vector<float>& scratch, std::vector<uint8_t>& idx, const EncodedBuffers& out) const;
  void store_norm(void* base, int64_t row, float value) const;
  // store_norm of an encoded vector's norm, refusing one beyond the float16 range if stored so.
  void store_vector_norm(void* base, int64_t row, float value) const;
  float load_norm(const void* base, int64_t row) const;
  // The norms of rows [first, first + count) as float32: a pointer into base when they are stored
  // as float32, else converted into buffer (the dtype switch hoisted out of the loop).
  const float* load_norms(const void* base, int64_t first, int64_t count, float* buffer) const;
  // scores_prepared's shared part: dot(j0, count, out) writes the raw lookup sums of keys
  // [j0, j0 + count), then the sketch terms and norms are applied.
  template <typename Dot>
  void finish_scores(const float* sketched, int64_t m, const ConstEncodedBuffers& keys, int64_t n,
                     float* out, int64_t out_stride, Dot dot) const;

  CodecConfig config_;
  SimdLevel level_;
  const kernels::KernelSet* kernels_;
  const Codebook* codebook_;
  const kernels::BoundaryGrid* grid_;  // the codebook's boundaries on a grid, for quantize
  Rotation rotation_;
  std::vector<QjlSketch> qjl_;   // one sketch in prod mode, none in mse mode
  std::vector<float> centroids_;   // padded for SIMD table lookups
  std::vector<float> boundaries_;  // padded with +inf
  // The <= 4-bit codebook rounded to +-63 (kInt8CentroidTop; 16 entries, zero past 2^bits), for
  // int8 scores and values.
  std::vector<int8_t> centroids_int8_;
  float centroids_int8_scale_ = 0.0f;
  std::vector<int32_t> centroids_int16_;  // 256 entries (zero past 2^bits), for 5-8-bit int16 scores
  float centroids_int16_scale_ = 0.0f;
  float sqrt_dim_;
  float inv_sqrt_dim_;
};

}  // namespace turbokv
