// Google Benchmark for the codec's hot paths, per (head_dim, bits, SIMD level).
//   build/cpp-tests/turbokv_bench --benchmark_filter=Encode
// Throughput is reported as vectors/s (items) and float32 input bytes/s.
#include <benchmark/benchmark.h>

#include <random>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <vector>

#include "../cpp/src/avx2_helpers.hpp"
#include "../cpp/src/kernels.hpp"
#include "turbokv/codec.hpp"
#include "turbokv/kv_cache.hpp"

using namespace turbokv;

namespace {

constexpr int64_t kVectors = 4096;

struct Fixture {
  Codec codec;
  std::vector<float> x;
  std::vector<uint8_t> codes, qjl, norms, residual_norms;
  Fixture(int d, int bits, Mode mode, SimdLevel level)
      : codec(CodecConfig{d, bits, mode, 0, NormDtype::kFloat32, false}, level),
        x(kVectors * d),
        codes(kVectors * codec.code_bytes()),
        qjl(kVectors * codec.qjl_bytes()),
        norms(kVectors * 4),
        residual_norms(kVectors * 4) {
    std::mt19937 gen(1);
    std::normal_distribution<float> g;
    for (float& v : x) v = g(gen);
    codec.encode(x.data(), kVectors, d, out());
  }
  EncodedBuffers out() { return {codes.data(), norms.data(), qjl.data(), residual_norms.data()}; }
  ConstEncodedBuffers in() { return {codes.data(), norms.data(), qjl.data(), residual_norms.data()}; }
};

bool skip_unsupported(benchmark::State& state, SimdLevel level) {
  if (simd_supported(level)) return false;
  state.SkipWithError("SIMD level not supported by this CPU");
  return true;
}

void set_counters(benchmark::State& state, int d) {
  state.SetItemsProcessed(state.iterations() * kVectors);
  state.SetBytesProcessed(state.iterations() * kVectors * d * int64_t(sizeof(float)));
}

void BM_Rotate(benchmark::State& state) {
  const int d = int(state.range(0));
  const auto level = SimdLevel(state.range(2));
  if (skip_unsupported(state, level)) return;
  Fixture f(d, 4, Mode::kMse, level);
  std::vector<float> y(d);
  for (auto _ : state) {
    for (int64_t i = 0; i < kVectors; ++i) f.codec.rotation().forward(f.x.data() + i * d, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, d);
}

// Encode of `rows` vectors at head_dim 128 into one preallocated output: 64 rows stay in L1 (32 KB
// of input, the kernels alone), 262,144 rows stream 128 MiB from memory (what
// bench/codec_throughput.py times, without the fresh output arrays each Python call allocates).
void BM_EncodeRows(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const int d = 128, bits = int(state.range(1));
  const auto level = SimdLevel(state.range(2));
  if (skip_unsupported(state, level)) return;
  const Codec codec(CodecConfig{d, bits, Mode::kMse, 0, NormDtype::kFloat32, false}, level);
  std::vector<float> x(static_cast<size_t>(rows) * d);
  std::mt19937 gen(1);
  std::normal_distribution<float> g;
  for (float& v : x) v = g(gen);
  std::vector<uint8_t> codes(static_cast<size_t>(rows) * codec.code_bytes());
  std::vector<float> norms(static_cast<size_t>(rows));
  const EncodedBuffers out{codes.data(), norms.data(), nullptr, nullptr};
  for (auto _ : state) {
    codec.encode(x.data(), rows, d, out);
    benchmark::DoNotOptimize(codes.data());
  }
  state.SetItemsProcessed(state.iterations() * rows);
  state.SetBytesProcessed(state.iterations() * rows * d * int64_t(sizeof(float)));
}

void BM_Encode(benchmark::State& state) {
  const int d = int(state.range(0)), bits = int(state.range(1));
  const auto level = SimdLevel(state.range(2));
  if (skip_unsupported(state, level)) return;
  Fixture f(d, bits, Mode(state.range(3)), level);
  for (auto _ : state) {
    f.codec.encode(f.x.data(), kVectors, d, f.out());
    benchmark::DoNotOptimize(f.codes.data());
  }
  set_counters(state, d);
}

void BM_Decode(benchmark::State& state) {
  const int d = int(state.range(0)), bits = int(state.range(1));
  const auto level = SimdLevel(state.range(2));
  if (skip_unsupported(state, level)) return;
  Fixture f(d, bits, Mode(state.range(3)), level);
  std::vector<float> out(kVectors * d);
  for (auto _ : state) {
    f.codec.decode(f.in(), kVectors, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, d);
}

// One query against kVectors keys (decode-time attention scoring).
void BM_Scores(benchmark::State& state) {
  const int d = int(state.range(0)), bits = int(state.range(1));
  const auto level = SimdLevel(state.range(2));
  if (skip_unsupported(state, level)) return;
  Fixture f(d, bits, Mode(state.range(3)), level);
  std::vector<float> s(kVectors);
  for (auto _ : state) {
    f.codec.scores(f.x.data(), 1, d, f.in(), kVectors, s.data());
    benchmark::DoNotOptimize(s.data());
  }
  set_counters(state, d);
}

// The decode step of one KV head at GQA 4: 4 queries scored against kVectors keys, float32 or
// int8 (Codec::scores precision), and 4 weight rows summed over kVectors values (Codec::accumulate).
// Per-kernel cycles per key or token = time x clock / kVectors.
void BM_GroupScores(benchmark::State& state) {
  const int d = 128, bits = int(state.range(0));
  const auto level = SimdLevel(state.range(1));
  const bool int8 = state.range(2) == 1;
  if (skip_unsupported(state, level)) return;
  Fixture f(d, bits, Mode::kMse, level);
  if (int8 && !f.codec.int8_scores_supported()) {
    state.SkipWithError("no integer scores for these keys");
    return;
  }
  std::vector<float> s(4 * kVectors);
  for (auto _ : state) {
    f.codec.scores(f.x.data(), 4, d, f.in(), kVectors, s.data(),
                   int8 ? ScorePrecision::kInt8 : ScorePrecision::kExact);
    benchmark::DoNotOptimize(s.data());
  }
  state.SetItemsProcessed(state.iterations() * kVectors);  // keys
}
BENCHMARK(BM_GroupScores)->ArgNames({"bits", "simd", "int8"})->ArgsProduct({{1, 2, 3, 4, 5, 6, 8}, {1, 2}, {0, 1}});

void BM_GroupValues(benchmark::State& state) {
  const int d = 128, bits = int(state.range(0));
  const auto level = SimdLevel(state.range(1));
  const bool int8 = state.range(2) == 1;
  if (skip_unsupported(state, level)) return;
  Fixture f(d, bits, Mode::kMse, level);
  if (int8 && !f.codec.int8_values_supported()) {
    state.SkipWithError("int8 values need values of at most 4 bits");
    return;
  }
  std::vector<float> w(4 * kVectors, 1.0f / kVectors), acc(4 * d), sketch(4 * d), scratch(5 * kVectors);
  for (auto _ : state) {
    f.codec.accumulate(w.data(), kVectors, 4, f.in(), kVectors, acc.data(), sketch.data(), scratch.data(),
                       int8 ? ValuePrecision::kInt8 : ValuePrecision::kExact);
    benchmark::DoNotOptimize(acc.data());
  }
  state.SetItemsProcessed(state.iterations() * kVectors);  // tokens
}
BENCHMARK(BM_GroupValues)->ArgNames({"bits", "simd", "int8"})->ArgsProduct({{1, 2, 3, 4, 8}, {1, 2}, {0, 1}});

void codec_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"d", "bits", "simd", "prod"});
  for (int level : {0, 1, 2, 3}) {  // scalar, avx2, avx512, neon: SimdLevel values
    for (int d : {64, 96, 128, 256}) {
      for (int bits : {2, 3, 4, 8}) b->Args({d, bits, level, 0});
    }
    b->Args({128, 4, level, 1});
  }
}

void rotate_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"d", "bits", "simd"});
  for (int level : {0, 1, 2, 3}) {  // scalar, avx2, avx512, neon: SimdLevel values
    for (int d : {64, 96, 128, 256, 1024}) b->Args({d, 4, level});
  }
}

// Decode attention for one new token: batch 1, 8 KV heads, 32 query heads, head_dim 128.
void BM_Attention(benchmark::State& state) {
  const int64_t context = state.range(0);
  const int kv_heads = 8, q_heads = 32, d = 128;
  CacheConfig config;
  config.head_dim = d;
  config.kv_heads = kv_heads;
  config.key.bits = int(state.range(1));
  config.value.bits = int(state.range(2));
  KVCacheLayer cache(config);
  std::mt19937 gen(1);
  std::normal_distribution<float> g;
  const int64_t block = 4096;
  std::vector<float> k(kv_heads * block * d), v(k.size());
  for (int64_t done = 0; done < context; done += block) {
    for (float& x : k) x = g(gen);
    for (float& x : v) x = g(gen);
    cache.update(k.data(), v.data(), 1, std::min(block, context - done));
  }
  std::vector<float> q(q_heads * d), out(q.size());
  for (float& x : q) x = g(gen);
  const bool threaded = state.range(3) != 0;
  AttentionOptions options{0.088f};
  // int8: 0 float32 sums, 1 int8 scores, 2 int8 scores and values (where the widths allow).
  if (state.range(4) >= 1) options.scores = ScorePrecision::kInt8;
  if (state.range(4) >= 2) options.values = ValuePrecision::kInt8;
  for (auto _ : state) {
    cache.attention(q.data(), 1, q_heads, 1, options, out.data(), threaded);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * cache.used_bytes());
}

#if defined(__x86_64__)
// 128 lookups into a 256-float table (one 8-bit key), by vgatherdps or by 8 scalar loads and
// inserts per vector: kernels::kGathersAreSlow picks one per CPU from this measurement.
__attribute__((target("avx2,fma"))) void BM_Lookup8(benchmark::State& state) {
  if (!simd_supported(SimdLevel::kAvx2)) {
    state.SkipWithError("no AVX2");
    return;
  }
  const bool gather = state.range(0) == 1;
  std::vector<float> table(256);
  std::vector<uint8_t> idx(128 * 1024);
  std::mt19937 gen(3);
  for (auto& i : idx) i = uint8_t(gen());
  for (int i = 0; i < 256; ++i) table[i] = float(i);
  for (auto _ : state) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < idx.size(); i += 8) {
      acc = _mm256_add_ps(acc, gather ? kernels::lookup8_gather(table.data(), idx.data() + i)
                                      : kernels::lookup8_loads(table.data(), idx.data() + i));
    }
    benchmark::DoNotOptimize(acc);
  }
  state.SetItemsProcessed(state.iterations() * int64_t(idx.size()) / 128);  // keys of d = 128
}
BENCHMARK(BM_Lookup8)->ArgName("gather")->Arg(0)->Arg(1);

// Peak 512-bit multiply-add rate of one core (12 independent chains hide the FMA latency): the
// compute floor of fused attention, which needs 64 of them per token and KV head for 4 query heads
// (32 for scores, 32 for values) at head_dim 128.
__attribute__((target("avx512f"))) void BM_Avx512FmaPeak(benchmark::State& state) {
  if (detect_simd() != SimdLevel::kAvx512) {
    state.SkipWithError("no AVX-512");
    return;
  }
  constexpr int kChains = 12;
  constexpr int64_t kSteps = 1 << 20;
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(float(c));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
  for (auto _ : state) {
    for (int64_t i = 0; i < kSteps; ++i) {
      for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    }
    for (int c = 0; c < kChains; ++c) benchmark::DoNotOptimize(acc[c]);
  }
  state.SetItemsProcessed(state.iterations() * kSteps * kChains);  // FMAs (16 lanes each)
}
BENCHMARK(BM_Avx512FmaPeak);

// Peak 512-bit vpdpbusd rate of one core, as BM_Avx512FmaPeak: 64 byte products each, against 16
// per FMA (2-core VM of round 16: 3.24 G/s against 4.19 G/s FMAs, 3.1x the products per second).
__attribute__((target("avx512f,avx512vnni"))) void BM_Avx512DpbusdPeak(benchmark::State& state) {
  if (detect_simd() != SimdLevel::kAvx512 || !__builtin_cpu_supports("avx512vnni")) {
    state.SkipWithError("no AVX-512 VNNI");
    return;
  }
  constexpr int kChains = 12;
  constexpr int64_t kSteps = 1 << 20;
  __m512i acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_epi32(c);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-5);
  for (auto _ : state) {
    for (int64_t i = 0; i < kSteps; ++i) {
      for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
    }
    for (int c = 0; c < kChains; ++c) benchmark::DoNotOptimize(acc[c]);
  }
  state.SetItemsProcessed(state.iterations() * kSteps * kChains);  // instructions
}
BENCHMARK(BM_Avx512DpbusdPeak);

// Peak rate of plain AVX2's int8 step (vpmaddubsw, vpmaddwd with ones, vpaddd: 32 byte products
// into 8 int32 lanes) on one core: the compute floor of int8 decode where the CPU has no VNNI (AMD
// Zen 1-4 at the AVX2 level). Four distinct products per round (2 x 2 operands, opaque to the
// compiler each round, so none is computed once for all) into four accumulators, all in registers
// (six spilled two to the stack, whose store-forward round trip then set the pace). At GQA 4 and
// head_dim 128 the scores take 16 such steps per token and KV head, the values 16 vpmaddubsw and 8
// vpmaddwd (two steps share a widening, axpy_int8_avx2_kernel.inc): 28 steps' worth of multiplies.
__attribute__((target("avx2"))) inline __m256i int8_step(__m256i u, __m256i q, __m256i ones) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), ones);
}
__attribute__((target("avx2"))) void BM_Avx2MaddubsPeak(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx2")) {
    state.SkipWithError("no AVX2");
    return;
  }
  constexpr int64_t kRounds = 1 << 20;
  __m256i acc0 = _mm256_set1_epi32(0), acc1 = _mm256_set1_epi32(1), acc2 = _mm256_set1_epi32(2),
          acc3 = _mm256_set1_epi32(3);
  __m256i u0 = _mm256_set1_epi8(3), u1 = _mm256_set1_epi8(7), q0 = _mm256_set1_epi8(-5), q1 = _mm256_set1_epi8(9);
  const __m256i ones = _mm256_set1_epi16(1);
  for (auto _ : state) {
    for (int64_t i = 0; i < kRounds; ++i) {
      asm volatile("" : "+x"(u0), "+x"(u1), "+x"(q0), "+x"(q1));
      acc0 = _mm256_add_epi32(acc0, int8_step(u0, q0, ones));
      acc1 = _mm256_add_epi32(acc1, int8_step(u1, q0, ones));
      acc2 = _mm256_add_epi32(acc2, int8_step(u0, q1, ones));
      acc3 = _mm256_add_epi32(acc3, int8_step(u1, q1, ones));
    }
    benchmark::DoNotOptimize(acc0);
    benchmark::DoNotOptimize(acc1);
    benchmark::DoNotOptimize(acc2);
    benchmark::DoNotOptimize(acc3);
  }
  state.SetItemsProcessed(state.iterations() * kRounds * 4);  // steps
}
BENCHMARK(BM_Avx2MaddubsPeak);

// The value kernels alone as decode calls them: 4 queries, head_dim d, 256 tokens per call,
// 32K tokens per iteration. kernel: 0 AVX2 float32, 1 AVX2 int8 (plain), 2 AVX2 int8 with
// AVX-VNNI (or its EVEX form where the CPU has AVX-512 VNNI only: VnniForm), 3 AVX-512 float32,
// 4 AVX-512 int8. Run with --benchmark_repetitions=5
// --benchmark_enable_random_interleaving=true: this VM's phases move single runs by 1.5x.
void BM_ValueKernels(benchmark::State& state) {
  const int bits = int(state.range(0)), kernel = int(state.range(1));
  const int d = int(state.range(2)), m = 4;
  const int64_t n = 256, calls = 128;
  const bool avx512 = kernel >= 3;
  if (skip_unsupported(state, avx512 ? SimdLevel::kAvx512 : SimdLevel::kAvx2)) return;
  const kernels::VnniForm vnni = kernels::kHasAvxVnni ? kernels::VnniForm::kVex : kernels::VnniForm::kEvex;
  if (kernel == 2 && !kernels::vnni_form_runs(vnni)) {
    state.SkipWithError("no AVX-VNNI or AVX-512 VNNI");
    return;
  }
  const auto& k = kernels::kernel_set(avx512 ? SimdLevel::kAvx512 : SimdLevel::kAvx2);
  const int64_t code_bytes = (int64_t(d) * bits + 7) / 8;
  std::mt19937 gen(1);
  std::vector<uint8_t> codes(size_t(code_bytes * n * calls));
  for (auto& c : codes) c = uint8_t(gen());
  std::vector<float> table(16), w(size_t(m * n)), acc(size_t(m * d), 0.0f);
  std::vector<int8_t> table8(16);
  for (int i = 0; i < 16; ++i) {  // int8 kernels take centroid bytes within ±kInt8CentroidTop
    table8[i] = int8_t(int(gen() % (2 * kernels::kInt8CentroidTop + 1)) - kernels::kInt8CentroidTop);
    table[i] = 0.01f * table8[i];
  }
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (auto& x : w) x = unit(gen);
  for (auto _ : state) {
    for (int64_t call = 0; call < calls; ++call) {
      const uint8_t* c = codes.data() + call * n * code_bytes;
      if (kernel == 0 || kernel == 3) {
        k.axpy_packed(w.data(), n, m, c, code_bytes, n, table.data(), bits, d, acc.data());
      } else if (kernel == 4) {
        k.axpy_packed_int8(w.data(), n, m, c, code_bytes, n, table8.data(), 0.01f, bits, d, acc.data());
      } else {
        kernels::axpy_packed_int8_avx2_variant(kernel == 2 ? vnni : kernels::VnniForm::kNone, !kernels::kPdepIsSlow)(
            w.data(), n, m, c, code_bytes, n, table8.data(), 0.01f, bits, d, acc.data());
      }
    }
    benchmark::DoNotOptimize(acc.data());
  }
  state.SetItemsProcessed(state.iterations() * n * calls);  // tokens
}
BENCHMARK(BM_ValueKernels)->ArgNames({"bits", "kernel", "d"})->ArgsProduct({{1, 2, 3, 4}, {0, 1, 2, 3, 4}, {32, 64, 80, 96, 128, 160, 192, 256}});
#endif

}  // namespace

BENCHMARK(BM_Attention)
    ->ArgNames({"context", "kbits", "vbits", "threads", "int8"})
    ->Args({2048, 4, 4, 0, 0})
    ->Args({8192, 4, 4, 0, 0})
    ->Args({32768, 4, 4, 0, 0})
    ->Args({32768, 4, 4, 0, 1})
    ->Args({32768, 4, 4, 0, 2})
    ->Args({32768, 4, 4, 1, 0})
    ->Args({32768, 4, 2, 1, 0})
    ->Args({32768, 8, 4, 1, 0})  // the default preset, K8V4
    ->Args({32768, 0, 0, 1, 0})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Rotate)->Apply(rotate_args);
BENCHMARK(BM_Encode)->Apply(codec_args);
BENCHMARK(BM_EncodeRows)
    ->ArgNames({"rows", "bits", "simd"})
    ->ArgsProduct({{64, 262144}, {2, 3, 4, 8}, {int(SimdLevel::kAvx2), int(SimdLevel::kAvx512)}});
BENCHMARK(BM_Decode)->Apply(codec_args);
BENCHMARK(BM_Scores)->Apply(codec_args);
BENCHMARK_MAIN();
