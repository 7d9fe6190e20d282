// The CUDA kernels' walk over memory: the launch grid, which thread takes which elements of
// which sample, whether a step is one vector access or element by element, and which partial
// sum a block writes.  Plain integer arithmetic in host-device functions, no CUDA headers, so
// that tests/test_cuda_walker.py compiles it with the host compiler and enumerates every
// (block, thread, step) of a launch on the CPU (tests/cuda_walker_harness.cpp): no GPU has run
// this code, and it decides where every element is read and written.
#pragma once

#include <cstdint>

#include "infodrop/lanes.h"

namespace infodrop {
namespace cuda {

constexpr int kThreads = 256;
// Enough resident blocks to fill an SM (2048 threads) without making the partial sums large.
constexpr int kBlocksPerSm = 8;
// CUDA's limit on gridDim.y; more samples are walked by a loop over grid rows.
constexpr int64_t kMaxGridY = 65535;

// The work of one op call on contiguous tensors of `samples` x `per_sample` elements.
struct Shape {
  int64_t samples, per_sample;
};

// Elements per thread step: two Philox groups of 4 (16 bytes of 16-bit types, 32 of float:
// two 16-byte accesses), which halves the per-step work (the step's tests, addresses, loop) of
// float against one group (forward 58.2 -> 49.8 instructions per element, sm_90); one group for
// double (32 bytes already; its forward spilled with more).  Whole steps are loaded and stored
// at once where the pointers are aligned to a step's bytes.
INFODROP_HD constexpr int elements_per_step(int element_bytes) {
  return element_bytes >= 8 ? 4 : 8;
}

// Grid rows (gridDim.y) of the forward and backward launches: one per sample up to max_rows.
INFODROP_HD int64_t grid_rows(int64_t samples, int64_t max_rows = kMaxGridY) {
  return samples < max_rows ? samples : max_rows;
}

// Blocks per sample (gridDim.x) for `steps` thread steps per sample when `resident_blocks`
// blocks fit on the GPU at once: enough for the sample's steps, but no more than a share of the
// resident blocks per grid row.
INFODROP_HD int blocks_for_steps(int64_t steps, int64_t samples, int resident_blocks,
                                 int64_t max_rows = kMaxGridY) {
  const int64_t wanted = (steps + kThreads - 1) / kThreads;
  const int64_t rows = grid_rows(samples, max_rows);
  const int64_t share = resident_blocks / (rows > 1 ? rows : 1);
  const int64_t budget = share > 1 ? share : 1;
  const int64_t blocks = wanted < budget ? wanted : budget;
  return static_cast<int>(blocks > 1 ? blocks : 1);
}

// Blocks per sample of the walk over contiguous samples (SampleSteps below).
INFODROP_HD int blocks_per_sample_of(const Shape& shape, int element_bytes, int resident_blocks,
                                     int64_t max_rows = kMaxGridY) {
  // +2: a sample can begin and end inside a step
  const int64_t steps = shape.per_sample / elements_per_step(element_bytes) + 2;
  return blocks_for_steps(steps, shape.samples, resident_blocks, max_rows);
}

// Calls f(b) for each sample b of grid row `row` of `rows` (blockIdx.y of gridDim.y).
template <class F>
INFODROP_HD void for_each_sample(int64_t samples, unsigned row, unsigned rows, F&& f) {
  for (int64_t b = row; b < samples; b += rows) f(b);
}

// The steps of sample b, V elements each.  Steps are aligned to the global element index, not
// to the sample: a sample whose length is not a multiple of V shares its first and last step
// with its neighbours, and those steps take the per-element path with bounds checks.
template <int V>
struct SampleSteps {
  int64_t begin, end;   // the sample's elements [begin, end)
  int64_t first, stop;  // its steps [first, stop); step s covers elements s * V .. s * V + V - 1
  // its whole steps [first_whole, first_whole + whole_steps): none unless `aligned`
  int64_t first_whole;
  uint64_t whole_steps;

  INFODROP_HD SampleSteps(const Shape& shape, int64_t b, bool aligned)
      : begin(b * shape.per_sample),
        end(begin + shape.per_sample),
        first(begin / V),
        stop(end > begin ? (end + V - 1) / V : first),
        first_whole((begin + V - 1) / V),
        whole_steps(aligned && end / V > first_whole ? end / V - first_whole : 0) {}

  // Whether element i belongs to this sample (the per-element path's bounds check).
  INFODROP_HD bool has(int64_t i) const { return i >= begin && i < end; }

  // Whether `step` is one vector access: all its elements in this sample and the pointers
  // aligned to V elements (then p + step * V is, too).  One unsigned 64-bit compare against
  // bounds made once per sample: the same test as four 64-bit compares of the step's ends, which
  // cost the forward 8-10 instructions per step (a bool materialised, then tested).
  INFODROP_HD bool whole(int64_t step) const {
    return static_cast<uint64_t>(step - first_whole) < whole_steps;
  }
};

// Calls f(step) for the steps of thread `thread` of block `block` of `blocks` (threadIdx.x,
// blockIdx.x, gridDim.x) among the steps of one sample: a grid-stride loop.
template <int V, class F>
INFODROP_HD void for_each_step(const SampleSteps<V>& steps, unsigned block, unsigned blocks,
                               unsigned thread, F&& f) {
  const int64_t stride = static_cast<int64_t>(blocks) * kThreads;
  for (int64_t step = steps.first + static_cast<int64_t>(block) * kThreads + thread;
       step < steps.stop; step += stride)
    f(step);
}

// The partial sum that block `block` of `blocks` writes for sample b: the caller allocates
// samples x blocks of them (uninitialised) and sums over the blocks.
INFODROP_HD int64_t partial_slot(int64_t b, unsigned blocks, unsigned block) {
  return b * blocks + block;
}

// The noise kernel: out[j] = eps at stream index start + j, j < n, one Philox group (4 stream
// indices) per thread step.
struct NoiseGroups {
  uint64_t start, n;
  uint64_t first, count;  // groups first .. first + count - 1 cover the n indices

  INFODROP_HD NoiseGroups(uint64_t start_, int64_t n_)
      : start(start_),
        n(static_cast<uint64_t>(n_)),
        first(start_ >> 2),
        count(n_ > 0 ? ((start_ + static_cast<uint64_t>(n_) - 1) >> 2) - (start_ >> 2) + 1 : 0) {}

  // Whether stream index i is one of out's.
  INFODROP_HD bool has(uint64_t i) const { return i >= start && i - start < n; }

  // Whether group g is one float4 store: all of it in out, out 16-byte aligned and start a
  // multiple of 4 (`aligned` says both).
  INFODROP_HD bool whole(uint64_t g, bool aligned) const {
    return aligned && (g << 2) >= start && (g << 2) - start + 4 <= n;
  }
};

// Blocks of the noise kernel: one thread per group, at most `resident_blocks` (a grid-stride
// loop takes the rest).
INFODROP_HD uint64_t noise_blocks(const NoiseGroups& groups, int resident_blocks) {
  const uint64_t wanted = (groups.count + kThreads - 1) / kThreads;
  return wanted < static_cast<uint64_t>(resident_blocks) ? wanted
                                                         : static_cast<uint64_t>(resident_blocks);
}

// Calls f(group) for the groups of thread `thread` of block `block` of `blocks`.
template <class F>
INFODROP_HD void for_each_group(const NoiseGroups& groups, unsigned block, unsigned blocks,
                                unsigned thread, F&& f) {
  const uint64_t stride = static_cast<uint64_t>(blocks) * kThreads;
  for (uint64_t t = static_cast<uint64_t>(block) * kThreads + thread; t < groups.count;
       t += stride)
    f(groups.first + t);
}

// ---- The walk over channels-last samples (infodrop/layout.h) -------------------------------
//
// Element (c, s) of a sample (channel c, position s) lies at memory offset s * C + c and has the
// logical index c * S + s, from which its noise is drawn.  A thread step takes a tile: `width`
// adjacent channels x 4 adjacent positions (a quad).  The 4 elements of one channel in a tile
// are logically consecutive, so they need one Philox group where every channel starts on one
// (S % 4 == 0), two otherwise; and consecutive threads take consecutive channel groups of the
// same quad, so that for each position a warp reads and writes adjacent memory (coalesced).
// Width 2 ("pairs": one 2-element access per position, 4 bytes for 16-bit types) where C is
// even; width 1 otherwise.

struct LastShape {
  int64_t samples, channels, positions;
  int width;  // channels per tile: 2 or 1

  INFODROP_HD int64_t per_sample() const { return channels * positions; }
  // channel groups per quad (width is 1 or 2: a shift, not a 64-bit division on the GPU)
  INFODROP_HD int64_t groups() const { return width == 2 ? channels >> 1 : channels; }
  INFODROP_HD int64_t quads() const { return (positions + 3) / 4; }
  INFODROP_HD int64_t tiles() const { return groups() * quads(); }  // thread steps per sample
  // Whether every channel of every sample starts a Philox group: (b * C + c) * S % 4 == 0.
  INFODROP_HD bool groups_aligned() const { return positions % 4 == 0; }
};

// The walk of a channels-last launch: pairs where C is even, the element type has at most 4
// bytes and the pointers are aligned to two elements (`pairs_aligned`; then every pair is, as
// its offset b * C * S + s * C + c is even).
INFODROP_HD LastShape last_shape(int64_t samples, int64_t channels, int64_t positions,
                                 int element_bytes, bool pairs_aligned) {
  const bool pairs = element_bytes <= 4 && channels % 2 == 0 && pairs_aligned;
  return {samples, channels, positions, pairs ? 2 : 1};
}

INFODROP_HD int blocks_per_sample_of(const LastShape& shape, int resident_blocks,
                                     int64_t max_rows = kMaxGridY) {
  return blocks_for_steps(shape.tiles(), shape.samples, resident_blocks, max_rows);
}

// One tile of a sample.  Element (w, k), w < width, k < valid: channel c0 + w, position
// 4 * quad + k, at memory offset row + k * C + w and logical index logical + w * S + k.
struct Tile {
  int64_t row;      // memory offset of (c0, 4 * quad) in the sample
  int64_t logical;  // logical index of (c0, 4 * quad) in the sample
  int valid;        // positions in the tile: 4, or fewer in the last quad when S % 4 != 0
  uint32_t channel;  // c0, its first channel

  INFODROP_HD Tile(const LastShape& shape, int64_t quad, int64_t group)
      : row(4 * quad * shape.channels + group * shape.width),
        logical(group * shape.width * shape.positions + 4 * quad),
        valid(shape.positions - 4 * quad < 4 ? static_cast<int>(shape.positions - 4 * quad) : 4),
        channel(static_cast<uint32_t>(group * shape.width)) {}

  INFODROP_HD bool whole() const { return valid == 4; }
};

// Calls f(tile) for the tiles of one sample that thread `thread` of block `block` of `blocks`
// takes: a grid-stride loop over tile t = quad * groups + group, kept as (quad, group) so that
// the loop divides nothing.  The two divisions before it are 32-bit (a 64-bit division is a
// long subroutine on the GPU): a thread's first tile and the grid stride are below 2^32 (a
// sample gets at most the resident blocks, blocks_for_steps), and so are the groups
// (ops_cuda.cpp checks C < 2^31).
template <class F>
INFODROP_HD void for_each_tile(const LastShape& shape, unsigned block, unsigned blocks,
                               unsigned thread, F&& f) {
  const uint32_t first = block * kThreads + thread, stride = blocks * kThreads;
  const uint32_t groups = static_cast<uint32_t>(shape.groups());
  const int64_t quads = shape.quads(), stride_quads = stride / groups;
  const uint32_t stride_groups = stride % groups;
  int64_t quad = first / groups;
  uint32_t group = first % groups;
  while (quad < quads) {
    f(Tile(shape, quad, group));
    quad += stride_quads;
    group += stride_groups;
    if (group >= groups) {
      group -= groups;
      ++quad;
    }
  }
}

}  // namespace cuda
}  // namespace infodrop
