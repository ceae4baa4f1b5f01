// One side (keys or values) of one layer of the KV cache: the tokens of every (batch, head) stream.
//
// Storage: tokens live in chunks of kChunkTokens tokens for all streams, so growth never copies
// what is stored (amortised O(1) append) and a stream's tokens are contiguous inside a chunk and
// on across the chunks of one slab (ChunkSlabs: 1, 2, 4, ... chunks, up to about 2 MiB, the large
// ones on huge pages).
// A side with bits > 0 keeps TurboQuant codes in the chunks and, if residual_window R > 0, the
// newest R tokens as float16 beside them (KIVI-style); a token is encoded when it leaves the
// window, from its float16 value. A side with bits = 0 keeps every token as float16 in the chunks.
// No float32 copy of any token is kept.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "turbokv/chunk_slabs.hpp"
#include "turbokv/codec.hpp"
#include "turbokv/thread_pool.hpp"

namespace turbokv {

struct SideConfig {
  int bits = 4;  // 0 = keep float16
  Mode mode = Mode::kMse;
  NormDtype norm_dtype = NormDtype::kFloat32;
  bool norm_correction = false;
};

class TokenStore {
 public:
  static constexpr int64_t kChunkTokens = 256;

  TokenStore(const SideConfig& side, int head_dim, uint64_t seed, int64_t residual_window,
             SimdLevel level);

  const SideConfig& side() const { return side_; }
  int head_dim() const { return head_dim_; }
  bool full_precision() const { return side_.bits == 0; }
  const Codec* codec() const { return codec_.get(); }
  SimdLevel simd_level() const { return level_; }
  int64_t residual_window() const { return residual_window_; }

  int64_t streams() const { return streams_; }
  int64_t length() const { return chunk_length_ + window_length_; }
  int64_t chunk_length() const { return chunk_length_; }    // tokens in chunks
  int64_t window_length() const { return window_length_; }  // float16 tokens after them

  // Sets the stream count of an empty store (the first update fixes batch * heads).
  void set_streams(int64_t streams);

  // Checks that x holds values this store can keep (finite, within float16 range where float16 is
  // stored, norms within their storage type); throws std::invalid_argument otherwise. Call before
  // append so a rejected update changes nothing.
  void validate(const float* x, int64_t n, int64_t stream_stride, int64_t token_stride) const;
  // Appends n tokens to every stream; token t of stream s starts at
  // x + s * stream_stride + t * token_stride (in floats), head_dim contiguous floats. With a pool,
  // an append of at least kParallelAppendFloats floats without a residual window (a prefill) is
  // encoded on all its threads, in pieces of kAppendPieceTokens tokens of a stream; the codes are
  // the same either way.
  void append(const float* x, int64_t n, int64_t stream_stride, int64_t token_stride,
              ThreadPool* pool = nullptr);
  static constexpr int64_t kAppendPieceTokens = 256;
  // Below ~1 MB of input waking the pool costs more than it saves (decode steps stay serial).
  static constexpr int64_t kParallelAppendFloats = int64_t{1} << 18;
  // Drops the newest n tokens of every stream (n <= length()).
  void trim(int64_t n);
  void clear();

  // Bytes allocated (every slab of chunks, window at capacity) and bytes of the stored tokens.
  int64_t allocated_bytes() const;
  int64_t used_bytes() const;
  int64_t bytes_per_token() const;  // per stream, in chunks

  // Chunk c of stream s: tokens [c * kChunkTokens, ...) of that stream.
  ConstEncodedBuffers chunk_codes(int64_t s, int64_t c) const;
  const uint16_t* chunk_halves(int64_t s, int64_t c) const;  // bits = 0
  const uint16_t* window_halves(int64_t s) const;            // window_length() x head_dim

  // All tokens of stream s as float32, length() x head_dim.
  void decode_stream(int64_t s, float* out) const;

  // State for saving: the chunk part of every field as contiguous (streams, chunk_length, ...)
  // arrays, and the window as (streams, window_length, head_dim) float16.
  struct State {
    std::vector<uint8_t> codes, norms, qjl, residual_norms;  // raw bytes
    std::vector<uint16_t> halves, window;
    int64_t streams = 0, chunk_length = 0, window_length = 0;
  };
  State export_state() const;
  // Replaces the content; throws std::invalid_argument if any array has the wrong size.
  void import_state(const State& state);

 private:
  struct Field {
    int64_t bytes_per_token;  // 0 if unused
    int64_t offset;           // within a chunk
  };
  uint8_t* field_ptr(int64_t chunk, const Field& f, int64_t s, int64_t token) const;
  void encode_into_chunks(int64_t s, int64_t at, const float* rows, int64_t count,
                          int64_t row_stride);
  void store_halves_into_chunks(int64_t s, int64_t at, const float* rows, int64_t count,
                                int64_t row_stride);
  void ensure_chunks(int64_t tokens);

  SideConfig side_;
  int head_dim_;
  int64_t residual_window_;
  std::unique_ptr<Codec> codec_;
  SimdLevel level_;
  const void* kernels_;
  int64_t streams_ = 0;
  int64_t chunk_length_ = 0, window_length_ = 0;
  Field codes_{0, 0}, norms_{0, 0}, qjl_{0, 0}, residual_norms_{0, 0}, halves_{0, 0};
  ChunkSlabs chunks_;  // at least ceil(chunk_length_ / kChunkTokens) chunks
  std::vector<uint16_t> window_;  // streams x residual_window x head_dim
};

}  // namespace turbokv
