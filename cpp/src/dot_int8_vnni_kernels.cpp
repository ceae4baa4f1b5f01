// Int8 scores of 1-4-bit keys on AVX-512 with VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later;
// 3-bit keys also need VBMI, which reads them as the 4-bit rows of their indices). Same integers as
// every other level (dot_int8_kernels.cpp), so the same floats. The kernel's templates are in
// dot_int8_vnni_kernel.inc, compiled twice (packed lanes; 3-bit rows with VBMI).
//
// vpdpbusd multiplies unsigned by signed bytes and adds each 4 neighbouring products into an int32
// lane, exactly (no saturation). The centroids are signed, so the table holds c + 128 (1..255) and
// the query's own sum, times 128, is subtracted once per key: sum (c + 128) q - 128 sum q = sum c q.
// |(c + 128) q| <= 255 * 127 and d <= 1024 keep every partial sum far inside int32.
//
// One 64-byte step covers 64 code bytes of a key: 128 indices at 4 bits, one vpshufb per field
// (the 16-entry table repeated in each 128-bit lane) and one vpdpbusd per field and query. Four keys
// are scored side by side so that their 16 accumulators (4 keys x 4 queries) fold into one register
// of 16 sums in 15 shuffle-and-add steps, 4 per key instead of 4 full reductions per key.
#include <algorithm>
#include <vector>

#include "dpbusd_in_place.hpp"
#include "int8_layout.hpp"
#include "kernels.hpp"
#include "three_bit_nibbles_vbmi.hpp"

namespace turbokv {
namespace kernels {

#if TURBOKV_X86
const bool kHasAvx512Vnni = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") != 0;
}();

bool int8_vnni_fit(int bits, int64_t code_bytes, int d) {
  return kHasAvx512Vnni && (int8_packed_lanes(bits, code_bytes, d) ||
                            (bits == 3 && kHasAvx512Vbmi && int8_three_bit_in_registers(code_bytes, d)));
}

namespace {

// What a call shares across its keys.
struct VnniCall {
  Int8Layout layout;
  int64_t code_bytes;
  int64_t per_query;       // bytes of one permuted query
  const int8_t* queries;   // permuted, per_query bytes each
  const int32_t* offsets;  // 128 * sum of query a's bytes
  const float* scales;     // q_scale[a] * table_scale, the scalar kernel's product
  __m512i table;           // c + 128 as unsigned bytes, repeated in each 128-bit lane
  const ThreeBitNibbles* nibbles;  // 3-bit keys read in registers (namespace three_bit), else null
};

#define TURBOKV_VNNI_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,bmi,bmi2,f16c")))
namespace packed {
#define TURBOKV_VNNI_THREE_BIT 0
#include "dot_int8_vnni_kernel.inc"
#undef TURBOKV_VNNI_THREE_BIT
}  // namespace packed
#undef TURBOKV_VNNI_TARGET

#define TURBOKV_VNNI_TARGET                                                                   \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi,avx2,fma," \
                        "bmi,bmi2,f16c")))
namespace three_bit {
#define TURBOKV_VNNI_THREE_BIT 1
#include "dot_int8_vnni_kernel.inc"
#undef TURBOKV_VNNI_THREE_BIT
}  // namespace three_bit
#undef TURBOKV_VNNI_TARGET

}  // namespace

void dot_packed_int8_vnni(const int8_t* q8, const float* q_scale, int m, const uint8_t* codes,
                          int64_t code_bytes, int64_t n, const int8_t* table8, float table_scale,
                          int bits, int d, float* out, int64_t out_stride, RowsAhead ahead) {
  if (bits == 3 && d % 128 == 0) {
    // Read as the 4-bit rows of their indices in registers (ThreeBitNibbles: a load and 5
    // instructions per 128 indices) by the 4-bit route. Rewritten in a pass of their own first,
    // the keys' loads waited on memory there with nothing else to run (perf; 1.13-1.18x the time,
    // kernel_choices_avx2.md round 20).
    return three_bit::dot_int8_vnni<2, false>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
  }
  if (bits == 3) {
    // Other head_dims (multiples of 32: 4-bit rows of 16 bytes and up that a 64-byte step would
    // read in part): rewritten in a pass first, so that head_dim 64 takes the two-keys-per-load
    // route. One buffer per thread, kept across calls.
    thread_local std::vector<uint8_t> nibbles;
    nibbles.resize(static_cast<size_t>(n) * (d / 2));
    three_bit_rows_as_nibbles(codes, code_bytes, n, d, nibbles.data());
    return packed::dot_int8_vnni_rows<2>(q8, q_scale, m, nibbles.data(), d / 2, n, table8, table_scale, d, out, out_stride, ahead);
  }
  switch (bits) {
    case 4: return packed::dot_int8_vnni_rows<2>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
    case 2: return packed::dot_int8_vnni_rows<4>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
    default: return packed::dot_int8_vnni_rows<8>(q8, q_scale, m, codes, code_bytes, n, table8, table_scale, d, out, out_stride, ahead);
  }
}

#else
const bool kHasAvx512Vnni = false;
bool int8_vnni_fit(int, int64_t, int) { return false; }
#endif

}  // namespace kernels
}  // namespace turbokv
