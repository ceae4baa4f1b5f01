// WriterFirstMutex: a writer waiting behind a reader holds off new readers, so overlapping
// readers cannot keep it waiting for ever (std::shared_mutex on glibc lets them in first).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "turbokv/writer_first_mutex.hpp"

using turbokv::WriterFirstMutex;

TEST(WriterFirstMutex, AWaitingWriterHoldsOffNewReaders) {
  WriterFirstMutex m;
  m.lock_shared();  // the reader already inside
  std::atomic<bool> written{false};
  std::thread writer([&] {
    m.lock();
    written = true;
    m.unlock();
  });
  // Until the writer is waiting a new reader gets in; once it waits, new readers are refused.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool refused = false;
  while (!refused && std::chrono::steady_clock::now() < deadline) {
    if (m.try_lock_shared()) {
      m.unlock_shared();
      std::this_thread::yield();
    } else {
      refused = true;
    }
  }
  EXPECT_TRUE(refused) << "a new reader still got in 10 s after a writer began to wait";
  EXPECT_FALSE(written.load()) << "the writer got in while a reader held the lock";
  m.unlock_shared();
  writer.join();
  EXPECT_TRUE(written.load());
  EXPECT_TRUE(m.try_lock_shared()) << "readers are let in again once the writer has left";
  m.unlock_shared();
}

TEST(WriterFirstMutex, ReadersShareAndAWriterExcludesThem) {
  WriterFirstMutex m;
  const auto from_another_thread = [](auto f) {
    bool got = false;
    std::thread t([&] { got = f(); });
    t.join();
    return got;
  };
  m.lock_shared();
  EXPECT_TRUE(from_another_thread([&] {
    const bool got = m.try_lock_shared();
    if (got) m.unlock_shared();
    return got;
  })) << "a second reader is let in beside the first";
  EXPECT_FALSE(from_another_thread([&] { return m.try_lock(); })) << "a writer beside a reader";
  m.unlock_shared();
  m.lock();
  EXPECT_FALSE(from_another_thread([&] { return m.try_lock_shared(); })) << "a reader beside a writer";
  EXPECT_FALSE(from_another_thread([&] { return m.try_lock(); })) << "two writers";
  m.unlock();
}

// Two readers that always overlap (one holds the lock whenever the other takes it) and a writer:
// the writer must finish its updates.
TEST(WriterFirstMutex, AWriterFinishesAgainstOverlappingReaders) {
  WriterFirstMutex m;
  std::atomic<bool> done{false};
  int value = 0;  // written under the lock; TSan checks the readers' accesses
  auto reader = [&] {
    while (!done.load()) {
      std::shared_lock<WriterFirstMutex> lock(m);
      volatile int seen = value;
      (void)seen;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  };
  std::thread r1(reader), r2(reader);
  for (int i = 0; i < 50; ++i) {
    std::unique_lock<WriterFirstMutex> lock(m);
    ++value;
  }
  done = true;
  r1.join();
  r2.join();
  EXPECT_EQ(value, 50);
}
