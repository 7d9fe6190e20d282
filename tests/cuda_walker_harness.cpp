// Runs the CUDA kernels' walk (csrc/cuda/walker.h) on the CPU: every (blockIdx, threadIdx,
// step) of a launch, in the kernels' order of calls, recording what each element and each
// partial-sum slot receives.  Built and driven by tests/test_cuda_walker.py.
//
// stdin, one launch per line:
//   steps <samples> <per_sample> <element_bytes> <aligned 0|1> <resident_blocks> <max_rows>
//   noise <n> <start> <aligned 0|1> <resident_blocks>
// stdout, one line per launch: "ok <blocks> <rows>" or "FAIL <what went wrong>".
#include <cstdint>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/walker.h"

using namespace infodrop::cuda;

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
        const SampleSteps<V> sample(shape, b);
        for (unsigned thread = 0; thread < kThreads; ++thread)
          for_each_step(sample, block, blocks, thread, [&](int64_t step) {
            const bool whole = sample.whole(step, aligned);
            const int64_t i0 = step * V;
            // a vector access needs aligned pointers and lies inside the sample
            require(!whole || (aligned && i0 >= b * shape.per_sample &&
                               i0 + V <= (b + 1) * shape.per_sample),
                    "whole step ", step, " of sample ", b);
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
