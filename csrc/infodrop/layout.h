// Where the elements of one sample lie in memory.  The noise is a function of an element's
// logical (row-major) index whatever the memory format (docs/spec.md section 3), so a kernel
// that walks a tensor in place needs the map from logical index to memory offset.
//
// Logically a sample of a (B, C, d2, ..., dk) tensor is C channels of S = d2 * ... * dk
// positions, element j = c * S + s.  The kernels walk two memory orders in place:
//   channels-first: the sample is contiguous, offset j;
//   channels-last:  dim 1 innermost (NHWC, NDHWC, any (B, C, ...) whose memory order is
//                   (0, 2, ..., k, 1)), offset s * C + c.
// Plain integer arithmetic in host-device functions: the CPU walker, the CUDA walker and the
// CPU tests of the CUDA indexing (tests/cuda_walker_harness.cpp) share it.
#pragma once

#include <cstdint>

#include "infodrop/lanes.h"

namespace infodrop {

struct SampleLayout {
  int64_t channels = 1;   // C (1 for channels-first: the map is the identity)
  int64_t positions = 0;  // S; channels * positions elements per sample
  bool channels_last = false;

  // The memory offset, within its sample, of the sample's logical element j.
  INFODROP_HD int64_t offset(int64_t j) const {
    if (!channels_last) return j;
    const int64_t c = j / positions;
    return (j - c * positions) * channels + c;
  }
};

}  // namespace infodrop
