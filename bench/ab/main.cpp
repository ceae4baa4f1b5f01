// bench/ab/run.sh's timer: two builds of the library in one process, called alternately, so that
// both see the same machine state (on a shared VM whose speed changes within seconds, separate
// runs of two binaries compare phases, not code). Reports the minimum per call of each side over
// many alternating calls, their ratio, and whether the outputs are identical.
//   ab encode BITS ROWS CALLS [SIMD] [HEAD_DIM] Codec::encode of ROWS vectors (head_dim 128)
//   ab attention KBITS VBITS CONTEXT CALLS [THREADED] [SIMD] [Q_HEADS KV_HEADS] [int8|int8kv]
//                                             one decode step, d = 128 (32 query / 8 KV heads)
// AB_BATCH=B: B sequences (default 1). AB_Q_LEN=Q: Q query positions at once (default 1), causal,
// the cache's last Q (a prefill chunk: AB_Q_LEN=512 with CONTEXT 8192).
// AB_LAYERS=L: attention over L caches per side called in turn, as a model's layers are, so that
// once L caches pass the last-level cache every call reads its codes from memory (one cache
// repeated stays in a large L3: 36 MB of K4V4 at 32K in a 16-core Xeon's 300 MiB).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#define AB_DECLARE(side)                                                                      \
  void* side##_codec_new(int, int, int);                                                      \
  int64_t side##_code_bytes(void*);                                                           \
  void side##_encode(void*, const float*, int64_t, uint8_t*, float*);                        \
  void side##_codec_delete(void*);                                                           \
  void* side##_layer_new(int, int, int, int, int, const float*, const float*, int64_t, int64_t); \
  bool side##_attend(void*, const float*, int64_t, int, int64_t, float, bool, int, float*);  \
  void side##_layer_delete(void*);
AB_DECLARE(ab_base)
AB_DECLARE(ab_head)

namespace {

using Clock = std::chrono::steady_clock;

struct Timings {
  double min_a, min_b;        // fastest call of each side, seconds
  double median_a, median_b;  // median call: where a slow thread or a late claim shows
};

// Seconds per call of a and b, called alternately `calls` times, a first in even rounds and b
// first in odd ones, so that neither side always follows the other. That is not all of it: the
// same build on both sides still read head/base 0.87-0.97 (fastest calls) and 0.95-0.99 (medians)
// in K4V4 int8 decode at 32K on the 2-core VM, whichever was allocated or linked first: time a
// change both ways round (AB_BOTH=1 in run.sh; kernel_choices_avx2.md round 51).
Timings alternate(const std::function<void()>& a, const std::function<void()>& b, int calls) {
  std::vector<double> ta, tb;
  auto timed = [](const std::function<void()>& f) {
    const auto t0 = Clock::now();
    f();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  for (int i = 0; i < calls; ++i) {
    if (i % 2 == 0) {
      ta.push_back(timed(a));
      tb.push_back(timed(b));
    } else {
      tb.push_back(timed(b));
      ta.push_back(timed(a));
    }
  }
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  return {*std::min_element(ta.begin(), ta.end()), *std::min_element(tb.begin(), tb.end()), median(ta), median(tb)};
}

std::vector<float> gaussian(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (float& v : x) v = normal(gen);
  return x;
}

int usage() {
  std::fprintf(stderr,
               "usage: ab encode BITS ROWS CALLS [SIMD] [HEAD_DIM=128]\n"
               "       ab attention KBITS VBITS CONTEXT CALLS [THREADED=1] [SIMD] [Q_HEADS=32 KV_HEADS=8] [int8|int8kv]\n"
               "SIMD: 0 scalar, 1 avx2, 2 avx512, 3 neon (default: 1 on x86, 3 on arm64)\n"
               "attention's head_dim: AB_HEAD_DIM (default 128); caches per side called in turn: AB_LAYERS (default 1);\n"
               "sequences: AB_BATCH (default 1); query positions, causal: AB_Q_LEN (default 1, at most CONTEXT)\n");
  return 2;
}

#if defined(__aarch64__)
constexpr int kDefaultSimd = 3;
#else
constexpr int kDefaultSimd = 1;
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string mode = argv[1];
  if (mode == "encode" && argc >= 5) {
    const int bits = std::atoi(argv[2]), rows = std::atoi(argv[3]), calls = std::atoi(argv[4]);
    const int simd = argc > 5 ? std::atoi(argv[5]) : kDefaultSimd;
    const int d = argc > 6 ? std::atoi(argv[6]) : 128;
    const auto x = gaussian(size_t(rows) * d, 1);
    void* base = ab_base_codec_new(d, bits, simd);
    void* head = ab_head_codec_new(d, bits, simd);
    std::vector<uint8_t> codes_base(size_t(rows) * ab_base_code_bytes(base)), codes_head(size_t(rows) * ab_head_code_bytes(head));
    std::vector<float> norms_base(rows), norms_head(rows);
    const auto [t_base, t_head, median_base, median_head] = alternate([&] { ab_base_encode(base, x.data(), rows, codes_base.data(), norms_base.data()); },
                                            [&] { ab_head_encode(head, x.data(), rows, codes_head.data(), norms_head.data()); }, calls);
    const double bytes = 4.0 * d * rows;
    std::printf("encode d=%d bits=%d rows=%d simd=%d, min of %d alternating calls: base %.1f ns/vector (%.2f GB/s), "
                "head %.1f ns/vector (%.2f GB/s), head/base %.3f, identical output: %s\n",
                d, bits, rows, simd, calls, t_base / rows * 1e9, bytes / t_base / 1e9, t_head / rows * 1e9,
                bytes / t_head / 1e9, t_head / t_base,
                codes_base == codes_head && norms_base == norms_head ? "yes" : "NO");
    ab_base_codec_delete(base);
    ab_head_codec_delete(head);
    return 0;
  }
  if (mode == "attention" && argc >= 6) {
    const int d = std::getenv("AB_HEAD_DIM") ? std::atoi(std::getenv("AB_HEAD_DIM")) : 128;
    const int layers = std::getenv("AB_LAYERS") ? std::atoi(std::getenv("AB_LAYERS")) : 1;
    const int64_t batch = std::getenv("AB_BATCH") ? std::atoll(std::getenv("AB_BATCH")) : 1;
    const int64_t q_len = std::getenv("AB_Q_LEN") ? std::atoll(std::getenv("AB_Q_LEN")) : 1;
    if (d <= 0 || layers <= 0 || batch <= 0 || q_len <= 0) return usage();
    const int kbits = std::atoi(argv[2]), vbits = std::atoi(argv[3]);
    const int64_t context = std::atoll(argv[4]);
    const int calls = std::atoi(argv[5]);
    const bool threaded = argc > 6 ? std::atoi(argv[6]) != 0 : true;
    const int simd = argc > 7 ? std::atoi(argv[7]) : kDefaultSimd;
    const int q_heads = argc > 9 ? std::atoi(argv[8]) : 32, kv_heads = argc > 9 ? std::atoi(argv[9]) : 8;
    // Head counts come as a pair; the only words after them are int8 (scores) and int8kv (scores
    // and values); anything else is refused.
    const std::string word = argc == 11 ? argv[10] : "";
    if (argc == 9 || argc > 11 || (argc == 11 && word != "int8" && word != "int8kv") || q_len > context) return usage();
    const int int8 = word == "int8kv" ? 2 : word == "int8" ? 1 : 0;
    const auto k = gaussian(size_t(batch * kv_heads * context) * d, 2), v = gaussian(k.size(), 3),
               q = gaussian(size_t(batch * q_heads * q_len) * d, 4);
    std::vector<void*> base(static_cast<size_t>(layers)), head(base.size());
    for (int l = 0; l < layers; ++l) {  // the same keys and values in every layer: the same codes
      base[l] = ab_base_layer_new(d, kv_heads, kbits, vbits, simd, k.data(), v.data(), batch, context);
      head[l] = ab_head_layer_new(d, kv_heads, kbits, vbits, simd, k.data(), v.data(), batch, context);
    }
    std::vector<float> out_base(q.size()), out_head(q.size());
    const float scale = 1.0f / std::sqrt(float(d));
    if (!ab_base_attend(base[0], q.data(), batch, q_heads, q_len, scale, threaded, int8, out_base.data()) ||
        !ab_head_attend(head[0], q.data(), batch, q_heads, q_len, scale, threaded, int8, out_head.data())) {
      std::fprintf(stderr, "int8kv: a side's commit has no int8 values (added in b2945d7)\n");
      return 2;
    }
    const bool first_identical = out_base == out_head;  // layer 0; the last call's layer below
    size_t turn_base = 0, turn_head = 0;  // each side attends its layers in turn
    const auto [t_base, t_head, median_base, median_head] = alternate(
        [&] { ab_base_attend(base[turn_base++ % base.size()], q.data(), batch, q_heads, q_len, scale, threaded, int8, out_base.data()); },
        [&] { ab_head_attend(head[turn_head++ % head.size()], q.data(), batch, q_heads, q_len, scale, threaded, int8, out_head.data()); },
        calls);
    char layer_text[48] = "";
    if (layers > 1) std::snprintf(layer_text, sizeof(layer_text), " (%d layers in turn)", layers);
    char shape_text[64] = "";
    if (batch > 1 || q_len > 1)
      std::snprintf(shape_text, sizeof(shape_text), " batch %lld q_len %lld causal", static_cast<long long>(batch),
                    static_cast<long long>(q_len));
    std::printf("attention K%dV%d%s context=%lld%s heads %d/%d d=%d%s %s simd=%d, min of %d alternating calls: base %.3f ms, "
                "head %.3f ms, head/base %.3f, identical output: %s; medians: base %.3f ms, head %.3f ms, head/base %.3f\n",
                kbits, vbits, int8 == 2 ? " int8 scores and values" : int8 == 1 ? " int8 scores" : "", static_cast<long long>(context), shape_text, q_heads, kv_heads, d, layer_text, threaded ? "threaded" : "one thread", simd, calls,
                t_base * 1e3, t_head * 1e3, t_head / t_base, first_identical && out_base == out_head ? "yes" : "NO",
                median_base * 1e3, median_head * 1e3, median_head / median_base);
    for (int l = 0; l < layers; ++l) {
      ab_base_layer_delete(base[l]);
      ab_head_layer_delete(head[l]);
    }
    return 0;
  }
  return usage();
}
