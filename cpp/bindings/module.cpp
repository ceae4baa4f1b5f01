// turbokv._core: converts numpy arrays to pointers and dispatches to the C++ core. No logic lives
// here beyond checking that every buffer is as large as the pointer arithmetic will assume; the
// user-facing validation and messages are in python/turbokv/codec.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "../src/kernels.hpp"
#include "turbokv/codebook.hpp"
#include "turbokv/codec.hpp"
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

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "turbokv C++ core (private; use the turbokv package)";

  py::enum_<Mode>(m, "Mode").value("mse", Mode::kMse).value("prod", Mode::kProd);
  py::enum_<NormDtype>(m, "NormDtype")
      .value("float32", NormDtype::kFloat32)
      .value("float16", NormDtype::kFloat16);

  m.def("detect_simd", [] { return std::string(simd_name(detect_simd())); });
  m.def("default_simd", [] { return std::string(simd_name(default_simd())); });

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
              py::array residual_norms, py::array out) {
             if (!py::isinstance<py::array_t<float>>(q)) throw py::type_error("q must be float32");
             const Rows r = rows(c, q, "q");
             const int64_t n = out.ndim() == 2 && out.shape(0) == r.n ? out.shape(1) : -1;
             if (n < 0) throw py::value_error("out must have shape (m, n)");
             Arrays a{codes, norms, qjl, residual_norms};
             const ConstEncodedBuffers in = in_buffers(c, a, n);
             float* dst = buffer<float>(out, r.n * n, "out", true);
             py::gil_scoped_release release;
             c.scores(static_cast<const float*>(r.data), r.n, r.stride, in, n, dst);
           })
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
