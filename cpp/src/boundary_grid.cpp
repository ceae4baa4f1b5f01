#include "boundary_grid.hpp"

#include <array>
#include <cmath>

#include "turbokv/codebook.hpp"

namespace turbokv {
namespace kernels {

namespace {

bool is_symmetric_with_zero(const float* boundaries, int count) {
  if (count % 2 == 0 || boundaries[count / 2] != 0.0f) return false;
  for (int k = 0; k < count; ++k) {
    if (boundaries[k] != -boundaries[count - 1 - k]) return false;
  }
  return true;
}

// The first grid of first_cells, 2 first_cells, ... up to last_cells cells on which no cell holds
// two boundaries (cells == 0 if none).
BoundaryGrid build_grid(const float* boundaries, int count, int first_cells, int last_cells) {
  BoundaryGrid grid;
  if (count < 2 || !(boundaries[count - 1] > boundaries[0])) return grid;
  for (int cells = first_cells; cells <= last_cells; cells *= 2) {
    grid.origin = boundaries[0];
    grid.inv_width = static_cast<float>(cells) / (boundaries[count - 1] - boundaries[0]);
    grid.cells = cells;
    grid.table.assign(cells, GridCell{INFINITY, 0});
    std::vector<int> held(cells, 0);
    bool fine = true;
    for (int k = 0; k < count && fine; ++k) {
      const int c = grid.cell(boundaries[k]);
      fine = ++held[c] == 1;
      grid.table[c].candidate = boundaries[k];
    }
    if (!fine) continue;
    int running = 0;
    for (int c = 0; c < cells; ++c) {
      grid.table[c].below = running;
      running += held[c];
    }
    return grid;
  }
  return BoundaryGrid{};
}

// The positive half of symmetric boundaries on 8 cells from 0, the last boundary in the last
// cell (cells == 0 if two share a cell, or there are more than 8).
BoundaryGrid::Positive build_positive(const float* boundaries, int count) {
  BoundaryGrid::Positive grid;
  const int first = count / 2 + 1, positives = count - first;  // past the middle zero
  if (positives < 1 || positives > 8) return grid;
  grid.cells = 8;
  grid.inv_width = 8.0f / boundaries[count - 1];
  std::array<int, 8> held{};
  for (int c = 0; c < 8; ++c) grid.candidate[c] = INFINITY;
  for (int k = first; k < count; ++k) {
    const int c = grid.cell(boundaries[k]);
    if (++held[c] > 1) return BoundaryGrid::Positive{};
    grid.candidate[c] = boundaries[k];
  }
  int running = 0;
  for (int c = 0; c < 8; ++c) {
    grid.below[c] = running;
    running += held[c];
  }
  return grid;
}

}  // namespace

BoundaryGrid BoundaryGrid::build(const float* boundaries, int count) {
  // Start at 4 cells per boundary (enough for the Lloyd-Max codebooks of 5-8 bits, whose
  // narrowest gap is half the mean one) and refine until no cell holds two boundaries.
  BoundaryGrid grid = build_grid(boundaries, count, 4 * count, 1 << 16);
  grid.symmetric_with_zero = is_symmetric_with_zero(boundaries, count);
  if (grid.symmetric_with_zero) grid.positive = build_positive(boundaries, count);
  const BoundaryGrid narrow = build_grid(boundaries, count, 16, 32);
  if (narrow.cells > 0) {
    grid.narrow.origin = narrow.origin;
    grid.narrow.inv_width = narrow.inv_width;
    grid.narrow.cells = narrow.cells;
    for (int c = 0; c < 32; ++c) {  // cells past the grid's end are never looked up
      grid.narrow.candidate[c] = c < narrow.cells ? narrow.table[c].candidate : INFINITY;
      grid.narrow.below[c] = c < narrow.cells ? narrow.table[c].below : count;
    }
  }
  return grid;
}

const BoundaryGrid& codebook_grid(int bits) {
  static const std::array<BoundaryGrid, kMaxBits + 1> grids = [] {
    std::array<BoundaryGrid, kMaxBits + 1> out;
    for (int b = 0; b <= kMaxBits; ++b) {
      const auto& bounds = lloyd_max_codebook(b).boundaries;
      out[b] = BoundaryGrid::build(bounds.data(), static_cast<int>(bounds.size()));
    }
    return out;
  }();
  return grids.at(bits);
}

}  // namespace kernels
}  // namespace turbokv
