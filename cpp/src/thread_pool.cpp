#include "turbokv/thread_pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#ifdef __linux__
#include <sched.h>
#endif
#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#include <pthread.h>
#endif

namespace turbokv {

int ThreadPool::default_size() {
  if (const char* env = std::getenv("TURBOKV_NUM_THREADS")) {
    // Refused rather than ignored: atoi read "8x" as 8 and "eight" as 0 (then every CPU).
    const std::string text(env);
    const bool digits = !text.empty() && text.size() <= 9 &&
                        std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    const long n = digits ? std::stol(text) : 0;
    if (n < 1 || n > kMaxThreads) {
      throw std::invalid_argument(std::string("TURBOKV_NUM_THREADS=") + env + " is not a whole number from 1 to " +
                                  std::to_string(kMaxThreads));
    }
    return static_cast<int>(n);
  }
#ifdef __linux__
  // hardware_concurrency() counts every CPU of the host: under taskset or in a container limited
  // to a few CPUs the pool would start a thread per host CPU and oversubscribe the few.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
    const int n = CPU_COUNT(&allowed);
    if (n > 0) return std::min(n, kMaxThreads);
  }
#endif
  const int n = static_cast<int>(std::thread::hardware_concurrency());
  return n > 0 ? std::min(n, kMaxThreads) : 1;
}

namespace {

// One parallel_for handed to an OpenMP region: its threads claim items from one counter.
struct OpenMpJob {
  const std::function<void(int64_t)>* fn;
  int64_t n;
  std::atomic<int64_t> next{0};
  std::mutex mutex;
  std::exception_ptr error;
};

// Runs on every thread of the region; no exception may cross the runtime's C frames.
void run_openmp_job(void* data) {
  auto* job = static_cast<OpenMpJob*>(data);
  for (int64_t i = job->next.fetch_add(1); i < job->n; i = job->next.fetch_add(1)) {
    try {
      (*job->fn)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(job->mutex);
      if (!job->error) job->error = std::current_exception();
    }
  }
}

}  // namespace

int ThreadPool::size() const {
  if (uses_openmp()) {
    const int fixed = omp_threads_.load(std::memory_order_relaxed);
    return std::clamp(fixed > 0 ? fixed : omp_max_threads_.load(std::memory_order_relaxed)(), 1, kMaxThreads);
  }
  return static_cast<int>(workers_.size()) + 1;
}

void ThreadPool::use_openmp(OpenMpParallel parallel, OpenMpMaxThreads max_threads, int threads) {
  std::lock_guard<std::mutex> call(call_mutex_);  // not while a parallel_for runs
  omp_threads_.store(threads, std::memory_order_relaxed);
  omp_max_threads_.store(max_threads, std::memory_order_relaxed);
  omp_parallel_.store(parallel, std::memory_order_release);
}

void ThreadPool::leave_openmp_after_fork() { omp_parallel_.store(nullptr, std::memory_order_release); }

bool adopt_openmp_runtime(const std::string& library, int threads) {
#if defined(__linux__) || defined(__APPLE__)
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!handle) return false;
  auto parallel = reinterpret_cast<OpenMpParallel>(dlsym(handle, "GOMP_parallel"));
  auto max_threads = reinterpret_cast<OpenMpMaxThreads>(dlsym(handle, "omp_get_max_threads"));
  // The handle stays open: the runtime must outlive the pool's use of it.
  if (!parallel || !max_threads || threads < 0) return false;
  // A forked child has none of the runtime's threads (GNU OpenMP would wait for them): it goes
  // back to this pool, whose caller then runs every item itself.
  static const int registered = pthread_atfork(nullptr, nullptr, [] { ThreadPool::shared().leave_openmp_after_fork(); });
  (void)registered;
  ThreadPool::shared().use_openmp(parallel, max_threads, threads);
  return true;
#else
  (void)library;
  (void)threads;
  return false;
#endif
}

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = default_size();
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
  if (n == 1 || size() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> call(call_mutex_);
  if (OpenMpParallel omp = omp_parallel_.load(std::memory_order_acquire)) {
    OpenMpJob job;
    job.fn = &fn;
    job.n = n;
    omp(run_openmp_job, &job, static_cast<unsigned>(std::min<int64_t>(n, size())), 0);
    if (job.error) std::rethrow_exception(job.error);
    return;
  }
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
