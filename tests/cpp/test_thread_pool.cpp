// The worker pool behind threaded attention: every item runs exactly once per call and its writes
// are visible when parallel_for returns, although the caller no longer waits for every worker to
// wake (a late one finds no items); an exception reaches the caller. Run under ThreadSanitizer by
// scripts/tsan.sh.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "turbokv/thread_pool.hpp"

namespace turbokv {
namespace {

TEST(ThreadPool, EveryItemRunsOnceAndIsVisibleOnReturn) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.size(), 4);
  // Many short calls back to back: a worker that wakes late must neither run an item twice nor
  // run one of a call that has returned.
  for (int call = 0; call < 2000; ++call) {
    const int64_t n = 1 + call % 37;
    std::vector<int> hits(static_cast<size_t>(n), 0);  // plain ints: TSan flags a missing order
    std::atomic<int64_t> total{0};
    pool.parallel_for(n, [&](int64_t i) {
      ++hits[static_cast<size_t>(i)];
      total.fetch_add(i, std::memory_order_relaxed);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)], 1) << "call " << call;
    ASSERT_EQ(total.load(), n * (n - 1) / 2);
  }
}

TEST(ThreadPool, AnExceptionReachesTheCallerAndThePoolStaysUsable) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(50, [](int64_t i) {
                 if (i == 17) throw std::runtime_error("item 17");
               }),
               std::runtime_error);
  std::atomic<int64_t> ran{0};
  pool.parallel_for(50, [&](int64_t) { ran.fetch_add(1); });
  EXPECT_EQ(ran.load(), 50);
}

}  // namespace
}  // namespace turbokv
