// Read bandwidth of decode's access pattern against the same bytes stored contiguously per stream
// (bench/results/kernel_choices_avx2.md, round 34: what binds batch-1 decode).
//
//   g++ -O2 -mavx2 -pthread bench/read_layout.cpp -o /tmp/read_layout && /tmp/read_layout [CHUNKS] [THREADS]
//
// A TokenStore holds 256-token chunks of every stream: a K4V4 cache of 8 KV heads at head_dim 128
// keeps each stream's 16 KiB of key codes and 16 KiB of value codes per chunk, the next chunk's
// 270 KiB away. Decode reads, per stream and chunk, the keys then the values. Rows: that pattern
// ("chunked"), the same with each value line prefetched beside its key line (the score kernels'
// RowsAhead), the same bytes with each stream's keys and values contiguous over all chunks ("per
// stream"), and the same in groups of 8 chunks (each stream's 8 chunks contiguous, 128 KiB of keys
// then of values per group: "groups of 8"). Streams are split over THREADS threads (default 1);
// best of 10 passes, each after reading a 256 MiB buffer so that nothing is cached. GB/s of the
// bytes read, all threads together.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr size_t kStreams = 8, kBlock = 16384;  // bytes per stream and chunk, one field
constexpr size_t kField = kStreams * kBlock, kChunkBytes = 2 * kField + 8192;  // + norms

// Sum of the bytes of [p, p + n), prefetching [ahead, ahead + n) line by line when ahead is set.
uint64_t read_bytes(const uint8_t* p, size_t n, const uint8_t* ahead) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 64) {
    if (ahead) __builtin_prefetch(ahead + i);
    const __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i));
    const __m256i b = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32));
    acc = _mm256_add_epi64(acc, _mm256_add_epi64(_mm256_sad_epu8(a, _mm256_setzero_si256()),
                                                 _mm256_sad_epu8(b, _mm256_setzero_si256())));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

uint8_t* filled(size_t bytes) {
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
  if (!p) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(1);
  }
  std::memset(p, 1, bytes);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t chunks = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 128;  // 128: 32K tokens
  const int threads = argc > 2 ? std::atoi(argv[2]) : 1;
  if (chunks == 0 || threads < 1 || kStreams % threads != 0) {
    std::fprintf(stderr, "usage: read_layout [CHUNKS>0] [THREADS dividing %zu]\n", kStreams);
    return 2;
  }
  constexpr size_t kGroup = 8;  // chunks per group
  const size_t groups = (chunks + kGroup - 1) / kGroup;
  std::vector<uint8_t*> chunk(chunks), keys(kStreams), values(kStreams), group(groups);
  for (auto& c : chunk) c = filled(kChunkBytes);
  for (auto& g : group) g = filled(kGroup * kChunkBytes);
  for (size_t s = 0; s < kStreams; ++s) {
    keys[s] = filled(chunks * kBlock);
    values[s] = filled(chunks * kBlock);
  }
  const size_t flush_bytes = size_t{256} << 20;
  uint8_t* flush = filled(flush_bytes);
  const char* names[4] = {"chunked", "chunked, value lines prefetched beside keys", "per stream", "groups of 8"};
  std::printf("| layout | ms | GB/s |\n| --- | --- | --- |\n");
  uint64_t sink = 0;
  for (int mode = 0; mode < 4; ++mode) {
    double best = 1e30;
    for (int pass = 0; pass < 10; ++pass) {
      sink += read_bytes(flush, flush_bytes, nullptr);
      std::vector<uint64_t> sums(static_cast<size_t>(threads));
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          uint64_t sum = 0;
          for (size_t s = t * kStreams / threads; s < (t + 1) * kStreams / threads; ++s) {
            for (size_t c = 0; c < chunks; ++c) {
              const uint8_t* k = chunk[c] + s * kBlock;
              const uint8_t* v = chunk[c] + kField + s * kBlock;
              if (mode == 2) {
                k = keys[s] + c * kBlock;
                v = values[s] + c * kBlock;
              } else if (mode == 3) {  // group: keys of every stream, then values; stream s's 8 chunks in a row
                const uint8_t* g = group[c / kGroup];
                k = g + (s * kGroup + c % kGroup) * kBlock;
                v = g + kGroup * kField + (s * kGroup + c % kGroup) * kBlock;
              }
              sum += read_bytes(k, kBlock, mode == 1 ? v : nullptr);
              sum += read_bytes(v, kBlock, nullptr);
            }
          }
          sums[static_cast<size_t>(t)] = sum;
        });
      }
      for (auto& th : pool) th.join();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      for (uint64_t x : sums) sink += x;
    }
    const double bytes = 2.0 * static_cast<double>(chunks * kStreams * kBlock);
    std::printf("| %s | %.3f | %.1f |\n", names[mode], best * 1e3, bytes / best / 1e9);
  }
  std::printf("threads %d, %zu chunks (%zu tokens), %.1f MB read per pass (checksum %llu)\n", threads, chunks,
              chunks * 256, 2.0 * static_cast<double>(chunks * kStreams * kBlock) / 1e6,
              static_cast<unsigned long long>(sink % 1000));
  return 0;
}
