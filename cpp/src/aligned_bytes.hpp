// Internal: a 64-byte aligned byte buffer that only grows, for per-call scratch that kernels keep
// per thread (so that decode does not allocate per 256-token block).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace turbokv {
namespace kernels {

class AlignedBytes {
 public:
  void reserve(size_t bytes) {
    if (bytes <= size_) return;
    data_.reset(static_cast<uint8_t*>(::operator new[](bytes, std::align_val_t{64})));
    size_ = bytes;
  }
  uint8_t* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<uint8_t[], Free> data_;
  size_t size_ = 0;
};

}  // namespace kernels
}  // namespace turbokv
