#include "turbokv/chunk_slabs.hpp"

#include <algorithm>
#include <new>
#include <stdexcept>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace turbokv {

void ChunkSlabs::reset(int64_t chunk_bytes) {
  if (chunk_bytes < 0 || chunk_bytes % kAlignment != 0) {
    throw std::logic_error("chunk bytes must be a multiple of 64");
  }
  slabs_.clear();
  spots_.clear();
  chunk_bytes_ = chunk_bytes;
  reserved_bytes_ = 0;
}

void ChunkSlabs::reserve(int64_t chunks) {
  if (chunk_bytes_ == 0) throw std::logic_error("ChunkSlabs::reserve before reset");
  // Full-size slabs hold the fewest chunks that reach kSlabBytes, so each gets huge pages (with
  // 1.1 MB chunks, batch 8 x 8 KV heads at 4 bits, a floor would leave one chunk per slab).
  const int64_t most = (kSlabBytes + chunk_bytes_ - 1) / chunk_bytes_;
  while (capacity() < chunks) {
    const int64_t count = slabs_.empty() ? 1 : std::min(2 * slabs_.back().chunks, most);
    const int64_t bytes = count * chunk_bytes_;
    const bool huge = bytes >= kHugePageBytes;
    void* p = nullptr;
    if (posix_memalign(&p, static_cast<size_t>(huge ? kHugePageBytes : kAlignment), static_cast<size_t>(bytes)) != 0) {
      throw std::bad_alloc();
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advice only: where transparent huge pages are off ("never"), 4 KiB pages back the slab.
    if (huge) (void)madvise(p, static_cast<size_t>(bytes), MADV_HUGEPAGE);
#endif
    slabs_.push_back(Slab{std::unique_ptr<uint8_t, Free>(static_cast<uint8_t*>(p)), count, bytes});
    reserved_bytes_ += bytes;
    for (int64_t c = 0; c < count; ++c) spots_.push_back(Spot{static_cast<uint8_t*>(p), count, c});
  }
}

void ChunkSlabs::release_after(int64_t chunks) {
  while (!slabs_.empty() && capacity() - slabs_.back().chunks >= chunks) {
    spots_.resize(spots_.size() - static_cast<size_t>(slabs_.back().chunks));
    reserved_bytes_ -= slabs_.back().bytes;
    slabs_.pop_back();
  }
}

}  // namespace turbokv
