// The integer score kernels' key rows (dot_int8_kernels.cpp, dot_int16_kernels.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels.hpp"

namespace turbokv {
namespace kernels {

// The keys one after another as a SIMD kernel reads them: packed codes in place, or each key
// unpacked into a zero-padded buffer of `padded` bytes (whole chunks; the query is zero there).
class KeyIndexRows {
 public:
  KeyIndexRows(const uint8_t* codes, int64_t code_bytes, int bits, int d, bool unpacked,
               int64_t padded, SimdLevel level)
      : codes_(codes), code_bytes_(code_bytes), bits_(bits), d_(d), unpack_(select_unpack(level)),
        idx_(unpacked ? static_cast<size_t>(padded) : 0, 0) {}
  const uint8_t* operator()(int64_t j) {
    const uint8_t* key = codes_ + j * code_bytes_;
    if (idx_.empty()) return key;
    unpack_(key, d_, bits_, idx_.data());
    return idx_.data();
  }

 private:
  const uint8_t* codes_;
  int64_t code_bytes_;
  int bits_, d_;
  UnpackFn unpack_;
  std::vector<uint8_t> idx_;
};

}  // namespace kernels
}  // namespace turbokv
