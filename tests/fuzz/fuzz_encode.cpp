// Encode arbitrary float bit patterns (NaN, Inf, denormals, huge values) with arbitrary settings:
// either NonFiniteInput is thrown or every output is written in bounds and decodes.
#include <vector>

#include "fuzz_input.hpp"
#include "turbokv/codec.hpp"

using namespace turbokv;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  CodecConfig config;
  config.head_dim = fuzz::head_dim(in);
  config.bits = in.range(1, 8);
  config.mode = in.byte() & 1 ? Mode::kProd : Mode::kMse;
  config.norm_dtype = in.byte() & 1 ? NormDtype::kFloat16 : NormDtype::kFloat32;
  config.norm_correction = config.mode == Mode::kMse && (in.byte() & 1);
  config.seed = in.byte() & 1;
  const auto levels = supported_simd();
  const auto level = levels[static_cast<size_t>(in.range(0, static_cast<int>(levels.size()) - 1))];
  const Codec& codec = fuzz::codec_for(config, level);
  const int64_t n = in.range(1, 4), d = config.head_dim;
  const std::vector<float> x = in.floats(static_cast<size_t>(n * d));
  std::vector<uint8_t> codes(n * codec.code_bytes()), qjl(n * codec.qjl_bytes());
  std::vector<float> norms(n), residual_norms(n), out(n * d);
  try {
    codec.encode(x.data(), n, d, {codes.data(), norms.data(), qjl.data(), residual_norms.data()});
  } catch (const NonFiniteInput&) {
    return 0;
  }
  codec.decode({codes.data(), norms.data(), qjl.data(), residual_norms.data()}, n, out.data());
  return 0;
}
