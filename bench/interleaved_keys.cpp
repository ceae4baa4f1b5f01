// Int8 scores of 4-bit keys stored dword-interleaved per 16 keys, against the same keys stored as
// rows (bench/results/kernel_choices_avx2.md, round 35: 0.47x the library kernel's time alone, but
// in decode 0.875-0.90x the time in cache and 1.01-1.15x at 32K from memory).
//
//   g++ -O2 -mavx512f -mavx512bw -mavx512vnni bench/interleaved_keys.cpp -o /tmp/interleaved_keys
//   /tmp/interleaved_keys [KEYS] [REPEATS]
//
// head_dim 128 (64 code bytes per key), 4 queries (GQA 4), one thread. Byte b of a key holds
// coordinates 2b (low nibble) and 2b + 1 (high). "interleaved": 64 bytes hold dword j of 16 keys,
// so after the lookups one vpdpbusd per query and nibble adds 4 coordinates to each of 16 keys'
// sums (the query's dword broadcast from memory): no fold, 16 scores per register. "rows": the
// key's 64 bytes as one register, the same lookups and vpdpbusd count, then a 16-lane sum per
// query and key. Both take centroids c + 128 unsigned and subtract 128 x the query's byte sum
// (the library kernels' offset trick). Prints ns per key (best of REPEATS calls) and checks every
// score against a scalar sum; exits 1 on a mismatch, 2 on bad arguments.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr int kDim = 128, kQueries = 4, kBytes = kDim / 2, kDwords = kBytes / 4, kGroup = 16;

struct Queries {  // per query: its int8 coordinates split by nibble, and 128 x their sum
  alignas(64) uint8_t low[kQueries][kBytes];  // coordinates 0, 2, 4, ...
  alignas(64) uint8_t high[kQueries][kBytes];  // coordinates 1, 3, 5, ...
  int32_t offset[kQueries];
};

// acc += a (unsigned bytes) x the signed dword at q broadcast to every lane, in place (GCC 12
// copies accumulators around the intrinsic; round 34).
inline void dpbusd_broadcast(__m512i& acc, __m512i a, const uint8_t* q) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*reinterpret_cast<const int32_t*>(q)));
}

inline void dpbusd(__m512i& acc, __m512i a, __m512i b) { asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b)); }

void scores_interleaved(const uint8_t* keys, int64_t n, const Queries& q, __m512i table, float* out) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  for (int64_t g = 0; g < n / kGroup; ++g) {
    const uint8_t* base = keys + g * kGroup * kBytes;
    __m512i acc[kQueries];
    for (auto& a : acc) a = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int j = 0; j < kDwords; ++j) {
      const __m512i x = _mm512_load_si512(base + j * 64);
      const __m512i low = _mm512_shuffle_epi8(table, _mm512_and_si512(x, mask));
      const __m512i high = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(x, 4), mask));
#pragma GCC unroll 4
      for (int a = 0; a < kQueries; ++a) {
        dpbusd_broadcast(acc[a], low, q.low[a] + 4 * j);
        dpbusd_broadcast(acc[a], high, q.high[a] + 4 * j);
      }
    }
    for (int a = 0; a < kQueries; ++a) {
      const __m512i sums = _mm512_sub_epi32(acc[a], _mm512_set1_epi32(q.offset[a]));
      _mm512_storeu_ps(out + a * n + g * kGroup, _mm512_cvtepi32_ps(sums));
    }
  }
}

void scores_rows(const uint8_t* keys, int64_t n, const Queries& q, __m512i table, float* out) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  __m512i low_q[kQueries], high_q[kQueries];
  for (int a = 0; a < kQueries; ++a) {
    low_q[a] = _mm512_load_si512(q.low[a]);
    high_q[a] = _mm512_load_si512(q.high[a]);
  }
  for (int64_t k = 0; k < n; ++k) {
    const __m512i x = _mm512_loadu_si512(keys + k * kBytes);
    const __m512i low = _mm512_shuffle_epi8(table, _mm512_and_si512(x, mask));
    const __m512i high = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(x, 4), mask));
    for (int a = 0; a < kQueries; ++a) {
      __m512i acc = _mm512_setzero_si512();
      dpbusd(acc, low, low_q[a]);
      dpbusd(acc, high, high_q[a]);
      out[a * n + k] = static_cast<float>(_mm512_reduce_add_epi32(acc) - q.offset[a]);
    }
  }
}

template <typename Fn>
double best_seconds(int repeats, Fn fn) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 200;
  if (n < kGroup || n % kGroup != 0 || repeats < 1) {
    std::fprintf(stderr, "usage: interleaved_keys [KEYS, a positive multiple of %d] [REPEATS>0]\n", kGroup);
    return 2;
  }
  std::srand(1);
  std::vector<uint8_t> rows(static_cast<size_t>(n * kBytes));
  for (auto& b : rows) b = static_cast<uint8_t>(std::rand());
  auto* interleaved = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(n * kBytes)));
  for (int64_t k = 0; k < n; ++k) {
    for (int j = 0; j < kDwords; ++j) {
      std::memcpy(interleaved + (k / kGroup) * kGroup * kBytes + j * 64 + (k % kGroup) * 4, &rows[k * kBytes + j * 4], 4);
    }
  }
  int8_t centroids[16], query[kQueries][kDim];
  for (int c = 0; c < 16; ++c) centroids[c] = static_cast<int8_t>((c - 8) * 8 + 4);  // within +-63
  alignas(64) uint8_t lanes[64];
  for (int i = 0; i < 64; ++i) lanes[i] = static_cast<uint8_t>(centroids[i & 15] + 128);
  const __m512i table = _mm512_load_si512(lanes);
  Queries q;
  for (int a = 0; a < kQueries; ++a) {
    int32_t sum = 0;
    for (int i = 0; i < kDim; ++i) sum += query[a][i] = static_cast<int8_t>(std::rand() % 255 - 127);
    q.offset[a] = 128 * sum;
    for (int b = 0; b < kBytes; ++b) {
      q.low[a][b] = static_cast<uint8_t>(query[a][2 * b]);
      q.high[a][b] = static_cast<uint8_t>(query[a][2 * b + 1]);
    }
  }
  std::vector<float> by_groups(static_cast<size_t>(kQueries * n)), by_rows(by_groups.size());
  const double t_interleaved = best_seconds(repeats, [&] { scores_interleaved(interleaved, n, q, table, by_groups.data()); });
  const double t_rows = best_seconds(repeats, [&] { scores_rows(rows.data(), n, q, table, by_rows.data()); });
  int64_t mismatches = 0;
  for (int64_t k = 0; k < n; ++k) {
    for (int a = 0; a < kQueries; ++a) {
      int32_t sum = 0;
      for (int b = 0; b < kBytes; ++b) {
        const uint8_t x = rows[k * kBytes + b];
        sum += centroids[x & 15] * query[a][2 * b] + centroids[x >> 4] * query[a][2 * b + 1];
      }
      mismatches += (by_groups[a * n + k] != static_cast<float>(sum)) + (by_rows[a * n + k] != static_cast<float>(sum));
    }
  }
  std::printf("| layout | ns per key |\n| --- | --- |\n| interleaved | %.2f |\n| rows | %.2f |\n", t_interleaved / n * 1e9,
              t_rows / n * 1e9);
  std::printf("%lld keys, 4 queries, head_dim 128, 4-bit codes, best of %d; mismatches %lld\n", static_cast<long long>(n),
              repeats, static_cast<long long>(mismatches));
  std::free(interleaved);
  return mismatches == 0 ? 0 : 1;
}
