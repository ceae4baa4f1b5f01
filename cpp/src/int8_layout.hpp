// Internal: how the SIMD int8 score kernels (dot_int8_kernels.cpp, dot_int8_vnni_kernels.cpp)
// lay a key's index bytes and the permuted queries out in lanes.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

namespace turbokv {
namespace kernels {

// The SIMD kernels read kLanes index bytes per step. For 1, 2 and 4 bits a packed byte holds
// fields = 8 / bits whole indices (field s at bit s * bits), so kLanes code bytes shifted and
// masked give `fields` vectors of kLanes indices straight from the packed codes; other widths
// (3 bits) are unpacked to one byte per index first (fields = 1). The query is permuted once into
// that lane order: step g, field s, lane l holds coordinate (kLanes * g + l) * fields + s.
struct Int8Layout {
  int fields;      // indices per byte of the scored stream
  int bits;        // their width (8: already one byte per index)
  int chunks;      // kLanes-byte steps per key
  int64_t stride;  // bytes per key in the scored stream (a multiple of 16)
};

// Packed lanes need whole indices per byte and whole 16-byte blocks per key.
inline bool int8_packed_lanes(int bits, int64_t code_bytes, int d) {
  return code_bytes % 16 == 0 && d * bits == code_bytes * 8 && (bits == 1 || bits == 2 || bits == 4);
}

// The AVX2 kernel also reads rows that end inside its 16-byte blocks (4-28 bytes into a last 32-byte
// step, zero-extended: e.g. 4 bits at head_dim 80, 2 bits at 80 and 96): otherwise such keys were
// unpacked to index bytes one by one, 2.2-2.4x the time per key of the packed lanes at head_dim 128
// (kernel_choices_avx2.md round 29).
inline bool int8_packed_lanes_avx2(int bits, int64_t code_bytes, int d) {
  return code_bytes % 4 == 0 && d * bits == code_bytes * 8 && (bits == 1 || bits == 2 || bits == 4);
}

inline Int8Layout int8_layout(int lanes, int fields, int bits, int64_t code_bytes, int d) {
  const bool unpacked = fields == 1;
  const int chunks = static_cast<int>(((unpacked ? d : code_bytes) + lanes - 1) / lanes);
  return Int8Layout{fields, unpacked ? 8 : bits, chunks,
                    unpacked ? static_cast<int64_t>(lanes) * chunks : code_bytes};
}

inline std::vector<int8_t> permute_queries(const int8_t* q8, int m, int d, const Int8Layout& L,
                                           int lanes) {
  const int64_t per_query = static_cast<int64_t>(L.chunks) * L.fields * lanes;
  std::vector<int8_t> out(static_cast<size_t>(per_query * m), 0);  // zero past d: adds nothing
  for (int a = 0; a < m; ++a) {
    for (int g = 0; g < L.chunks; ++g) {
      for (int s = 0; s < L.fields; ++s) {
        for (int l = 0; l < lanes; ++l) {
          const int i = (lanes * g + l) * L.fields + s;
          if (i < d) out[a * per_query + (g * L.fields + s) * lanes + l] = q8[static_cast<int64_t>(a) * d + i];
        }
      }
    }
  }
  return out;
}

// make() (permuted queries for a layout), remembered per thread and call site while the queries and
// the layout stay the same: decode scores one query batch against every 256-token block, and
// permuting it again per block took 4% of K4V4 decode (perf; 0.89-0.92x the time without it on
// AVX-512, kernel_choices_avx2.md round 16). The check compares the m x d query bytes.
template <typename Make>
const std::vector<int8_t>& remembered_queries(const int8_t* q8, int m, int d, const Int8Layout& L,
                                              int lanes, Make make) {
  struct Memo {
    std::vector<int8_t> q8, queries;
    int m = -1, d = -1, fields = -1, bits = -1, chunks = -1, lanes = -1;
    int64_t stride = -1;
  };
  thread_local Memo memo;
  const size_t bytes = static_cast<size_t>(m) * static_cast<size_t>(d);
  const bool same = memo.m == m && memo.d == d && memo.fields == L.fields && memo.bits == L.bits &&
                    memo.chunks == L.chunks && memo.stride == L.stride && memo.lanes == lanes &&
                    std::memcmp(memo.q8.data(), q8, bytes) == 0;
  if (!same) {
    memo.queries = make();
    memo.q8.assign(q8, q8 + bytes);
    memo.m = m;
    memo.d = d;
    memo.fields = L.fields;
    memo.bits = L.bits;
    memo.chunks = L.chunks;
    memo.stride = L.stride;
    memo.lanes = lanes;
  }
  return memo.queries;
}

}  // namespace kernels
}  // namespace turbokv
