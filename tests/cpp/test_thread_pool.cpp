// The worker pool behind threaded attention: every item runs exactly once per call and its writes
// are visible when parallel_for returns, although the caller no longer waits for every worker to
// wake (a late one finds no items); an exception reaches the caller; the default size follows
// TURBOKV_NUM_THREADS or the CPUs the process may use. Run under ThreadSanitizer by scripts/tsan.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "turbokv/thread_pool.hpp"

#ifdef __linux__
#include <sched.h>
#endif

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

// Sets an environment variable for one scope, restoring what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

TEST(ThreadPool, DefaultSizeTakesTurbokvNumThreadsAndRefusesWhatIsNotACount) {
  {
    ScopedEnv env("TURBOKV_NUM_THREADS", "3");
    EXPECT_EQ(ThreadPool::default_size(), 3);
    EXPECT_EQ(ThreadPool().size(), 3);
  }
  for (const char* bad : {"", "eight", "8x", " 8", "0", "-2", "4097", "99999999999999999999", "2.5"}) {
    ScopedEnv env("TURBOKV_NUM_THREADS", bad);
    EXPECT_THROW(ThreadPool::default_size(), std::invalid_argument) << "'" << bad << "'";
    EXPECT_THROW(ThreadPool pool, std::invalid_argument) << "'" << bad << "'";
  }
  ScopedEnv env("TURBOKV_NUM_THREADS", "4096");
  EXPECT_EQ(ThreadPool::default_size(), ThreadPool::kMaxThreads);
}

#ifdef __linux__
TEST(ThreadPool, DefaultSizeCountsTheCpusThisProcessMayRunOn) {
  // As under taskset or in a container given a few of the host's CPUs: the mask, not the host.
  ScopedEnv env("TURBOKV_NUM_THREADS", nullptr);
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  std::vector<int> allowed;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &saved)) allowed.push_back(cpu);
  }
  ASSERT_FALSE(allowed.empty());
  EXPECT_EQ(ThreadPool::default_size(), static_cast<int>(allowed.size()));
  for (size_t count = 1; count <= std::min<size_t>(2, allowed.size()); ++count) {
    cpu_set_t some;
    CPU_ZERO(&some);
    for (size_t i = 0; i < count; ++i) CPU_SET(allowed[i], &some);
    ASSERT_EQ(sched_setaffinity(0, sizeof(some), &some), 0);
    EXPECT_EQ(ThreadPool::default_size(), static_cast<int>(count));
    EXPECT_EQ(ThreadPool().size(), static_cast<int>(count));
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof(saved), &saved), 0);
}
#endif

}  // namespace
// A stand-in for GOMP_parallel: fn(data) on `threads` threads (the caller among them), as a
// host OpenMP runtime runs a region; records the team sizes asked for.
std::atomic<int> fake_regions{0}, fake_last_team{0}, fake_max{3};
void fake_gomp_parallel(void (*fn)(void*), void* data, unsigned threads, unsigned) {
  ++fake_regions;
  fake_last_team = static_cast<int>(threads);
  std::vector<std::thread> team;
  for (unsigned t = 1; t < threads; ++t) team.emplace_back(fn, data);
  fn(data);
  for (auto& th : team) th.join();
}
int fake_max_threads() { return fake_max.load(); }

TEST(ThreadPool, AHostOpenMpRuntimeRunsEveryItemOnceAndRethrows) {
  ThreadPool pool(2);
  EXPECT_FALSE(pool.uses_openmp());
  pool.use_openmp(fake_gomp_parallel, fake_max_threads, 0);
  ASSERT_TRUE(pool.uses_openmp());
  EXPECT_EQ(pool.size(), 3);  // the runtime's omp_get_max_threads(), read at each call
  fake_max = 5;
  EXPECT_EQ(pool.size(), 5);
  std::vector<int> hits(1000, 0);
  pool.parallel_for(1000, [&](int64_t i) { hits[static_cast<size_t>(i)] += 1; });
  EXPECT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  EXPECT_EQ(fake_regions.load(), 1);
  EXPECT_EQ(fake_last_team.load(), 5);
  pool.parallel_for(3, [](int64_t) {});
  EXPECT_EQ(fake_last_team.load(), 3);  // never more threads than items
  EXPECT_THROW(pool.parallel_for(50, [](int64_t i) { if (i == 17) throw std::runtime_error("item 17"); }),
               std::runtime_error);
  std::atomic<int> after{0};
  pool.parallel_for(10, [&](int64_t) { ++after; });  // still usable
  EXPECT_EQ(after.load(), 10);
  pool.use_openmp(fake_gomp_parallel, fake_max_threads, 2);  // a fixed count (TURBOKV_NUM_THREADS)
  EXPECT_EQ(pool.size(), 2);
}

}  // namespace turbokv
