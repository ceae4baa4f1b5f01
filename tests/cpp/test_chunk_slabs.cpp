// ChunkSlabs: the memory under a TokenStore's chunks (slab growth, alignment, release, huge pages),
// and how a TokenStore lays its streams out in it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "turbokv/chunk_slabs.hpp"
#include "turbokv/token_store.hpp"

namespace turbokv {
namespace {

uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(ChunkSlabs, SlabsDoubleUpToTheirSizeAndChunksNeverMove) {
  const int64_t chunk_bytes = 64 * 1024;  // 2 MiB / 64 KiB: slabs of 1, 2, 4, ..., 32, 32 chunks
  ChunkSlabs slabs;
  slabs.reset(chunk_bytes);
  EXPECT_EQ(slabs.capacity(), 0);
  slabs.reserve(1);
  EXPECT_EQ(slabs.capacity(), 1);
  EXPECT_EQ(slabs.reserved_bytes(), chunk_bytes);
  uint8_t* const first = slabs.spot(0).slab;
  slabs.reserve(60);  // slabs of 1, 2, 4, 8, 16, 32 chunks: 63
  EXPECT_EQ(slabs.capacity(), 63);
  EXPECT_EQ(slabs.reserved_bytes(), 63 * chunk_bytes);
  EXPECT_EQ(slabs.spot(0).slab, first);
  slabs.reserve(64);  // one more slab of 32 (2 MiB): they stop doubling
  EXPECT_EQ(slabs.capacity(), 95);
  const int64_t sizes[] = {1, 2, 4, 8, 16, 32, 32};
  int64_t c = 0;
  for (int64_t size : sizes) {
    const ChunkSlabs::Spot& start = slabs.spot(c);
    EXPECT_EQ(address(start.slab) % ChunkSlabs::kAlignment, 0u) << "chunk " << c;
    // Slabs of 2 MiB start on a huge page.
    if (size == 32) EXPECT_EQ(address(start.slab) % ChunkSlabs::kHugePageBytes, 0u) << "chunk " << c;
    for (int64_t i = 0; i < size; ++i, ++c) {
      EXPECT_EQ(slabs.spot(c).slab, start.slab);
      EXPECT_EQ(slabs.spot(c).chunks, size);
      EXPECT_EQ(slabs.spot(c).index, i);
    }
    start.slab[0] = 1;  // every byte of every slab is ours (ASan checks)
    start.slab[size * chunk_bytes - 1] = 1;
  }
}

TEST(ChunkSlabs, FullSizeSlabsReachAHugePage) {
  // 1.1 MB chunks (batch 8 x 8 KV heads at 4 bits): two per slab, not one.
  const int64_t chunk_bytes = 64 * 256 * (64 + 4) + 64;
  ChunkSlabs slabs;
  slabs.reset(chunk_bytes);
  slabs.reserve(5);  // slabs of 1, 2, 2
  ASSERT_EQ(slabs.capacity(), 5);
  EXPECT_EQ(slabs.spot(3).chunks, 2);
  EXPECT_GE(2 * chunk_bytes, ChunkSlabs::kHugePageBytes);
  EXPECT_EQ(address(slabs.spot(1).slab) % ChunkSlabs::kHugePageBytes, 0u);
  EXPECT_EQ(address(slabs.spot(3).slab) % ChunkSlabs::kHugePageBytes, 0u);
  // A chunk of 2 MiB or more is a slab of its own.
  slabs.reset(ChunkSlabs::kHugePageBytes + 64);
  slabs.reserve(3);
  EXPECT_EQ(slabs.capacity(), 3);
  EXPECT_EQ(slabs.spot(2).chunks, 1);
}

TEST(ChunkSlabs, ReleaseFreesOnlySlabsWithNoChunkInUse) {
  ChunkSlabs slabs;
  slabs.reset(4096);
  slabs.reserve(7);  // slabs of 1, 2, 4
  ASSERT_EQ(slabs.capacity(), 7);
  slabs.release_after(4);  // chunk 3 is in the last slab (3..6): nothing freed
  EXPECT_EQ(slabs.capacity(), 7);
  slabs.release_after(3);
  EXPECT_EQ(slabs.capacity(), 3);
  EXPECT_EQ(slabs.reserved_bytes(), 3 * 4096);
  slabs.release_after(0);
  EXPECT_EQ(slabs.capacity(), 0);
  EXPECT_EQ(slabs.reserved_bytes(), 0);
  slabs.reserve(2);  // grows again from a slab of one chunk
  EXPECT_EQ(slabs.capacity(), 1 + 2);
}

TEST(ChunkSlabs, RefusesChunksThatBreakAlignment) {
  ChunkSlabs slabs;
  EXPECT_THROW(slabs.reset(100), std::logic_error);
  EXPECT_THROW(slabs.reserve(1), std::logic_error);  // reset never succeeded: no chunk size
}

// The kernel's view of the mapping that holds p: its "THPeligible" line in /proc/self/smaps
// (Linux 5.x and later), or "" if there is none.
std::string huge_page_eligibility(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= address(p) && address(p) < hi;
    } else if (inside && line.rfind("THPeligible:", 0) == 0) {
      return line.substr(line.find_last_of(' ') + 1);
    }
  }
  return "";
}

std::string transparent_huge_page_mode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string all;
  std::getline(f, all);
  const size_t open = all.find('['), close = all.find(']');
  return open == std::string::npos ? "" : all.substr(open + 1, close - open - 1);
}

TEST(ChunkSlabs, LargeSlabsAskForHugePages) {
  const std::string mode = transparent_huge_page_mode();
  if (mode != "madvise" && mode != "always") {
    GTEST_SKIP() << "transparent huge pages are '" << mode << "' here: no slab can get them";
  }
  ChunkSlabs slabs;
  slabs.reset(ChunkSlabs::kHugePageBytes);  // every slab one or more huge pages
  slabs.reserve(1);
  slabs.spot(0).slab[0] = 1;
  const std::string eligible = huge_page_eligibility(slabs.spot(0).slab);
  if (eligible.empty()) GTEST_SKIP() << "this kernel's smaps has no THPeligible line";
  EXPECT_EQ(eligible, "1") << "the slab's mapping is not eligible for huge pages (mode " << mode << ")";
}

TEST(ChunkSlabs, TokenStoreKeepsAStreamContiguousAcrossASlabsChunks) {
  SideConfig side;
  side.bits = 4;  // head_dim 128: 64 code bytes and a 4-byte norm per token
  TokenStore store(side, 128, 7, 0, SimdLevel::kScalar);
  store.set_streams(2);
  const int64_t chunk_bytes = 2 * 256 * 64 + 2 * 256 * 4;  // both fields already whole lines
  std::vector<float> x(static_cast<size_t>(2 * 1000 * 128));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) - 48.0f;
  store.append(x.data(), 1000, 1000 * 128, 128);  // 4 chunks: slabs of 1, 2, 4
  EXPECT_EQ(store.allocated_bytes(), 7 * chunk_bytes);
  // Chunks 1 and 2 share a slab: each stream's codes and norms run on from one to the next.
  for (int64_t s = 0; s < 2; ++s) {
    const ConstEncodedBuffers one = store.chunk_codes(s, 1), two = store.chunk_codes(s, 2);
    EXPECT_EQ(two.codes, one.codes + 256 * 64) << "stream " << s;
    EXPECT_EQ(static_cast<const uint8_t*>(two.norms), static_cast<const uint8_t*>(one.norms) + 256 * 4);
    EXPECT_EQ(address(one.codes) % 64, 0u);
  }
  std::vector<float> before(static_cast<size_t>(1000 * 128)), back(static_cast<size_t>(300 * 128));
  store.decode_stream(1, before.data());
  store.trim(1000 - 300);  // 2 chunks in use: the slab of 4 goes
  EXPECT_EQ(store.allocated_bytes(), 3 * chunk_bytes);
  store.decode_stream(1, back.data());  // what stayed is still there
  EXPECT_TRUE(std::equal(back.begin(), back.end(), before.begin()));
  store.clear();
  EXPECT_EQ(store.allocated_bytes(), 0);
}

}  // namespace
}  // namespace turbokv
