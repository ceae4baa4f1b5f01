// Reads typed values from a fuzzer's byte string; past its end every read returns zeros.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "turbokv/codec.hpp"

namespace turbokv::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }

  // An integer in [low, high].
  int range(int low, int high) { return low + byte() % (high - low + 1); }

  // count bytes: the next input bytes, then zeros.
  std::vector<uint8_t> bytes(size_t count) {
    std::vector<uint8_t> out(count, 0);
    const size_t take = pos_ < size_ ? std::min(count, size_ - pos_) : 0;
    if (take) std::memcpy(out.data(), data_ + pos_, take);
    pos_ += take;
    return out;
  }

  // count floats of arbitrary bit patterns (NaN, Inf, denormals included).
  std::vector<float> floats(size_t count) {
    const std::vector<uint8_t> raw = bytes(count * sizeof(float));
    std::vector<float> out(count);
    if (count) std::memcpy(out.data(), raw.data(), raw.size());
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

inline int head_dim(Input& in) {
  static const int dims[] = {8, 16, 24, 32, 64, 80, 96, 128, 160, 256};
  return dims[in.byte() % 10];
}

// Codecs are built once per configuration: building one (a QR for dense rotations, a d x d
// sketch) costs far more than a fuzz iteration.
inline const Codec& codec_for(const CodecConfig& c, SimdLevel level) {
  using Key = std::tuple<int, int, int, uint64_t, int, bool, int>;
  static std::map<Key, std::unique_ptr<Codec>> codecs;
  const Key key{c.head_dim, c.bits, int(c.mode), c.seed, int(c.norm_dtype), c.norm_correction, int(level)};
  auto& slot = codecs[key];
  if (!slot) slot = std::make_unique<Codec>(c, level);
  return *slot;
}

}  // namespace turbokv::fuzz
