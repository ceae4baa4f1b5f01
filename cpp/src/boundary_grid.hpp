// Internal: the quantiser's boundaries placed on a uniform grid, so that SIMD code finds the index
// of a value with two independent table lookups instead of a binary search of `bits` dependent
// ones (AVX2 8-bit encode was 0.14 GB/s with eight dependent gathers per 8 coordinates).
#pragma once
#include <cstdint>
#include <vector>

namespace turbokv {
namespace kernels {

// cell(v) = int(clamp((v - origin) * inv_width, 0, cells - 1)) is monotone in v, so every
// boundary in a cell before v's is below v and every one after is above it. The grid is fine
// enough that a cell holds at most one boundary; then
//   index(v) = table[cell(v)].below + (v >= table[cell(v)].candidate)
// is exactly the number of boundaries <= v, the scalar definition, with no tolerance involved.
// One cell of the grid, both of its lookups in one 8-byte load (the scalar-load route of Zen 1/2
// then reads 8 cells instead of 16 table entries per 8 values; gathers use a stride of 8).
struct GridCell {
  float candidate;  // the boundary in this cell, +inf where there is none
  int32_t below;    // number of boundaries in the cells before this one
};
static_assert(sizeof(GridCell) == 8, "the grid quantisers load or gather a cell as one 64-bit word");

struct BoundaryGrid {
  float origin = 0.0f;
  float inv_width = 0.0f;
  int cells = 0;                  // 0: no grid (fewer than 2 boundaries, or no fine-enough grid)
  std::vector<GridCell> table;    // one per cell
  // b[count - 1 - k] == -b[k] with a zero in the middle (odd count): the Lloyd-Max codebooks are,
  // and the AVX2 counting quantiser then compares against the positive half only. Set whether
  // or not a grid was found, so quantisers need not re-check it per vector.
  bool symmetric_with_zero = false;

  // The same boundaries on at most 32 cells, where that is fine enough (one boundary per cell at
  // most: the 2-4-bit codebooks), with the same cell() arithmetic: the AVX-512 quantiser of 4-bit
  // codes looks a cell's candidate and count up in registers (two-register permutes).
  struct Narrow {
    float origin = 0.0f;
    float inv_width = 0.0f;
    int cells = 0;  // 0: none
    alignas(64) float candidate[32] = {};
    alignas(64) int32_t below[32] = {};
  } narrow;

  // Where symmetric_with_zero: the positive boundaries p_0 < ... < p_{P-1} on at most 8 cells
  // from 0, cell(a) = int(min(a * inv_width, cells - 1)) for a >= 0, where that puts at most one
  // boundary in a cell (the 4-bit codebook): the AVX2 quantiser counts the positive boundaries
  // below |v| as below[cell] + (|v| >= candidate[cell]) with one 8-lane permute for each.
  struct Positive {
    float inv_width = 0.0f;
    int cells = 0;  // 0: none
    alignas(32) float candidate[8] = {};
    alignas(32) int32_t below[8] = {};
    int cell(float a) const {
      float t = a * inv_width;
      t = t > static_cast<float>(cells - 1) ? static_cast<float>(cells - 1) : t;
      return static_cast<int>(t);
    }
  } positive;

  // Float operations in this order (no fused multiply-add): the SIMD kernels repeat them.
  int cell(float v) const {
    float t = (v - origin) * inv_width;
    t = t < 0.0f ? 0.0f : t;
    t = t > static_cast<float>(cells - 1) ? static_cast<float>(cells - 1) : t;
    return static_cast<int>(t);
  }

  static BoundaryGrid build(const float* boundaries, int count);
};

// The grid of the Lloyd-Max codebook of this many bits (built once, shared, thread-safe).
const BoundaryGrid& codebook_grid(int bits);

}  // namespace kernels
}  // namespace turbokv
