// Runs the CUDA kernels' walk (csrc/cuda/walker.h) on the CPU: every (blockIdx, threadIdx,
// step) of a launch, in the kernels' order of calls, recording what each element and each
// partial-sum slot receives.  Built and driven by tests/test_cuda_walker.py.
//
// stdin, one launch per line:
//   steps <samples> <per_sample> <element_bytes> <aligned 0|1> <resident_blocks> <max_rows>
//   noise <n> <start> <aligned 0|1> <resident_blocks>
//   last <samples> <channels> <positions> <element_bytes> <pairs_aligned 0|1> <resident_blocks>
//        <max_rows>
//   four <seed> <offset> <first> <count>: noise_of_four(i0) (elementwise.h, the straddling
//        tiles' noise) against noise_at(i0 + k), bit for bit, for i0 = first .. first + count - 1
// stdout, one line per launch: "ok <blocks> <rows>" (four: "ok") or "FAIL <what went wrong>".
#include <cstdint>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/walker.h"
#include "infodrop/elementwise.h"
#include "infodrop/layout.h"

using namespace infodrop::cuda;
using infodrop::noise_at;
using infodrop::noise_of_four;
using infodrop::pick_lanes;
using infodrop::StreamKey;

namespace {

struct Failure {
  std::string what;
};

template <class... A>
void require(bool ok, const A&... what) {
  if (ok) return;
  std::ostringstream out;
  (out << ... << what);
  throw Failure{out.str()};
}

// The forward and backward kernels: each element read (x, alpha_logit, ...) and written (z,
// grads) once, by a thread walking its own sample, and summed into that sample's partial.
template <int V>
std::string walk_steps(const Shape& shape, int element_bytes, bool aligned, int resident,
                       int64_t max_rows) {
  const int blocks = blocks_per_sample_of(shape, element_bytes, resident, max_rows);
  const int64_t rows = grid_rows(shape.samples, max_rows);
  require(blocks >= 1 && rows <= max_rows, "grid ", blocks, " x ", rows);
  // the share of the resident blocks (blocks * rows <= resident unless one block per row)
  require(blocks == 1 || blocks * rows <= resident, blocks, " blocks x ", rows, " rows > ",
          resident, " resident");
  const int64_t total = shape.samples * shape.per_sample;
  std::vector<int> accessed(total, 0), summed(total, 0);
  std::vector<int> slots(shape.samples * blocks, 0);
  for (int64_t row = 0; row < rows; ++row)
    for (unsigned block = 0; block < static_cast<unsigned>(blocks); ++block)
      // the kernel's loop over this row's samples, for every thread of the block
      for_each_sample(shape.samples, row, rows, [&](int64_t b) {
        const SampleSteps<V> sample(shape, b, aligned);
        for (unsigned thread = 0; thread < kThreads; ++thread)
          for_each_step(sample, block, blocks, thread, [&](int64_t step) {
            const bool whole = sample.whole(step);
            const int64_t i0 = step * V;
            // a vector access exactly where the pointers are aligned and the step lies inside
            // the sample (the whole steps' faster path is taken wherever it can be)
            require(whole == (aligned && i0 >= b * shape.per_sample &&
                              i0 + V <= (b + 1) * shape.per_sample),
                    "whole step ", step, " of sample ", b, whole ? "" : " not");
            for (int k = 0; k < V; ++k) {
              // as load_step / store_step and the partial sums of kernels.cu decide
              if (!(whole || sample.has(i0 + k))) continue;
              const int64_t i = i0 + k;
              require(i >= 0 && i < total, "element ", i, " outside the tensor");
              require(i / shape.per_sample == b, "element ", i, " taken by sample ", b);
              ++accessed[i];
              ++summed[i];
            }
          });
        const int64_t slot = partial_slot(b, blocks, block);
        require(slot >= 0 && slot < static_cast<int64_t>(slots.size()) && slot / blocks == b,
                "slot ", slot, " written for sample ", b);
        ++slots[slot];
      });
  for (int64_t i = 0; i < total; ++i)
    require(accessed[i] == 1 && summed[i] == 1, "element ", i, " accessed ", accessed[i],
            " times, summed ", summed[i], " times");
  for (size_t s = 0; s < slots.size(); ++s)
    require(slots[s] == 1, "partial slot ", s, " written ", slots[s], " times");
  std::ostringstream out;
  out << "ok " << blocks << " " << rows;
  return out.str();
}

// The noise kernel: out[j] written once, with the eps of stream index start + j.
std::string walk_noise(int64_t n, uint64_t start, bool aligned, int resident) {
  const NoiseGroups groups(start, n);
  const uint64_t blocks = noise_blocks(groups, resident);
  require(blocks >= 1 && blocks <= static_cast<uint64_t>(resident), "noise grid ", blocks);
  std::vector<int> written(n, 0);
  for (uint64_t block = 0; block < blocks; ++block)
    for (unsigned thread = 0; thread < kThreads; ++thread)
      for_each_group(groups, block, blocks, thread, [&](uint64_t group) {
        const uint64_t i0 = group << 2;  // stream index of the group's eps[0]
        const bool whole = groups.whole(group, aligned);
        // a float4 store needs a 16-byte aligned out + (i0 - start)
        require(!whole || (aligned && (i0 - start) % 4 == 0), "float4 store at group ", group);
        for (int k = 0; k < 4; ++k) {
          if (!(whole || groups.has(i0 + k))) continue;
          const uint64_t j = i0 + k - start;  // out[j] = eps[k] of this group
          require(j < static_cast<uint64_t>(n), "out[", j, "] outside out (group ", group, ")");
          require(((start + j) >> 2) == group && ((start + j) & 3) == static_cast<uint64_t>(k),
                  "out[", j, "] given stream index ", i0 + k);
          ++written[j];
        }
      });
  for (int64_t j = 0; j < n; ++j) require(written[j] == 1, "out[", j, "] written ", written[j], " times");
  std::ostringstream out;
  out << "ok " << blocks << " 1";
  return out.str();
}

// The channels-last kernels (kernels.cu's forward_last_kernel, backward_last_kernel): each
// element read and written once, by its own sample, summed once into its partial; the element
// at memory offset m has the logical index l with SampleLayout::offset(l) == m, the index the
// contiguous walk gives it; its noise is lane k of the Philox group the kernel draws for it, and
// that lane is the one of its logical index; pairs are aligned; and the threads of a warp take
// adjacent channels of one quad (coalesced accesses).
std::string walk_last(int64_t samples, int64_t channels, int64_t positions, int element_bytes,
                      bool pairs_aligned, int resident, int64_t max_rows) {
  const LastShape shape = last_shape(samples, channels, positions, element_bytes, pairs_aligned);
  const int width = shape.width;
  require(width == 1 || (element_bytes <= 4 && channels % 2 == 0 && pairs_aligned),
          "pairs for C ", channels, " of ", element_bytes, " bytes");
  const int blocks = blocks_per_sample_of(shape, resident, max_rows);
  const int64_t rows = grid_rows(samples, max_rows);
  require(blocks >= 1 && (blocks == 1 || blocks * rows <= resident), "grid ", blocks, " x ", rows);
  const int64_t per_sample = shape.per_sample(), total = samples * per_sample;
  const infodrop::SampleLayout layout{channels, positions, true};
  std::vector<int> accessed(total, 0), summed(total, 0);
  std::vector<int> slots(samples * blocks, 0);
  for (int64_t row = 0; row < rows; ++row)
    for (unsigned block = 0; block < static_cast<unsigned>(blocks); ++block)
      for_each_sample(samples, row, rows, [&](int64_t b) {
        const int64_t base = b * per_sample;
        // per thread, the (quad, row) of its tiles in loop order, to compare warp neighbours
        std::vector<std::vector<std::pair<int64_t, int64_t>>> walked(kThreads);
        for (unsigned thread = 0; thread < kThreads; ++thread)
          for_each_tile(shape, block, blocks, thread, [&](const Tile& tile) {
            // as the kernels decide (Groups::Aligned drops the checks)
            const bool whole = shape.groups_aligned() || tile.whole();
            require(!whole || tile.whole(), "whole tile past the sample's end");
            require(tile.row >= 0 && tile.row < per_sample, "tile at ", tile.row);
            walked[thread].push_back({(tile.row / channels) / 4, tile.row});
            for (int w = 0; w < width; ++w) {
              // the kernels' noise of channel c0 + w (tile_noise)
              const uint64_t first = static_cast<uint64_t>(base + tile.logical + w * positions);
              const uint64_t group = first >> 2;
              int64_t lanes[4];
              if (shape.groups_aligned()) {
                require(first % 4 == 0, "one group drawn for a channel starting at ", first);
                for (int k = 0; k < 4; ++k) lanes[k] = static_cast<int64_t>(4 * group + k);
              } else {
                int64_t a[4], c[4];
                for (int k = 0; k < 4; ++k) {
                  a[k] = static_cast<int64_t>(4 * group + k);
                  c[k] = static_cast<int64_t>(4 * (group + 1) + k);
                }
                pick_lanes(a, c, static_cast<unsigned>(first & 3), lanes);
              }
              for (int k = 0; k < 4; ++k) {
                if (!(whole || k < tile.valid)) continue;
                const int64_t m = base + tile.row + k * channels + w;
                const int64_t l = base + tile.logical + w * positions + k;
                require(m >= 0 && m < total && m / per_sample == b, "element at ", m,
                        " outside sample ", b);
                require(l / per_sample == b && base + layout.offset(l - base) == m, "memory ", m,
                        " given logical index ", l);
                require(lanes[k] == l, "element ", l, " given the noise of stream index ",
                        lanes[k]);
                // the logit_bias the kernels add to it (add_logit_bias): its channel's
                require((l - base) / positions == tile.channel + w, "element ", l,
                        " given the logit_bias of channel ", tile.channel + w);
                require(width == 1 || w != 0 || m % 2 == 0, "pair at odd offset ", m);
                ++accessed[m];
                ++summed[m];
              }
            }
          });
        // coalescing: in each loop iteration, warp neighbours on the same quad take adjacent
        // channel groups
        for (unsigned thread = 1; thread < kThreads; ++thread) {
          if (thread % 32 == 0) continue;
          const auto& mine = walked[thread];
          const auto& left = walked[thread - 1];
          for (size_t i = 0; i < mine.size() && i < left.size(); ++i)
            require(mine[i].first != left[i].first || mine[i].second == left[i].second + width,
                    "threads ", thread - 1, " and ", thread, " not adjacent in iteration ", i);
        }
        const int64_t slot = partial_slot(b, blocks, block);
        require(slot >= 0 && slot < static_cast<int64_t>(slots.size()) && slot / blocks == b,
                "slot ", slot, " written for sample ", b);
        ++slots[slot];
      });
  for (int64_t i = 0; i < total; ++i)
    require(accessed[i] == 1 && summed[i] == 1, "element ", i, " accessed ", accessed[i],
            " times, summed ", summed[i], " times");
  for (size_t s = 0; s < slots.size(); ++s)
    require(slots[s] == 1, "partial slot ", s, " written ", slots[s], " times");
  std::ostringstream out;
  out << "ok " << blocks << " " << rows << " " << width;
  return out.str();
}

std::string run(const std::string& line) {
  std::istringstream in(line);
  std::string kind;
  in >> kind;
  if (kind == "steps") {
    Shape shape;
    int element_bytes, aligned, resident;
    int64_t max_rows;
    in >> shape.samples >> shape.per_sample >> element_bytes >> aligned >> resident >> max_rows;
    if (elements_per_step(element_bytes) == 8)
      return walk_steps<8>(shape, element_bytes, aligned, resident, max_rows);
    require(elements_per_step(element_bytes) == 4, "step width of ", element_bytes, " bytes");
    return walk_steps<4>(shape, element_bytes, aligned, resident, max_rows);
  }
  if (kind == "last") {
    int64_t samples, channels, positions, max_rows;
    int element_bytes, pairs_aligned, resident;
    in >> samples >> channels >> positions >> element_bytes >> pairs_aligned >> resident >>
        max_rows;
    return walk_last(samples, channels, positions, element_bytes, pairs_aligned, resident,
                     max_rows);
  }
  if (kind == "four") {
    uint64_t seed, offset, first, count;
    in >> seed >> offset >> first >> count;
    const StreamKey key(seed, offset);
    for (uint64_t i0 = first; i0 != first + count; ++i0) {
      float eps[4];
      noise_of_four(i0, key, eps);
      for (int k = 0; k < 4; ++k) {
        const float want = noise_at(i0 + k, key);
        require(std::memcmp(&eps[k], &want, sizeof want) == 0, "noise_of_four(", i0, ")[", k,
                "] = ", eps[k], ", stream index ", i0 + k, " has ", want);
      }
    }
    return "ok";
  }
  require(kind == "noise", "unknown launch kind ", kind);
  int64_t n;
  uint64_t start;
  int aligned, resident;
  in >> n >> start >> aligned >> resident;
  return walk_noise(n, start, aligned, resident);
}

}  // namespace

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    try {
      std::cout << run(line) << "\n";
    } catch (const Failure& failure) {
      std::cout << "FAIL " << failure.what << "\n";
    }
  }
  return 0;
}
