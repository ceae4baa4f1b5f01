// A reader-writer lock in which a waiting writer holds off new readers. std::shared_mutex on
// glibc prefers readers: two threads whose reads overlap (attention from two request threads)
// can keep a writer (the generation loop's update) waiting for ever. Here a writer first takes
// a gate that every reader must pass, so the readers already inside finish and the writer goes
// next. Meets the SharedMutex requirements, so std::shared_lock and std::unique_lock work on it.
// Not recursive: a thread holding it in either mode must not take it again.
#pragma once
#include <mutex>
#include <shared_mutex>

namespace turbokv {

class WriterFirstMutex {
 public:
  void lock() {
    std::lock_guard<std::mutex> gate(gate_);  // new readers now wait at the gate
    rw_.lock();                               // for the readers already inside to leave
  }
  bool try_lock() {
    std::unique_lock<std::mutex> gate(gate_, std::try_to_lock);
    return gate.owns_lock() && rw_.try_lock();
  }
  void unlock() { rw_.unlock(); }

  void lock_shared() {
    std::lock_guard<std::mutex> gate(gate_);
    rw_.lock_shared();
  }
  bool try_lock_shared() {
    std::unique_lock<std::mutex> gate(gate_, std::try_to_lock);
    return gate.owns_lock() && rw_.try_lock_shared();
  }
  void unlock_shared() { rw_.unlock_shared(); }

 private:
  std::mutex gate_;
  std::shared_mutex rw_;
};

}  // namespace turbokv
