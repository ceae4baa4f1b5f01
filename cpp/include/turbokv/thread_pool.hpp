// A small fixed pool of worker threads for parallel_for over independent (batch, head) items, or
// the threads of a host's OpenMP runtime (torch's) once adopted.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace turbokv {

// GNU OpenMP's entry point for a parallel region (libgomp's ABI, which LLVM's libomp exports too):
// fn(data) on `threads` threads, the caller among them, returning when all have finished.
using OpenMpParallel = void (*)(void (*fn)(void*), void* data, unsigned threads, unsigned flags);
using OpenMpMaxThreads = int (*)();

class ThreadPool {
 public:
  // threads = 0: default_size().
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Threads a parallel_for runs on (the caller included).
  int size() const;

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

  // From now on parallel_for runs on a host OpenMP runtime's threads instead of this pool's:
  // between two of the host's ops (torch's) its threads spin, waiting for the next region, and
  // would share the cores with this pool's (a 2K-token prompt's TTFT 1.6x the dense one on 16
  // cores, session 48); in a region of their own they take the items at once. threads > 0: that
  // many; 0: the runtime's omp_get_max_threads() at each call (torch.set_num_threads follows).
  void use_openmp(OpenMpParallel parallel, OpenMpMaxThreads max_threads, int threads);
  bool uses_openmp() const { return omp_parallel_.load(std::memory_order_acquire) != nullptr; }
  // Back to this pool's own threads (in a forked child: no lock may be taken there).
  void leave_openmp_after_fork();

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
  std::atomic<OpenMpParallel> omp_parallel_{nullptr};
  std::atomic<OpenMpMaxThreads> omp_max_threads_{nullptr};
  std::atomic<int> omp_threads_{0};
};

// Adopts the OpenMP runtime already loaded from `library` (a shared library path) for
// ThreadPool::shared(): found with dlopen(RTLD_NOLOAD), so one that is not loaded is never loaded;
// its GOMP_parallel and omp_get_max_threads looked up by name. threads as in use_openmp. Returns
// false, changing nothing, where it is not loaded, lacks them, or off Linux and macOS.
bool adopt_openmp_runtime(const std::string& library, int threads);

}  // namespace turbokv
