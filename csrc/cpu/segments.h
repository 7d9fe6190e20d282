// The interface between the PyTorch glue (ops_cpu.cpp) and the per-ISA kernels.
//
// A segment is a run of n contiguous elements that belong to one sample and start at logical
// index index0; it returns its partial sums (KL in the forward; d kl / d mu and d kl / d sigma,
// unweighted, in the backward).  No PyTorch header here: see storage.h.
#pragma once

#include <cstdint>
#include <type_traits>

#include "infodrop/elementwise.h"
#include "cpu/storage.h"

namespace infodrop {
namespace cpu {

template <class T, class S>
using ForwardSegment = void (*)(const T* x, const T* logit, T* z, int64_t n, uint64_t index0,
                                const StreamKey& key, const Params<S>& p, S* kl_sum);

template <class T, class S>
using BackwardSegment = void (*)(const T* grad_z, S grad_kl, const T* x, const T* logit,
                                 T* grad_x, T* grad_logit, int64_t n, uint64_t index0,
                                 const StreamKey& key, const Params<S>& p, S* dmu_sum,
                                 S* dsigma_sum);

using NoiseSegment = void (*)(float* out, int64_t n, uint64_t index0, const StreamKey& key);

template <class T, class S>
struct SegmentPair {
  ForwardSegment<T, S> forward;
  BackwardSegment<T, S> backward;
};

// The kernels of one instruction set.  Float, half and bfloat16 storage all compute in float
// lanes; double (gradcheck) computes in exact scalar double math.
struct Segments {
  const char* isa;
  SegmentPair<float, float> f32;
  SegmentPair<Half16, float> f16;
  SegmentPair<BFloat16, float> bf16;
  SegmentPair<double, double> f64;
  NoiseSegment noise;

  template <class T>
  auto of() const {
    if constexpr (std::is_same_v<T, float>) return f32;
    else if constexpr (std::is_same_v<T, Half16>) return f16;
    else if constexpr (std::is_same_v<T, BFloat16>) return bf16;
    else return f64;
  }
};

Segments avx512_segments();
Segments avx2_segments();
Segments baseline_segments();

}  // namespace cpu
}  // namespace infodrop
