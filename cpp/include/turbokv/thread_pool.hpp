// A small fixed pool of worker threads for parallel_for over independent (batch, head) items.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace turbokv {

class ThreadPool {
 public:
  // threads = 0: default_size().
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) for i in [0, n) on the pool and the calling thread; returns when all are done.
  // The first exception thrown by fn is rethrown here. Calls from several threads are serialised.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

  // The process-wide pool used by attention (default_size() threads, fixed at its first use).
  static ThreadPool& shared();

  // Threads a default pool takes: TURBOKV_NUM_THREADS if set (a whole number from 1 to
  // kMaxThreads, else std::invalid_argument), else the CPUs this process may run on (its affinity
  // mask on Linux, so taskset, cpusets and container CPU sets are respected;
  // std::thread::hardware_concurrency() elsewhere).
  static int default_size();
  static constexpr int kMaxThreads = 4096;

 private:
  void work_loop();
  void run_items();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t next_ = 0, total_ = 0, finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace turbokv
