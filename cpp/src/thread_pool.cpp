#include "turbokv/thread_pool.hpp"

#include <cstdlib>
#include <string>

namespace turbokv {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) {
    const char* env = std::getenv("TURBOKV_NUM_THREADS");
    threads = env ? std::atoi(env) : static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

ThreadPool& ThreadPool::shared() {
  static ThreadPool pool;
  return pool;
}

void ThreadPool::run_items() {
  for (;;) {
    int64_t i;
    const std::function<void(int64_t)>* fn;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_ >= total_) return;
      i = next_++;
      fn = fn_;  // read with the claim: fn_ stays valid until this item has finished
    }
    try {
      (*fn)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (++finished_ == total_) done_.notify_all();
  }
}

void ThreadPool::work_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_items();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || workers_.empty()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> call(call_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    next_ = 0;
    total_ = n;
    finished_ = 0;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  run_items();
  std::unique_lock<std::mutex> lock(mutex_);
  // Wait for the items only, not for every worker to wake: on a VM a sleeping thread can take
  // tens of microseconds to wake, and one that wakes after the others took every item has
  // nothing to do. Workers read fn_ only with an item's claim, so it may be reset here.
  done_.wait(lock, [&] { return finished_ == total_; });
  fn_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace turbokv
