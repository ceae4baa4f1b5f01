#include "turbokv/token_store.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels.hpp"

namespace turbokv {
namespace {

const kernels::KernelSet& ks(const void* p) { return *static_cast<const kernels::KernelSet*>(p); }

constexpr float kHalfMax = 65504.0f;

}  // namespace

TokenStore::TokenStore(const SideConfig& side, int head_dim, uint64_t seed,
                       int64_t residual_window, SimdLevel level)
    : side_(side),
      head_dim_(head_dim),
      residual_window_(side.bits == 0 ? 0 : residual_window),
      level_(level), kernels_(&kernels::kernel_set(level)) {
  if (head_dim < kMinHeadDim || head_dim > kMaxHeadDim) {
    throw std::invalid_argument("head_dim must be in 8..1024, got " + std::to_string(head_dim));
  }
  if (side.bits < 0 || side.bits > kMaxBits) {
    throw std::invalid_argument("bits must be in 0..8 (0 = float16), got " + std::to_string(side.bits));
  }
  if (residual_window < 0) throw std::invalid_argument("residual_window must be >= 0");
  if (side.bits > 0) {
    CodecConfig c;
    c.head_dim = head_dim;
    c.bits = side.bits;
    c.mode = side.mode;
    c.seed = seed;
    c.norm_dtype = side.norm_dtype;
    c.norm_correction = side.norm_correction;
    codec_ = std::make_unique<Codec>(c, level);
  }
}

void TokenStore::set_streams(int64_t streams) {
  if (length() != 0 || chunks_.capacity() != 0) {
    throw std::logic_error("set_streams on a non-empty store");
  }
  if (streams <= 0) throw std::invalid_argument("the cache needs at least one (batch, head) stream");
  streams_ = streams;
  int64_t offset = 0;
  auto place = [&](Field& f, int64_t bpt) {
    f = Field{bpt, offset};
    offset += (bpt * streams * kChunkTokens + 63) / 64 * 64;  // keep fields 64-byte aligned
  };
  if (codec_) {
    place(codes_, static_cast<int64_t>(codec_->code_bytes()));
    place(norms_, static_cast<int64_t>(codec_->norm_bytes()));
    place(qjl_, static_cast<int64_t>(codec_->qjl_bytes()));
    place(residual_norms_, side_.mode == Mode::kProd ? static_cast<int64_t>(codec_->norm_bytes()) : 0);
  } else {
    place(halves_, 2 * int64_t{head_dim_});
  }
  chunks_.reset(offset);  // the bytes of one chunk, all streams
  window_.assign(static_cast<size_t>(streams * residual_window_ * head_dim_), 0);
}

uint8_t* TokenStore::field_ptr(int64_t chunk, const Field& f, int64_t s, int64_t token) const {
  // A slab of C chunks holds each field in turn (f.offset * C bytes before it), and inside a field
  // each stream's C * kChunkTokens tokens in order: a stream's tokens run on across the chunks of
  // a slab, so decode reads one sequence per stream and side where chunks laid out one after
  // another made it jump every 256 tokens (0.91-0.93x the time at 32K, kernel_choices round 50, timed
  // in one A/B order only: round 51 found the harness favouring its head side by 1-4% at the median).
  const ChunkSlabs::Spot& at = chunks_.spot(chunk);
  return at.slab + f.offset * at.chunks +
         ((s * at.chunks + at.index) * kChunkTokens + token) * f.bytes_per_token;
}

void TokenStore::ensure_chunks(int64_t tokens) {
  chunks_.reserve((tokens + kChunkTokens - 1) / kChunkTokens);
}

int64_t TokenStore::bytes_per_token() const {
  return codes_.bytes_per_token + norms_.bytes_per_token + qjl_.bytes_per_token +
         residual_norms_.bytes_per_token + halves_.bytes_per_token;
}

int64_t TokenStore::allocated_bytes() const {
  return chunks_.reserved_bytes() + static_cast<int64_t>(window_.size()) * 2;
}

int64_t TokenStore::used_bytes() const {
  return streams_ * (chunk_length_ * bytes_per_token() + window_length_ * 2 * head_dim_);
}

void TokenStore::validate(const float* x, int64_t n, int64_t stream_stride,
                          int64_t token_stride) const {
  // Norms are at most sqrt(d) max|x|, times 1 / ||u_hat|| (< 1.5) with norm correction: keep
  // them finite in their storage type, and float16 tokens within float16.
  const bool halves = full_precision() || residual_window_ > 0;
  const float norm_headroom = 1.5f * std::sqrt(static_cast<float>(head_dim_));
  float limit = FLT_MAX;
  if (halves) limit = kHalfMax;
  if (codec_) {
    const float norm_max = side_.norm_dtype == NormDtype::kFloat16 ? kHalfMax : FLT_MAX;
    limit = std::min(limit, norm_max / norm_headroom);
  }
  const float limit_squared = std::min(limit * limit, FLT_MAX);
  for (int64_t s = 0; s < streams_; ++s) {
    for (int64_t t = 0; t < n; ++t) {
      const float* row = x + s * stream_stride + t * token_stride;
      // Fast path: max |x_i| <= ||x||, so a finite sum of squares within limit^2 clears the row.
      const float sum_squares = ks(kernels_).sum_squares(row, head_dim_);
      if (sum_squares <= limit_squared) continue;
      float max_abs = 0.0f;
      bool finite = true;
      for (int i = 0; i < head_dim_; ++i) {
        const float a = std::fabs(row[i]);
        finite &= a <= FLT_MAX;  // false for inf and NaN
        max_abs = a > max_abs ? a : max_abs;
      }
      if (!finite) {
        throw std::invalid_argument("NaN or Inf in the new tokens (stream " + std::to_string(s) +
                                    ", token " + std::to_string(t) +
                                    "); the cache was not changed");
      }
      if (max_abs > limit) {
        throw std::invalid_argument(
            "a value of magnitude " + std::to_string(max_abs) + " (stream " + std::to_string(s) +
            ", token " + std::to_string(t) + ") does not fit this cache's float16 storage" +
            (halves ? " of full-precision tokens" : " of norms (use norm_dtype float32)") +
            "; the cache was not changed");
      }
    }
  }
}

void TokenStore::encode_into_chunks(int64_t s, int64_t at, const float* rows, int64_t count,
                                    int64_t row_stride) {
  while (count > 0) {
    const int64_t chunk = at / kChunkTokens, offset = at % kChunkTokens;
    const int64_t take = std::min(count, kChunkTokens - offset);
    EncodedBuffers out;
    out.codes = field_ptr(chunk, codes_, s, offset);
    out.norms = field_ptr(chunk, norms_, s, offset);
    out.qjl_signs = field_ptr(chunk, qjl_, s, offset);
    out.residual_norms = field_ptr(chunk, residual_norms_, s, offset);
    codec_->encode(rows, take, row_stride, out);
    rows += take * row_stride;
    at += take;
    count -= take;
  }
}

void TokenStore::store_halves_into_chunks(int64_t s, int64_t at, const float* rows, int64_t count,
                                          int64_t row_stride) {
  for (int64_t t = 0; t < count; ++t, ++at) {
    auto* dst = reinterpret_cast<uint16_t*>(
        field_ptr(at / kChunkTokens, halves_, s, at % kChunkTokens));
    ks(kernels_).to_half(rows + t * row_stride, dst, head_dim_);
  }
}

void TokenStore::append(const float* x, int64_t n, int64_t stream_stride, int64_t token_stride,
                        ThreadPool* pool) {
  if (n <= 0) return;
  const int64_t d = head_dim_;
  // A prefill's encode on every core: serial, it was ~1 ms of each SmolLM2 layer's 2K-token
  // forward and does not shrink with more cores as the attention does.
  if (pool && pool->size() > 1 && (full_precision() || residual_window_ == 0) &&
      streams_ * n * d >= kParallelAppendFloats) {
    ensure_chunks(chunk_length_ + n);
    const int64_t pieces = (n + kAppendPieceTokens - 1) / kAppendPieceTokens;
    pool->parallel_for(streams_ * pieces, [&](int64_t item) {
      const int64_t s = item / pieces, first = item % pieces * kAppendPieceTokens;
      const int64_t count = std::min(kAppendPieceTokens, n - first);
      const float* rows = x + s * stream_stride + first * token_stride;
      if (full_precision()) {
        store_halves_into_chunks(s, chunk_length_ + first, rows, count, token_stride);
      } else {
        encode_into_chunks(s, chunk_length_ + first, rows, count, token_stride);
      }
    });
    chunk_length_ += n;
    return;
  }
  const int64_t overflow = std::max<int64_t>(0, window_length_ + n - residual_window_);
  const int64_t from_window = std::min(overflow, window_length_);
  const int64_t from_new = overflow - from_window;  // new tokens that go straight to the chunks
  ensure_chunks(chunk_length_ + overflow);
  std::vector<float> scratch;
  for (int64_t s = 0; s < streams_; ++s) {
    const float* xs = x + s * stream_stride;
    uint16_t* win = window_.data() + s * residual_window_ * d;
    if (full_precision()) {
      store_halves_into_chunks(s, chunk_length_, xs, n, token_stride);
      continue;
    }
    if (residual_window_ == 0) {
      encode_into_chunks(s, chunk_length_, xs, n, token_stride);
      continue;
    }
    // With a window every token is encoded from its float16 value, whichever path it takes, so
    // the codes do not depend on how the tokens were split into updates.
    scratch.resize(static_cast<size_t>(overflow * d));
    ks(kernels_).from_half(win, scratch.data(), from_window * d);
    for (int64_t t = 0; t < from_new; ++t) {
      uint16_t rounded[kMaxHeadDim];
      ks(kernels_).to_half(xs + t * token_stride, rounded, d);
      ks(kernels_).from_half(rounded, scratch.data() + (from_window + t) * d, d);
    }
    encode_into_chunks(s, chunk_length_, scratch.data(), overflow, d);
    // Slide the window: keep its newest tokens, then add the new tokens that stay in it.
    const int64_t kept = window_length_ - from_window;
    std::memmove(win, win + from_window * d, static_cast<size_t>(kept * d) * 2);
    for (int64_t t = from_new; t < n; ++t) {
      ks(kernels_).to_half(xs + t * token_stride, win + (kept + t - from_new) * d, d);
    }
  }
  if (full_precision() || residual_window_ == 0) {
    chunk_length_ += n;
  } else {
    chunk_length_ += overflow;
    window_length_ = window_length_ - from_window + (n - from_new);
  }
}

void TokenStore::trim(int64_t n) {
  if (n < 0 || n > length()) {
    throw std::invalid_argument("cannot trim " + std::to_string(n) + " tokens from a cache of " +
                                std::to_string(length()));
  }
  const int64_t from_window = std::min(n, window_length_);
  window_length_ -= from_window;
  chunk_length_ -= n - from_window;
  const int64_t needed = (chunk_length_ + kChunkTokens - 1) / kChunkTokens;
  chunks_.release_after(needed);  // free the slabs it emptied
}

void TokenStore::clear() {
  chunks_.clear();
  chunk_length_ = window_length_ = 0;
}

ConstEncodedBuffers TokenStore::chunk_codes(int64_t s, int64_t c) const {
  ConstEncodedBuffers b;
  b.codes = field_ptr(c, codes_, s, 0);
  b.norms = field_ptr(c, norms_, s, 0);
  b.qjl_signs = field_ptr(c, qjl_, s, 0);
  b.residual_norms = field_ptr(c, residual_norms_, s, 0);
  return b;
}

const uint16_t* TokenStore::chunk_halves(int64_t s, int64_t c) const {
  return reinterpret_cast<const uint16_t*>(field_ptr(c, halves_, s, 0));
}

const uint16_t* TokenStore::window_halves(int64_t s) const {
  return window_.data() + s * residual_window_ * head_dim_;
}

void TokenStore::decode_stream(int64_t s, float* out) const {
  const int64_t d = head_dim_;
  for (int64_t c = 0; c * kChunkTokens < chunk_length_; ++c) {
    const int64_t count = std::min(kChunkTokens, chunk_length_ - c * kChunkTokens);
    float* dst = out + c * kChunkTokens * d;
    if (full_precision()) {
      ks(kernels_).from_half(chunk_halves(s, c), dst, count * d);
    } else {
      codec_->decode(chunk_codes(s, c), count, dst);
    }
  }
  ks(kernels_).from_half(window_halves(s), out + chunk_length_ * d, window_length_ * d);
}

TokenStore::State TokenStore::export_state() const {
  State st;
  st.streams = streams_;
  st.chunk_length = chunk_length_;
  st.window_length = window_length_;
  auto gather = [&](const Field& f, std::vector<uint8_t>& out) {
    out.resize(static_cast<size_t>(streams_ * chunk_length_ * f.bytes_per_token));
    if (f.bytes_per_token == 0) return;
    for (int64_t s = 0; s < streams_; ++s) {
      for (int64_t t = 0; t < chunk_length_; t += kChunkTokens) {
        const int64_t count = std::min(kChunkTokens, chunk_length_ - t);
        std::memcpy(out.data() + (s * chunk_length_ + t) * f.bytes_per_token,
                    field_ptr(t / kChunkTokens, f, s, 0), static_cast<size_t>(count * f.bytes_per_token));
      }
    }
  };
  gather(codes_, st.codes);
  gather(norms_, st.norms);
  gather(qjl_, st.qjl);
  gather(residual_norms_, st.residual_norms);
  std::vector<uint8_t> halves;
  gather(halves_, halves);
  st.halves.resize(halves.size() / 2);
  if (!halves.empty()) std::memcpy(st.halves.data(), halves.data(), halves.size());
  st.window.resize(static_cast<size_t>(streams_ * window_length_ * head_dim_));
  for (int64_t s = 0; s < streams_; ++s) {
    std::copy_n(window_halves(s), window_length_ * head_dim_,
                st.window.data() + s * window_length_ * head_dim_);
  }
  return st;
}

void TokenStore::import_state(const State& st) {
  auto expect = [](const char* name, size_t got, int64_t want) {
    if (static_cast<int64_t>(got) != want) {
      throw std::invalid_argument(std::string("state array ") + name + " has " + std::to_string(got) +
                                  " bytes, expected " + std::to_string(want));
    }
  };
  if (st.streams <= 0 || st.chunk_length < 0 || st.window_length < 0 ||
      st.window_length > residual_window_) {
    throw std::invalid_argument("state has an invalid shape for this cache's settings");
  }
  TokenStore fresh(side_, head_dim_, 0, residual_window_, SimdLevel::kScalar);
  fresh.set_streams(st.streams);  // computes the field layout for this stream count
  const int64_t rows = st.streams * st.chunk_length;
  expect("codes", st.codes.size(), rows * fresh.codes_.bytes_per_token);
  expect("norms", st.norms.size(), rows * fresh.norms_.bytes_per_token);
  expect("qjl", st.qjl.size(), rows * fresh.qjl_.bytes_per_token);
  expect("residual_norms", st.residual_norms.size(), rows * fresh.residual_norms_.bytes_per_token);
  expect("halves", st.halves.size() * 2, rows * fresh.halves_.bytes_per_token);
  expect("window", st.window.size(), st.streams * st.window_length * head_dim_);
  // All checks passed: replace the content.
  clear();
  set_streams(st.streams);
  ensure_chunks(st.chunk_length);
  auto scatter = [&](const Field& f, const uint8_t* in) {
    if (f.bytes_per_token == 0) return;
    for (int64_t s = 0; s < streams_; ++s) {
      for (int64_t t = 0; t < st.chunk_length; t += kChunkTokens) {
        const int64_t count = std::min(kChunkTokens, st.chunk_length - t);
        std::memcpy(field_ptr(t / kChunkTokens, f, s, 0), in + (s * st.chunk_length + t) * f.bytes_per_token,
                    static_cast<size_t>(count * f.bytes_per_token));
      }
    }
  };
  scatter(codes_, st.codes.data());
  scatter(norms_, st.norms.data());
  scatter(qjl_, st.qjl.data());
  scatter(residual_norms_, st.residual_norms.data());
  scatter(halves_, reinterpret_cast<const uint8_t*>(st.halves.data()));
  for (int64_t s = 0; s < streams_; ++s) {
    std::copy_n(st.window.data() + s * st.window_length * head_dim_, st.window_length * head_dim_,
                window_.data() + s * residual_window_ * head_dim_);
  }
  chunk_length_ = st.chunk_length;
  window_length_ = st.window_length;
}

}  // namespace turbokv
