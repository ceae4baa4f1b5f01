// What a parallel_for call costs beyond its work, on many cores: the library's ThreadPool against
// other ways of waking workers and handing out items (kernel_choices_avx2.md, round 40). A batch-1
// decode call on 16 cores is ~64 items of ~0.1 ms, and between calls the workers sleep (a model's
// other layers run).
//
//   g++ -O2 -std=c++17 -pthread -Icpp/include bench/pool_overhead.cpp cpp/src/thread_pool.cpp -o /tmp/pool_overhead
//   /tmp/pool_overhead [THREADS] [CALLS]
//
// Pools: "library" (turbokv::ThreadPool as built: items claimed and counted under one mutex,
// workers woken by one condition variable); "shared" (the same wake, items claimed and counted by
// atomics); "own" (atomic claims, each worker woken by its own condition
// variable and handed the call in its own slot, so that woken workers do not queue on one mutex);
// "tree" (as own, but the caller wakes two workers and each woken worker two more before it runs
// items). Each item spins a fixed number of dependent floating-point steps (calibrated to ITEM_US on
// one thread). Prints per pool and shape the median and 10th percentile of a call against the ideal
// items x item / threads. Every item's runs are counted: exit status 1 if any ran other than once.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "turbokv/thread_pool.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using Fn = std::function<void(int64_t)>;

// Atomic claims: one word holds the call's generation (high half) and its next item (low half),
// so that a claim succeeds only in the call whose total and function the claimer holds.
class SlotPool {
 public:
  enum class Wake { kShared, kOwn, kTree };
  SlotPool(int threads, Wake wake) : wake_mode_(wake), slots_(static_cast<size_t>(threads - 1)) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { loop(i - 1); });
  }
  ~SlotPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& s : slots_) {
      {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.stop = true;
      }
      s.wake.notify_one();
    }
    for (auto& t : workers_) t.join();
  }

  void parallel_for(int64_t n, const Fn& fn) {
    Call call;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      call_ = Call{call_.generation + 1, n, &fn};
      call = call_;
      finished_.store(0, std::memory_order_relaxed);
      next_.store(uint64_t{call.generation} << 32, std::memory_order_release);
    }
    switch (wake_mode_) {
      case Wake::kShared: wake_.notify_all(); break;
      case Wake::kOwn:
        for (size_t k = 0; k < slots_.size(); ++k) hand(k, call);
        break;
      case Wake::kTree:
        for (size_t k = 0; k < 2 && k < slots_.size(); ++k) hand(k, call);
        break;
    }
    run(call);
    if (finished_.load(std::memory_order_acquire) != n) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return finished_.load(std::memory_order_acquire) == n; });
    }
  }

 private:
  struct Call {
    uint32_t generation = 0;
    int64_t total = 0;
    const Fn* fn = nullptr;
  };
  struct alignas(64) Slot {
    std::mutex mutex;
    std::condition_variable wake;
    Call call;
    bool stop = false;
  };

  void hand(size_t k, const Call& call) {
    Slot& s = slots_[k];
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      s.call = call;
    }
    s.wake.notify_one();
  }

  void run(const Call& call) {
    uint64_t v = next_.load(std::memory_order_acquire);
    for (;;) {
      if ((v >> 32) != call.generation || static_cast<int64_t>(v & 0xffffffffu) >= call.total) return;
      if (!next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
      (*call.fn)(static_cast<int64_t>(v & 0xffffffffu));
      if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == call.total) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        done_.notify_all();
      }
      v = next_.load(std::memory_order_acquire);
    }
  }

  void loop(int index) {
    uint32_t seen = 0;
    for (;;) {
      Call call;
      if (wake_mode_ == Wake::kShared) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || call_.generation != seen; });
        if (stop_) return;
        call = call_;
      } else {
        Slot& s = slots_[static_cast<size_t>(index)];
        std::unique_lock<std::mutex> lock(s.mutex);
        s.wake.wait(lock, [&] { return s.stop || s.call.generation != seen; });
        if (s.stop) return;
        call = s.call;
      }
      seen = call.generation;
      if (wake_mode_ == Wake::kTree) {
        for (size_t k = 2 * static_cast<size_t>(index) + 2; k < 2 * static_cast<size_t>(index) + 4 && k < slots_.size(); ++k) {
          hand(k, call);
        }
      }
      run(call);
    }
  }

  const Wake wake_mode_;
  std::vector<Slot> slots_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  Call call_;
  bool stop_ = false;
  std::atomic<uint64_t> next_{0};
  std::atomic<int64_t> finished_{0};
};

volatile double g_factor = 0.9999999;  // read at run time, so that the loop cannot be folded

// A fixed amount of work: `steps` dependent multiply-adds.
double spin(int64_t steps, double x) {
  const double f = g_factor;
  for (int64_t i = 0; i < steps; ++i) x = x * f + 1e-7;
  return x;
}

int64_t calibrate(double item_us) {
  int64_t steps = 1 << 12;
  for (;;) {
    double best = 1e30;
    for (int r = 0; r < 20; ++r) {
      const auto t0 = Clock::now();
      volatile double sink = spin(steps, 1.0);
      (void)sink;
      best = std::min(best, std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    if (best > item_us / 4) return static_cast<int64_t>(static_cast<double>(steps) * item_us / best);
    if (steps > (int64_t{1} << 40)) std::abort();
    steps *= 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : static_cast<int>(std::thread::hardware_concurrency());
  const int calls = argc > 2 ? std::atoi(argv[2]) : 400;
  if (argc > 3 || threads < 2 || calls < 1) {
    std::fprintf(stderr, "usage: pool_overhead [THREADS>=2] [CALLS>=1]\n");
    return 2;
  }
  turbokv::ThreadPool library(threads);
  SlotPool shared(threads, SlotPool::Wake::kShared), own(threads, SlotPool::Wake::kOwn),
      tree(threads, SlotPool::Wake::kTree);
  const char* names[] = {"library", "shared", "own", "tree"};
  std::function<void(int64_t, const Fn&)> pools[] = {
      [&](int64_t n, const Fn& f) { library.parallel_for(n, f); },
      [&](int64_t n, const Fn& f) { shared.parallel_for(n, f); },
      [&](int64_t n, const Fn& f) { own.parallel_for(n, f); },
      [&](int64_t n, const Fn& f) { tree.parallel_for(n, f); }};
  constexpr int kPools = 4;
  std::printf("threads %d, calls %d per pool and shape (pools in turns), a 300 us gap between calls\n\n",
              threads, calls);
  std::printf("| pool | items | item us | ideal us | median us | p10 us | median / ideal |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  int failures = 0;
  const int64_t gap_steps = calibrate(300.0);
  for (double item_us : {25.0, 100.0}) {
    const int64_t steps = calibrate(item_us);
    for (int64_t items : {int64_t{threads}, int64_t{4} * threads, int64_t{8} * threads}) {
      std::vector<std::vector<double>> times(kPools);
      std::vector<std::atomic<int>> hits(static_cast<size_t>(items));
      for (int c = 0; c < calls; ++c) {
        for (int p = 0; p < kPools; ++p) {
          for (auto& h : hits) h.store(0, std::memory_order_relaxed);
          volatile double gap = spin(gap_steps, 1.0);  // the workers fall asleep, as between layers
          (void)gap;
          const auto t0 = Clock::now();
          pools[p](items, [&](int64_t i) {
            volatile double r = spin(steps, 1.0 + static_cast<double>(i));
            (void)r;
            hits[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed);
          });
          times[static_cast<size_t>(p)].push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
          for (auto& h : hits) failures += h.load(std::memory_order_relaxed) != 1;
        }
      }
      const double ideal = static_cast<double>(items) * item_us / threads;
      for (int p = 0; p < kPools; ++p) {
        auto& t = times[static_cast<size_t>(p)];
        std::sort(t.begin(), t.end());
        const double median = t[t.size() / 2], p10 = t[t.size() / 10];
        std::printf("| %s | %lld | %.0f | %.1f | %.1f | %.1f | %.2f |\n", names[p], static_cast<long long>(items),
                    item_us, ideal, median, p10, median / ideal);
      }
    }
  }
  if (failures) std::printf("FAILED: %d items ran other than once\n", failures);
  return failures ? 1 : 0;
}
