// The memory of a TokenStore's chunks: slabs of consecutive chunks, each slab one allocation.
//
// Slabs double (1, 2, 4, ... chunks) up to the fewest chunks that make kSlabBytes, so a short
// cache reserves little and a long one few allocations. Every slab starts on a cache line; one of
// at least kHugePageBytes starts on a 2 MiB boundary and asks the kernel for transparent huge
// pages (madvise). How a slab's bytes are laid out is the TokenStore's business (token_store.cpp).
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
  static constexpr int64_t kAlignment = 64;

  // Where chunk c lives: chunk `index` of the `chunks` chunks of the slab at `slab`.
  struct Spot {
    uint8_t* slab;
    int64_t chunks, index;
  };

  // chunk_bytes: a multiple of kAlignment. Frees every chunk.
  void reset(int64_t chunk_bytes);
  // At least `chunks` chunks available (new ones uninitialised); existing ones never move.
  void reserve(int64_t chunks);
  // Frees the slabs none of whose chunks is among the first `chunks`.
  void release_after(int64_t chunks);
  void clear() { reset(chunk_bytes_); }

  int64_t capacity() const { return static_cast<int64_t>(spots_.size()); }
  const Spot& spot(int64_t c) const { return spots_[static_cast<size_t>(c)]; }
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
  std::vector<Spot> spots_;  // every chunk of every slab, in order
};

}  // namespace turbokv
