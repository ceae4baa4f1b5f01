// turbokv._core: converts numpy arrays to pointers and dispatches to the C++ core. No logic lives
// here beyond checking that every buffer is as large as the pointer arithmetic will assume; the
// user-facing validation and messages are in python/turbokv/codec.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "../src/kernels.hpp"
#include "turbokv/codebook.hpp"
#include "turbokv/codec.hpp"
#include "turbokv/kv_cache.hpp"
#include "turbokv/probe.hpp"
#include "turbokv/packing.hpp"

namespace py = pybind11;
using namespace turbokv;

namespace {

// Checks dtype, C-contiguity, writeability and exact element count of an output or input buffer.
template <typename T>
T* buffer(py::array& a, size_t count, const char* name, bool writable) {
  if (!py::isinstance<py::array_t<T>>(a) && !(std::is_same_v<T, uint16_t> && a.dtype().kind() == 'f' && a.itemsize() == 2)) {
    throw py::type_error(std::string(name) + ": wrong dtype " + std::string(py::str(a.dtype())));
  }
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  if (static_cast<size_t>(a.size()) != count) {
    throw py::value_error(std::string(name) + " has " + std::to_string(a.size()) +
                          " elements, expected " + std::to_string(count));
  }
  return static_cast<T*>(writable ? a.mutable_data() : const_cast<void*>(a.data()));
}

void* norm_buffer(const Codec& c, py::array& a, size_t n, const char* name, bool writable) {
  if (c.config().norm_dtype == NormDtype::kFloat16) return buffer<uint16_t>(a, n, name, writable);
  return buffer<float>(a, n, name, writable);
}

struct Arrays {
  py::array codes, norms, qjl, residual_norms;
};

EncodedBuffers out_buffers(const Codec& c, Arrays& a, int64_t n) {
  EncodedBuffers b;
  b.codes = buffer<uint8_t>(a.codes, n * c.code_bytes(), "codes", true);
  b.norms = norm_buffer(c, a.norms, n, "norms", true);
  if (c.config().mode == Mode::kProd) {
    b.qjl_signs = buffer<uint8_t>(a.qjl, n * c.qjl_bytes(), "qjl", true);
    b.residual_norms = norm_buffer(c, a.residual_norms, n, "residual_norms", true);
  }
  return b;
}

ConstEncodedBuffers in_buffers(const Codec& c, Arrays& a, int64_t n) {
  ConstEncodedBuffers b;
  b.codes = buffer<uint8_t>(a.codes, n * c.code_bytes(), "codes", false);
  b.norms = norm_buffer(c, a.norms, n, "norms", false);
  if (c.config().mode == Mode::kProd) {
    b.qjl_signs = buffer<uint8_t>(a.qjl, n * c.qjl_bytes(), "qjl", false);
    b.residual_norms = norm_buffer(c, a.residual_norms, n, "residual_norms", false);
  }
  return b;
}

// A 2-D (n, head_dim) array whose rows may be any whole number of elements apart.
struct Rows {
  const void* data;
  int64_t n;
  int64_t stride;  // in elements
};

Rows rows(const Codec& c, const py::array& x, const char* name) {
  if (x.ndim() != 2 || x.shape(1) != c.head_dim()) {
    throw py::value_error(std::string(name) + " must have shape (n, head_dim)");
  }
  const auto item = static_cast<int64_t>(x.itemsize());
  if (x.strides(1) != item || x.strides(0) % item != 0) {
    throw py::value_error(std::string(name) + " rows must be contiguous");
  }
  return {x.data(), x.shape(0), x.strides(0) / item};
}

// A (batch, heads, tokens, head_dim) float32 C-contiguous array.
// A float32 (batch, heads, rows, head_dim) array whose last axis is contiguous, in any layout of
// the other three (a transposed view of a model's (batch, rows, heads, head_dim) queries): its
// data and its row strides in floats. Anything else is refused.
std::pair<const float*, RowStrides> strided_rows(const py::array& a, const char* name) {
  if (!py::isinstance<py::array_t<float>>(a)) {
    throw py::type_error(std::string(name) + ": wrong dtype " + std::string(py::str(a.dtype())));
  }
  const auto f = static_cast<py::ssize_t>(sizeof(float));
  if (a.ndim() != 4 || (a.shape(3) > 1 && a.strides(3) != f)) {
    throw py::value_error(std::string(name) + " must be 4-D with a contiguous last axis");
  }
  for (int axis = 0; axis < 3; ++axis) {
    if (a.strides(axis) % f != 0) throw py::value_error(std::string(name) + " has unaligned strides");
  }
  return {static_cast<const float*>(a.data()),
          RowStrides{true, a.strides(0) / f, a.strides(1) / f, a.strides(2) / f}};
}

const float* tokens4d(py::array& a, const char* name, int64_t heads, int64_t d) {
  if (a.ndim() != 4 || a.shape(1) != heads || a.shape(3) != d) {
    throw py::value_error(std::string(name) + " must have shape (batch, heads, tokens, head_dim)");
  }
  return buffer<float>(a, static_cast<size_t>(a.size()), name, false);
}

// Keys and values of an update: (batch, kv_heads, tokens, head_dim) float32, the same shape.
struct UpdateArgs {
  const float* k;
  const float* v;
  int64_t batch, n;
};

UpdateArgs update_args(const KVCacheLayer& c, py::array& k, py::array& v) {
  const int64_t heads = c.config().kv_heads, d = c.config().head_dim;
  const float* kp = tokens4d(k, "keys", heads, d);
  const float* vp = tokens4d(v, "values", heads, d);
  if (k.shape(0) != v.shape(0) || k.shape(2) != v.shape(2)) {
    throw py::value_error("keys and values must have the same shape");
  }
  return {kp, vp, k.shape(0), k.shape(2)};
}

// A float32 numpy array that takes ownership of the vector's buffer (no copy).
py::array_t<float> owned(std::vector<float>&& data, std::vector<py::ssize_t> shape) {
  auto* heap = new std::vector<float>(std::move(data));
  py::capsule release(heap, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>(shape, heap->data(), release);
}

py::tuple snapshot_arrays(const KVCacheLayer& c, CacheSnapshot&& snap) {
  const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(snap.batch), c.config().kv_heads,
                                       static_cast<py::ssize_t>(snap.length), c.config().head_dim};
  return py::make_tuple(owned(std::move(snap.keys), shape), owned(std::move(snap.values), shape));
}

py::dict state_arrays(const TokenStore::State& st, int64_t batch, int64_t heads, int64_t d) {
  const auto b = static_cast<py::ssize_t>(batch), h = static_cast<py::ssize_t>(heads);
  const auto t = static_cast<py::ssize_t>(st.chunk_length);
  auto bytes = [&](const std::vector<uint8_t>& v) {
    const py::ssize_t per = b * h * t != 0 ? static_cast<py::ssize_t>(v.size()) / (b * h * t) : 0;
    return py::array_t<uint8_t>({b, h, t, per}, v.data());
  };
  auto halves = [&](const std::vector<uint16_t>& v, py::ssize_t tokens) {
    py::array out(py::dtype("float16"), {b, h, tokens, static_cast<py::ssize_t>(d)});
    if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * 2);
    return out;
  };
  py::dict out;
  out["codes"] = bytes(st.codes);
  out["norms"] = bytes(st.norms);
  out["qjl"] = bytes(st.qjl);
  out["residual_norms"] = bytes(st.residual_norms);
  out["halves"] = halves(st.halves, st.halves.empty() ? 0 : t);
  out["window"] = halves(st.window, static_cast<py::ssize_t>(st.window_length));
  return out;
}

TokenStore::State state_from(py::dict arrays, int64_t streams) {
  TokenStore::State st;
  st.streams = streams;
  auto raw = [&](const char* key) {
    py::array a = py::array::ensure(arrays[key], py::array::c_style);
    if (!a) throw py::value_error(std::string("state array ") + key + " is not an array");
    const auto* p = static_cast<const uint8_t*>(a.data());
    return std::vector<uint8_t>(p, p + a.nbytes());
  };
  auto tokens = [&](const char* key) {
    py::array a = arrays[key].cast<py::array>();
    return a.ndim() == 4 ? static_cast<int64_t>(a.shape(2)) : int64_t{-1};
  };
  st.codes = raw("codes");
  st.norms = raw("norms");
  st.qjl = raw("qjl");
  st.residual_norms = raw("residual_norms");
  const std::vector<uint8_t> halves = raw("halves"), window = raw("window");
  st.halves.resize(halves.size() / 2);
  std::memcpy(st.halves.data(), halves.data(), st.halves.size() * 2);
  st.window.resize(window.size() / 2);
  std::memcpy(st.window.data(), window.data(), st.window.size() * 2);
  st.chunk_length = std::max(tokens("codes"), tokens("halves"));
  st.window_length = tokens("window");
  return st;
}

ScorePrecision score_precision(const std::string& name) {
  if (name == "exact") return ScorePrecision::kExact;
  if (name == "int8") return ScorePrecision::kInt8;
  throw py::value_error("scores must be 'exact' or 'int8', got '" + name + "'");
}

ValuePrecision value_precision(const std::string& name) {
  if (name == "exact") return ValuePrecision::kExact;
  if (name == "int8") return ValuePrecision::kInt8;
  throw py::value_error("values must be 'exact' or 'int8', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "turbokv C++ core (private; use the turbokv package)";

  py::enum_<Mode>(m, "Mode").value("mse", Mode::kMse).value("prod", Mode::kProd);
  py::enum_<NormDtype>(m, "NormDtype")
      .value("float32", NormDtype::kFloat32)
      .value("float16", NormDtype::kFloat16);

  m.def("detect_simd", [] { return std::string(simd_name(detect_simd())); });
  m.def("supported_simd", [] {
    std::vector<std::string> names;
    for (SimdLevel level : supported_simd()) names.emplace_back(simd_name(level));
    return names;
  });
  m.def("default_simd", [] { return std::string(simd_name(default_simd())); });
  m.def("attention_threads", [] { return ThreadPool::shared().size(); },
        "Threads that threaded attention, probe and prefill encode run on (the caller's among "
        "them): TURBOKV_NUM_THREADS if set, else the CPUs this process may run on (its affinity "
        "mask on Linux), fixed at the pool's first use; once torch's OpenMP runtime is shared "
        "(turbokv.share_openmp_threads) without TURBOKV_NUM_THREADS, its omp_get_max_threads() "
        "(torch.get_num_threads()). Raises ValueError if TURBOKV_NUM_THREADS is not a whole "
        "number from 1 to 4096.");
  m.def("adopt_openmp_runtime",
        [](const std::string& library, int threads) {
          py::gil_scoped_release release;  // waits for a parallel_for in flight
          return adopt_openmp_runtime(library, threads);
        },
        py::arg("library"), py::arg("threads"),
        "Runs turbokv's parallel work on the threads of the OpenMP runtime already loaded from "
        "`library` (never loads one); threads > 0: that many, 0: its omp_get_max_threads() at "
        "each call. False, changing nothing, where it is not loaded or lacks GOMP_parallel.");
  m.def("thread_backend", [] { return ThreadPool::shared().uses_openmp() ? "openmp" : "pool"; },
        "\"openmp\" once a host OpenMP runtime's threads run turbokv's parallel work, else "
        "\"pool\" (turbokv's own threads).");
  m.def("kernel_routes", [] {
    const kernels::KernelRoutes r = kernels::kernel_routes();
    py::dict out;
    out["avx512_vnni"] = r.avx512_vnni;
    out["avx512_vbmi"] = r.avx512_vbmi;
    out["avx_vnni"] = r.avx_vnni;
    out["gathers_slow"] = r.gathers_slow;
    out["gds_mitigation"] = r.gds_mitigation;
    out["pdep_slow"] = r.pdep_slow;
    out["lane_swap_slow"] = r.lane_swap_slow;
    return out;
  },
  "The CPU facts the kernels pick their routes by (set once at import; all False off x86), as a "
  "dict of bools: avx512_vnni, avx512_vbmi, avx_vnni (int8 sums by vpdpbusd; byte planes by "
  "vpermb), gathers_slow (5-8-bit lookups by scalar loads: AMD Zen 1-4, or Intel's Gather Data "
  "Sampling microcode mitigation; TURBOKV_GATHERS=fast or slow overrides), gds_mitigation (Linux "
  "reports that mitigation, or cannot rule it out in a VM), pdep_slow, lane_swap_slow (AMD Zen "
  "workarounds). For benchmark and bug reports. Raises ValueError if TURBOKV_GATHERS is not "
  "auto, fast or slow.");
  m.def("int8_values_fast", [](int bits, int head_dim) {
    CodecConfig cfg;
    cfg.bits = bits;
    cfg.head_dim = head_dim;
    return Codec(cfg, default_simd()).int8_values_fast();
  }, py::arg("bits"), py::arg("head_dim"),
  "Whether values=\"int8\" is faster than exact values for these values at the default SIMD "
  "level: 1, 2 or 4 bits summed by vpdpbusd (AVX-VNNI, or AVX-512 VNNI with VBMI) or by plain "
  "AVX2's maddubs where a row fills whole 16-byte chunks (8-byte ones at 4 bits) and head_dim is "
  "at least 64, 3 bits too where head_dim is a multiple of 32, except at the AVX2 level where "
  "3-bit float32 values are looked up by vpermps (all but AMD Zen 1). The portable reference "
  "(scalar, NEON) gives the same results no faster.");

  m.def("attention_kl",
        [](py::array q, py::array exact, py::array stored, float scale, bool causal, int64_t window,
           const std::string& simd, bool threaded) {
          if (q.ndim() != 4 || exact.ndim() != 4 || stored.ndim() != 4) {
            throw py::value_error("attention_kl: queries and keys must be 4-D");
          }
          ProbeShape sh{q.shape(0), q.shape(1), exact.shape(1), q.shape(2), exact.shape(2), q.shape(3)};
          if (exact.shape(0) != sh.batch || exact.shape(3) != sh.head_dim) {
            throw py::value_error("attention_kl: keys do not match the queries");
          }
          const size_t keys = static_cast<size_t>(exact.size());
          const float* qp = buffer<float>(q, static_cast<size_t>(q.size()), "queries", false);
          const float* ep = buffer<float>(exact, keys, "exact_keys", false);
          const float* sp = buffer<float>(stored, keys, "stored_keys", false);
          std::vector<double> kl;
          {
            py::gil_scoped_release release;
            kl = attention_kl(qp, ep, sp, sh, scale, causal, window, parse_simd(simd),
                              threaded ? &ThreadPool::shared() : nullptr);
          }
          return py::array_t<double>(static_cast<py::ssize_t>(kl.size()), kl.data());
        },
        py::arg("queries"), py::arg("exact_keys"), py::arg("stored_keys"), py::arg("scale"),
        py::arg("causal"), py::arg("window"), py::arg("simd"), py::arg("threaded") = true);
  m.def("codebook", [](int bits) {
    const Codebook& b = lloyd_max_codebook(bits);
    return py::make_tuple(py::array_t<float>(b.centroids.size(), b.centroids.data()),
                          py::array_t<float>(b.boundaries.size(), b.boundaries.data()), b.mse);
  });

  m.def("pack", [](py::array idx, int bits, const std::string& simd) {
    if (bits < 0 || bits > kMaxBits) throw py::value_error("bits must be in 0..8");
    const auto n = static_cast<size_t>(idx.size());
    const uint8_t* in = buffer<uint8_t>(idx, n, "indices", false);
    py::array_t<uint8_t> out(packed_bytes(bits, n));
    kernels::kernel_set(parse_simd(simd)).pack(in, static_cast<int>(n), bits, out.mutable_data());
    return out;
  });
  m.def("unpack", [](py::array packed, int count, int bits, const std::string& simd) {
    if (bits < 0 || bits > kMaxBits || count < 0) throw py::value_error("bits must be in 0..8");
    const uint8_t* in = buffer<uint8_t>(packed, packed_bytes(bits, count), "packed", false);
    py::array_t<uint8_t> out(count);
    kernels::kernel_set(parse_simd(simd)).unpack(in, count, bits, out.mutable_data());
    return out;
  });

  py::class_<SideConfig>(m, "SideConfig")
      .def(py::init([](int bits, Mode mode, NormDtype norm_dtype, bool norm_correction) {
             return SideConfig{bits, mode, norm_dtype, norm_correction};
           }),
           py::arg("bits"), py::arg("mode"), py::arg("norm_dtype"), py::arg("norm_correction"));

  // Properties that take the cache's lock wait for it without the GIL, so a long update in
  // another thread does not stall every Python thread.
  const auto unlocked = [](int64_t (KVCacheLayer::*get)() const) {
    return py::cpp_function([get](const KVCacheLayer& c) { return (c.*get)(); },
                            py::call_guard<py::gil_scoped_release>());
  };
  py::class_<KVCacheLayer>(m, "KVCacheLayer")
      .def(py::init([](int head_dim, int kv_heads, const SideConfig& key, const SideConfig& value,
                       int64_t residual_window, uint64_t key_seed, uint64_t value_seed,
                       bool center_keys) {
             CacheConfig c{head_dim, kv_heads, key, value, residual_window, key_seed, value_seed,
                           center_keys};
             return std::make_unique<KVCacheLayer>(c);
           }),
           py::arg("head_dim"), py::arg("kv_heads"), py::arg("key"), py::arg("value"),
           py::arg("residual_window"), py::arg("key_seed"), py::arg("value_seed"),
           py::arg("center_keys"))
      .def_property_readonly("simd", [](const KVCacheLayer& c) { return simd_name(c.simd_level()); })
      .def_property_readonly("key_bits", [](const KVCacheLayer& c) {
        py::gil_scoped_release release;
        return c.key_side().bits;
      })
      .def_property_readonly("key_offset", [](const KVCacheLayer& c) {
        std::vector<float> offset;
        {
          py::gil_scoped_release release;
          offset = c.key_offset();
        }
        const auto n = static_cast<py::ssize_t>(offset.size());
        const py::ssize_t d = c.config().head_dim, h = c.config().kv_heads;
        return owned(std::move(offset), {n / (h * d), h, d});
      })
      .def("reencode_keys",
           [](KVCacheLayer& c, int bits, py::array k) {
             SideConfig side = c.config().key;
             side.bits = bits;
             const auto [kp, vp, batch, n] = update_args(c, k, k);
             py::gil_scoped_release release;
             c.reencode_keys(side, kp, batch, n);
           })
      .def("attention_kl",
           [](const KVCacheLayer& c, py::array q, py::array exact, float scale, bool causal,
              int64_t window, bool threaded) {
             const int64_t d = c.config().head_dim;
             const float* ep = tokens4d(exact, "exact_keys", c.config().kv_heads, d);
             if (q.ndim() != 4 || q.shape(0) != exact.shape(0) || q.shape(3) != d) {
               throw py::value_error("attention_kl: queries must have shape (batch, q_heads, rows, head_dim) "
                                     "with the exact keys' batch and head_dim");
             }
             const float* qp = buffer<float>(q, static_cast<size_t>(q.size()), "queries", false);
             std::vector<double> kl;
             {
               py::gil_scoped_release release;
               kl = c.attention_kl(qp, ep, q.shape(0), q.shape(1), q.shape(2), exact.shape(2), scale,
                                   causal, window, threaded);
             }
             return py::array_t<double>(static_cast<py::ssize_t>(kl.size()), kl.data());
           },
           py::arg("queries"), py::arg("exact_keys"), py::arg("scale"), py::arg("causal"),
           py::arg("window"), py::arg("threaded") = true,
           "Prefill protection's KL per KV head of the stored keys against exact_keys (the keys "
           "of the cache's only update), as _core.attention_kl on fetch()'s keys.")
      .def_property_readonly("length", unlocked(&KVCacheLayer::length))
      .def_property_readonly("batch", unlocked(&KVCacheLayer::batch))
      .def_property_readonly("allocated_bytes", unlocked(&KVCacheLayer::allocated_bytes))
      .def_property_readonly("used_bytes", unlocked(&KVCacheLayer::used_bytes))
      .def("update",
           [](KVCacheLayer& c, py::array k, py::array v) {
             const auto [kp, vp, batch, n] = update_args(c, k, v);
             py::gil_scoped_release release;
             c.update(kp, vp, batch, n);
           })
      .def("fetch",
           [](const KVCacheLayer& c) {
             CacheSnapshot snap;
             {
               py::gil_scoped_release release;
               snap = c.fetch();
             }
             return snapshot_arrays(c, std::move(snap));
           })
      .def("update_and_fetch",
           [](KVCacheLayer& c, py::array k, py::array v) {
             const auto [kp, vp, batch, n] = update_args(c, k, v);
             CacheSnapshot snap;
             {
               py::gil_scoped_release release;
               snap = c.update_and_fetch(kp, vp, batch, n);
             }
             return snapshot_arrays(c, std::move(snap));
           })
      .def("attention",
           [](const KVCacheLayer& c, py::array q, float scale, bool threaded,
              std::optional<py::array> key_valid, float softcap, std::optional<py::array> sinks,
              const std::string& path, bool causal, int64_t window, const std::string& scores,
              const std::string& values, bool positions_first) {
             if (q.ndim() != 4 || q.shape(3) != c.config().head_dim) {
               throw py::value_error("queries must have shape (batch, q_heads, q_len, head_dim)");
             }
             AttentionOptions options;
             options.scale = scale;
             options.softcap = softcap;
             options.causal = causal;
             options.window = window;
             if (path == "auto") {
               options.path = AttentionPath::kAuto;
             } else if (path == "codes") {
               options.path = AttentionPath::kCodes;
             } else if (path == "tiles") {
               options.path = AttentionPath::kTiles;
             } else {
               throw py::value_error("path must be 'auto', 'codes' or 'tiles', got '" + path + "'");
             }
             options.scores = score_precision(scores);
             options.values = value_precision(values);
             const auto [qp, q_strides] = strided_rows(q, "queries");
             if (key_valid) {
               // The mask's token count travels with it; the cache checks it under its lock.
               if (key_valid->ndim() != 2 || key_valid->shape(0) != q.shape(0)) {
                 throw py::value_error("key_mask must have shape (batch, cached tokens)");
               }
               options.key_valid_tokens = key_valid->shape(1);
               options.key_valid = buffer<uint8_t>(*key_valid, static_cast<size_t>(key_valid->size()),
                                                   "key_mask", false);
             }
             if (sinks) {
               options.sinks = buffer<float>(*sinks, static_cast<size_t>(q.shape(1)), "sinks", false);
             }
             // positions_first: (batch, q_len, q_heads, head_dim), what a model's output
             // projection reads, written in place.
             const py::ssize_t b = q.shape(0), h = q.shape(1), l = q.shape(2), d = q.shape(3);
             py::array_t<float> out = positions_first ? py::array_t<float>({b, l, h, d})
                                                      : py::array_t<float>({b, h, l, d});
             const RowStrides out_strides =
                 positions_first ? RowStrides{true, l * h * d, d, h * d} : RowStrides{};
             float* op = out.mutable_data();
             AttentionReport report;
             {
               py::gil_scoped_release release;
               report = c.attention(qp, b, h, l, options, op, threaded, q_strides, out_strides);
             }
             return py::make_tuple(out, report.items, report.tiled_items, report.sequence_splits,
                                   report.int8_items, report.int8_value_items, report.threads);
           },
           py::arg("queries"), py::arg("scale"), py::arg("threaded") = true,
           py::arg("key_valid") = py::none(), py::arg("softcap") = 0.0f,
           py::arg("sinks") = py::none(), py::arg("path") = "auto", py::arg("causal") = true,
           py::arg("window") = 0, py::arg("scores") = "exact", py::arg("values") = "exact",
           py::arg("positions_first") = false)
      .def("select_batch",
           [](KVCacheLayer& c, std::vector<int64_t> rows) {
             py::gil_scoped_release release;
             c.select_batch(rows);
           })
      .def("trim", [](KVCacheLayer& c, int64_t n) { c.trim(n); })
      .def("clear", &KVCacheLayer::clear)
      .def("export_state",
           [](const KVCacheLayer& c) {
             CacheState st;
             {
               py::gil_scoped_release release;
               st = c.export_state();
             }
             const int64_t heads = c.config().kv_heads, d = c.config().head_dim;
             const auto offset_rows = static_cast<py::ssize_t>(st.key_offset.size()) / (heads * d);
             return py::make_tuple(st.batch, st.keys.chunk_length + st.keys.window_length,
                                   state_arrays(st.keys, st.batch, heads, d),
                                   state_arrays(st.values, st.batch, heads, d), st.key.bits,
                                   owned(std::move(st.key_offset), {offset_rows, heads, d}));
           })
      .def("import_state", [](KVCacheLayer& c, int64_t batch, py::dict k, py::dict v, int key_bits,
                              py::array key_offset) {
        CacheState st;
        st.batch = batch;
        st.key = c.config().key;
        st.key.bits = key_bits;
        const int64_t streams = batch * c.config().kv_heads;
        st.keys = state_from(k, streams);
        st.values = state_from(v, streams);
        const float* mu = buffer<float>(key_offset, static_cast<size_t>(key_offset.size()), "key_offset", false);
        st.key_offset.assign(mu, mu + key_offset.size());
        py::gil_scoped_release release;
        c.import_state(st);
      });

  py::class_<Codec>(m, "Codec")
      .def(py::init([](int head_dim, int bits, Mode mode, uint64_t seed, NormDtype norm_dtype,
                       bool norm_correction, const std::string& simd) {
             CodecConfig c;
             c.head_dim = head_dim;
             c.bits = bits;
             c.mode = mode;
             c.seed = seed;
             c.norm_dtype = norm_dtype;
             c.norm_correction = norm_correction;
             return Codec(c, simd == "default" ? default_simd() : parse_simd(simd));
           }),
           py::arg("head_dim"), py::arg("bits"), py::arg("mode"), py::arg("seed"),
           py::arg("norm_dtype"), py::arg("norm_correction"), py::arg("simd") = "default")
      .def_property_readonly("simd", [](const Codec& c) { return simd_name(c.simd_level()); })
      .def_property_readonly("code_bytes", &Codec::code_bytes)
      .def_property_readonly("qjl_bytes", &Codec::qjl_bytes)
      .def_property_readonly("bytes_per_vector", &Codec::bytes_per_vector)
      .def_property_readonly("bits_per_coordinate", &Codec::bits_per_coordinate)
      .def("encode",
           [](const Codec& c, py::array x, py::array codes, py::array norms, py::array qjl,
              py::array residual_norms) {
             const Rows r = rows(c, x, "x");
             Arrays a{codes, norms, qjl, residual_norms};
             const EncodedBuffers out = out_buffers(c, a, r.n);
             const bool half = x.dtype().kind() == 'f' && x.itemsize() == 2;
             if (!half && !py::isinstance<py::array_t<float>>(x)) throw py::type_error("x must be float32 or float16");
             py::gil_scoped_release release;
             if (half) {
               c.encode(static_cast<const uint16_t*>(r.data), r.n, r.stride, out);
             } else {
               c.encode(static_cast<const float*>(r.data), r.n, r.stride, out);
             }
           })
      .def("decode",
           [](const Codec& c, py::array codes, py::array norms, py::array qjl,
              py::array residual_norms, py::array out) {
             const int64_t n = out.ndim() == 2 ? out.shape(0) : -1;
             if (n < 0) throw py::value_error("out must have shape (n, head_dim)");
             Arrays a{codes, norms, qjl, residual_norms};
             const ConstEncodedBuffers in = in_buffers(c, a, n);
             float* dst = buffer<float>(out, n * c.head_dim(), "out", true);
             py::gil_scoped_release release;
             c.decode(in, n, dst);
           })
      .def("scores",
           [](const Codec& c, py::array q, py::array codes, py::array norms, py::array qjl,
              py::array residual_norms, py::array out, const std::string& precision) {
             const ScorePrecision p = score_precision(precision);
             if (!py::isinstance<py::array_t<float>>(q)) throw py::type_error("q must be float32");
             const Rows r = rows(c, q, "q");
             const int64_t n = out.ndim() == 2 && out.shape(0) == r.n ? out.shape(1) : -1;
             if (n < 0) throw py::value_error("out must have shape (m, n)");
             Arrays a{codes, norms, qjl, residual_norms};
             const ConstEncodedBuffers in = in_buffers(c, a, n);
             float* dst = buffer<float>(out, r.n * n, "out", true);
             py::gil_scoped_release release;
             c.scores(static_cast<const float*>(r.data), r.n, r.stride, in, n, dst, p);
           },
           py::arg("q"), py::arg("codes"), py::arg("norms"), py::arg("qjl"),
           py::arg("residual_norms"), py::arg("out"), py::arg("precision") = "exact")
      .def("rotate",
           [](const Codec& c, py::array_t<float, py::array::c_style | py::array::forcecast> x,
              bool inverse) {
             if (x.ndim() != 2 || x.shape(1) != c.head_dim()) {
               throw py::value_error("x must have shape (n, head_dim)");
             }
             py::array_t<float> out({x.shape(0), x.shape(1)});
             const float* src = x.data();
             float* dst = out.mutable_data();
             const int64_t n = x.shape(0), d = c.head_dim();
             py::gil_scoped_release release;
             for (int64_t i = 0; i < n; ++i) {
               if (inverse) {
                 c.rotation().inverse(src + i * d, dst + i * d);
               } else {
                 c.rotation().forward(src + i * d, dst + i * d);
               }
             }
             return out;
           },
           py::arg("x"), py::arg("inverse") = false);
}
