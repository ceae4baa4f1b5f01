#include <gtest/gtest.h>

#include <random>

#include "../../cpp/src/kernels.hpp"
#include "turbokv/packing.hpp"

using namespace turbokv;

namespace {
// Bit-by-bit statement of the documented layout, independent of the kernels.
std::vector<uint8_t> pack_by_definition(const std::vector<uint8_t>& idx, int bits) {
  std::vector<uint8_t> out(packed_bytes(bits, idx.size()), 0);
  for (size_t i = 0; i < idx.size(); ++i) {
    for (int b = 0; b < bits; ++b) {
      const size_t k = i * bits + b;
      if ((idx[i] >> b) & 1) out[k / 8] |= uint8_t(1u << (k % 8));
    }
  }
  return out;
}
}  // namespace

TEST(Packing, HandWorkedThreeBitExample) {
  // 1 = 001, 2 = 010, 3 = 011 -> stream bits 100 010 110 ... -> byte 0 = 0b11010001.
  const std::vector<uint8_t> idx = {1, 2, 3, 4, 5, 6, 7, 0};
  std::vector<uint8_t> out(3);
  kernels::kernel_set(SimdLevel::kScalar).pack(idx.data(), 8, 3, out.data());
  EXPECT_EQ(out[0], 0xD1);
  EXPECT_EQ(out, pack_by_definition(idx, 3));
}

TEST(Packing, EveryWidthAndLengthRoundTripsAtEverySimdLevel) {
  std::mt19937 gen(7);
  for (SimdLevel simd : supported_simd()) {
    const int level = static_cast<int>(simd);
    const auto& k = kernels::kernel_set(static_cast<SimdLevel>(level));
    for (int bits = 1; bits <= 8; ++bits) {
      for (int n : {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 80, 96, 128, 1000, 1024}) {
        std::vector<uint8_t> idx(n);
        for (auto& v : idx) v = uint8_t(gen() & ((1u << bits) - 1));
        std::vector<uint8_t> packed(packed_bytes(bits, n) + 8, 0xAB);  // guard bytes
        k.pack(idx.data(), n, bits, packed.data());
        const auto expect = pack_by_definition(idx, bits);
        ASSERT_TRUE(std::equal(expect.begin(), expect.end(), packed.begin()))
            << "bits " << bits << " n " << n << " level " << level;
        for (size_t g = expect.size(); g < packed.size(); ++g) ASSERT_EQ(packed[g], 0xAB);
        // Bits above the width are ignored.
        std::vector<uint8_t> noisy(idx), repacked(packed.size(), 0xAB);
        for (auto& v : noisy) v = uint8_t(v | (gen() << bits));
        k.pack(noisy.data(), n, bits, repacked.data());
        ASSERT_EQ(packed, repacked) << "bits " << bits << " n " << n << " level " << level;
        std::vector<uint8_t> back(n + 8, 0xCD);
        k.unpack(packed.data(), n, bits, back.data());
        ASSERT_TRUE(std::equal(idx.begin(), idx.end(), back.begin()));
        for (int g = n; g < n + 8; ++g) ASSERT_EQ(back[g], 0xCD);
      }
    }
  }
}

TEST(Packing, ByteCounts) {
  EXPECT_EQ(packed_bytes(4, 128), 64u);
  EXPECT_EQ(packed_bytes(3, 128), 48u);
  EXPECT_EQ(packed_bytes(3, 9), 4u);
  EXPECT_EQ(packed_bytes(1, 80), 10u);
  EXPECT_EQ(packed_bytes(0, 128), 0u);
}
