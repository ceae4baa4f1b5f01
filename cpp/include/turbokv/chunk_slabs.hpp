// The memory of a TokenStore's chunks: slabs of consecutive chunks, each slab one allocation.
//
// Slabs double (1, 2, 4, ... chunks) up to about kSlabBytes, so a short cache reserves little
// and a long one few allocations. A slab of at least kHugePageBytes starts on a 2 MiB boundary
// and asks the kernel for transparent huge pages (madvise): decode reads every chunk of a long
// cache once per step, and on 4 KiB pages it took 1.04-1.08x the time (TLB walks, and hardware
// prefetchers that stop at each page; bench/results/kernel_choices_avx2.md round 50).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace turbokv {

class ChunkSlabs {
 public:
  static constexpr int64_t kSlabBytes = int64_t{2} << 20;      // slabs stop doubling here
  static constexpr int64_t kHugePageBytes = int64_t{2} << 20;  // x86-64 and arm64 (4 KiB base pages)
  static constexpr int64_t kAlignment = 64;                    // every chunk: a cache line

  // chunk_bytes: a multiple of kAlignment. Frees every chunk.
  void reset(int64_t chunk_bytes);
  // At least `chunks` chunks available (new ones uninitialised); earlier ones never move.
  void reserve(int64_t chunks);
  // Frees the slabs none of whose chunks is among the first `chunks`.
  void release_after(int64_t chunks);
  void clear() { reset(chunk_bytes_); }

  int64_t capacity() const { return static_cast<int64_t>(chunks_.size()); }
  uint8_t* chunk(int64_t c) const { return chunks_[static_cast<size_t>(c)]; }
  // Bytes of all slabs (the chunks not yet used included).
  int64_t reserved_bytes() const { return reserved_bytes_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  struct Slab {
    std::unique_ptr<uint8_t, Free> memory;
    int64_t chunks, bytes;
  };
  int64_t chunk_bytes_ = 0, reserved_bytes_ = 0;
  std::vector<Slab> slabs_;
  std::vector<uint8_t*> chunks_;  // every chunk of every slab, in order
};

}  // namespace turbokv
