// Readers racing a writer on one KVCacheLayer. Every reader must see a whole state (its shape and
// its data from one lock), and nothing may read or write out of bounds. CI also runs these under
// ThreadSanitizer (scripts/tsan.sh), which reports any unsynchronised access.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "test_util.hpp"
#include "turbokv/kv_cache.hpp"

using namespace turbokv;

namespace {

constexpr int kDim = 32, kHeads = 2, kQHeads = 4;
constexpr int64_t kBase = 40, kGrow = 600;  // the writer grows 40 -> 640 tokens (3 chunks) and back

CacheConfig racing_config(int64_t window) {
  CacheConfig c;
  c.head_dim = kDim;
  c.kv_heads = kHeads;
  c.key.bits = 4;
  c.value.bits = 3;
  c.residual_window = window;
  return c;
}

// Invalid-argument refusals are expected (a reader's request may not fit the state it meets);
// anything else, or a crash, fails.
template <typename F>
void tolerate_refusal(F f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
  }
}

// Runs the writer at least `cycles` times (update kGrow tokens, trim them, and every 4th cycle clear
// and refill with another batch size) while `readers` threads call read(), and goes on until every
// reader has finished kReadsPerReader reads while it ran: on a loaded machine the writer could
// otherwise finish before a reader was scheduled, and nothing would have raced. Returns the reads.
constexpr int64_t kReadsPerReader = 2;
template <typename Read>
int64_t race(KVCacheLayer& cache, int cycles, int readers, Read read) {
  std::atomic<bool> done{false};
  std::vector<std::atomic<int64_t>> reads(readers);
  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      while (!done.load()) {
        read(r);
        ++reads[r];
      }
    });
  }
  const auto every_reader_has_read = [&] {
    for (const auto& n : reads) {
      if (n.load() < kReadsPerReader) return false;
    }
    return true;
  };
  const auto grow1 = test_util::gaussian_rows(kHeads * kGrow, kDim, 21);
  const auto grow2 = test_util::gaussian_rows(2 * kHeads * kGrow, kDim, 22);
  for (int c = 0; c < cycles || !every_reader_has_read(); ++c) {
    // Tolerated refusals: a second writer (one test has one) may have moved the length or batch.
    const int64_t batch = cache.batch();
    const auto& grow = batch == 1 ? grow1 : grow2;
    tolerate_refusal([&] { cache.update(grow.data(), grow.data(), batch, kGrow); });
    tolerate_refusal([&] { cache.trim(kGrow); });
    if (c % 4 == 3) {
      const int64_t next = batch == 1 ? 2 : 1;
      const auto& refill = next == 1 ? grow1 : grow2;
      cache.clear();
      tolerate_refusal([&] { cache.update(refill.data(), refill.data(), next, kBase); });
    }
  }
  done = true;
  for (auto& t : threads) t.join();
  int64_t total = 0;
  for (const auto& n : reads) total += n.load();
  return total;
}

void fill(KVCacheLayer& cache) {
  const auto k = test_util::gaussian_rows(kHeads * kBase, kDim, 20);
  cache.update(k.data(), k.data(), 1, kBase);
}

}  // namespace

class Concurrency : public ::testing::TestWithParam<int64_t> {};  // the residual window

TEST_P(Concurrency, FetchSeesAWholeState) {
  KVCacheLayer cache(racing_config(GetParam()));
  fill(cache);
  std::atomic<int64_t> torn{0};
  race(cache, 12, 2, [&](int) {
    const CacheSnapshot s = cache.fetch();
    const auto expect = static_cast<size_t>(s.batch * kHeads * s.length * kDim);
    if (s.keys.size() != expect || s.values.size() != expect) ++torn;
    if (s.length != kBase && s.length != kBase + kGrow && s.length != 0) ++torn;
  });
  EXPECT_EQ(torn.load(), 0);
}

TEST_P(Concurrency, AttentionWithAndWithoutAMask) {
  KVCacheLayer cache(racing_config(GetParam()));
  fill(cache);
  const auto q1 = test_util::gaussian_rows(kQHeads, kDim, 23);
  const auto q2 = test_util::gaussian_rows(2 * kQHeads, kDim, 24);
  // A mask sized for one of the two lengths the writer moves between: the cache must check it
  // against the length it holds while it reads, and refuse it otherwise.
  const std::vector<uint8_t> mask(2 * (kBase + kGrow), 1);
  const int64_t reads = race(cache, 12, 2, [&](int r) {
    std::vector<float> out(2 * kQHeads * kDim);
    for (int64_t batch : {1, 2}) {
      AttentionOptions o{0.2f};
      o.min_parallel_bytes = 0;  // reader 0 on the pool even for this small cache (its threads race too)
      if (r == 1) {
        o.key_valid = mask.data();
        o.key_valid_tokens = kBase + kGrow;
      }
      tolerate_refusal([&] {
        cache.attention((batch == 1 ? q1 : q2).data(), batch, kQHeads, 1, o, out.data(), r == 0);
      });
    }
  });
  EXPECT_GE(reads, 2 * kReadsPerReader);
}

TEST_P(Concurrency, ExportSizesAndUpdateAndFetch) {
  KVCacheLayer cache(racing_config(GetParam()));
  fill(cache);
  std::atomic<int64_t> torn{0};
  const auto one = test_util::gaussian_rows(kHeads, kDim, 25);
  race(cache, 12, 3, [&](int r) {
    if (r == 0) {
      const CacheState st = cache.export_state();
      if (st.keys.streams != st.batch * kHeads && st.keys.streams != 0) ++torn;
      if (st.keys.chunk_length + st.keys.window_length !=
          st.values.chunk_length + st.values.window_length) {
        ++torn;
      }
    } else if (r == 1) {
      (void)cache.length();
      (void)cache.batch();
      (void)cache.used_bytes();
      (void)cache.allocated_bytes();
    } else {
      // A second writer: one token in and out; refused while the cache holds batch 2.
      tolerate_refusal([&] {
        const CacheSnapshot s = cache.update_and_fetch(one.data(), one.data(), 1, 1);
        if (s.keys.size() != static_cast<size_t>(s.batch * kHeads * s.length * kDim)) ++torn;
        cache.trim(1);
      });
    }
  });
  EXPECT_EQ(torn.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Window, Concurrency, ::testing::Values(int64_t{0}, int64_t{16}));
