// The int16 score kernels' queries (dot_int16_kernels.cpp, planes_vbmi_kernels.cpp): permuted
// once per call to the order in which a kernel's lookups leave a key's centroid words.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace turbokv {
namespace kernels {

// The order of one key's looked-up words that a SIMD kernel multiplies the query by, as chunks of
// neighbouring coordinates: vpackssdw's (AVX2; blocks of 16 coordinates, chunks of 4: two
// registers of 8 entries interleave by 128-bit lane) or vpunpck[lh]bw's (AVX-512 byte planes;
// blocks of 64, chunks of 8: the low halves of the four lanes, then the high ones). Queries are
// permuted once per call to match, a chunk at a time.
struct Int16Order {
  int block, chunk;
  int from[8];  // chunk p of a permuted block is chunk from[p] of the query's block
};
constexpr Int16Order kPacksOrder{16, 4, {0, 2, 1, 3}};
// vpunpck[lh]bw's on 32 index bytes (AVX2 shuffle route; blocks of 32, chunks of 8: the low halves
// of the two lanes, then the high ones).
constexpr Int16Order kUnpackWordsOrder{32, 8, {0, 2, 1, 3}};
constexpr Int16Order kPlanesOrder{64, 8, {0, 2, 4, 6, 1, 3, 5, 7}};

// What a call shares across keys: the queries permuted to the kernel's order over the first
// `permuted` coordinates (a multiple of order.block; default d_simd, the coordinates the kernel
// sums by SIMD; the rest as they are), and each query's scale times the table's.
class Int16Call {
 public:
  Int16Call(const int16_t* q16, const float* q_scale, int m, float table_scale, int d, int d_simd_,
            const Int16Order& order, int permuted = -1)
      : d_simd(d_simd_), d_(d), q_(static_cast<size_t>(m) * d), scales_(static_cast<size_t>(m)) {
    const int chunks = order.block / order.chunk;
    const size_t chunk_bytes = static_cast<size_t>(order.chunk) * sizeof(int16_t);
    for (int a = 0; a < m; ++a) {
      const int16_t* src = q16 + static_cast<int64_t>(a) * d;
      int16_t* dst = q_.data() + static_cast<int64_t>(a) * d;
      for (int c = 0; c < (permuted < 0 ? d_simd : permuted); c += order.block) {
        for (int p = 0; p < chunks; ++p) {
          std::memcpy(dst + c + p * order.chunk, src + c + order.from[p] * order.chunk, chunk_bytes);
        }
      }
      for (int i = permuted < 0 ? d_simd : permuted; i < d; ++i) dst[i] = src[i];
      scales_[a] = q_scale[a] * table_scale;  // the scalar kernel's product
    }
  }
  const int16_t* query(int a) const { return q_.data() + static_cast<int64_t>(a) * d_; }
  const float* scale(int a) const { return scales_.data() + a; }
  const int d_simd;

 private:
  int d_;
  std::vector<int16_t> q_;
  std::vector<float> scales_;
};

}  // namespace kernels
}  // namespace turbokv
