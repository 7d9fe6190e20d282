// The CUDA kernels' launchers, callable from plain C++ (ops_cuda.cpp): raw pointers, sizes and
// the shared Params, so that only kernels.cu goes through nvcc and it needs no ATen headers
// (this keeps the nvcc part of every CI build short).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/walker.h"
#include "infodrop/elementwise.h"

namespace infodrop {
namespace cuda {

// The 64-bit seed: read in the kernel through `device` when it lives in GPU memory (drawn from
// the CUDA generator: reading it on the host would synchronise), else `host`.
struct SeedRef {
  const int64_t* device;
  uint64_t host;
};

// Blocks per sample of the forward and backward kernels for elements of `element_bytes` bytes
// on the current GPU (walker.h's blocks_per_sample_of): the caller allocates samples x blocks
// partial sums.  Launch grids are (blocks, grid_rows(samples)); more samples than grid rows
// are walked by a loop over the rows.
int blocks_per_sample(const Shape& shape, int element_bytes);

// z and, per sample b and block k, kl_partials[b * blocks + k] (the caller sums over k: a
// deterministic reduction, unlike atomics).  mu and sigma are one-element device tensors.
template <class T, class S>
void launch_forward(const T* x, const T* logit, T* z, S* kl_partials, Shape shape, int blocks,
                    bool aligned, SeedRef seed, uint64_t offset, const Params<S>& params,
                    const S* mu, const S* sigma, cudaStream_t stream);

// grad_x, grad_logit and, where prior_partials is not null (log-normal prior), per sample and
// block: grad_kl[b] * sum of d kl / d mu in prior_partials[2 * (b * blocks + k)] and of
// d kl / d sigma in the next entry.
template <class T, class S>
void launch_backward(const T* grad_z, const S* grad_kl, const T* x, const T* logit, T* grad_x,
                     T* grad_logit, S* prior_partials, Shape shape, int blocks, bool aligned,
                     SeedRef seed, uint64_t offset, const Params<S>& params, const S* mu,
                     const S* sigma, cudaStream_t stream);

// out[j] = eps at stream index start + j, j < n.
void launch_noise(float* out, int64_t n, uint64_t start, bool aligned, SeedRef seed,
                  uint64_t offset, cudaStream_t stream);

// The same ops on channels-last samples (walker.h's LastShape: `shape.width` channels per tile;
// pairs need pointers aligned to two elements), walked in place; partial sums as above, with
// blocks_per_sample(shape) blocks per sample.  logit_bias: null, or (where
// last_kernels_add_bias) one value per channel that the kernels add to the logits they read.
int blocks_per_sample(const LastShape& shape);

// Whether the channels-last kernels of elements of `element_bytes` bytes add a logit_bias:
// not those of double, whose forward then needed an 8-byte stack frame on sm_80 (ops_cuda.cpp
// adds it to the logits before them, as for every other layout).
constexpr bool last_kernels_add_bias(int element_bytes) { return element_bytes <= 4; }

template <class T, class S>
void launch_forward_last(const T* x, const T* logit, T* z, S* kl_partials, LastShape shape,
                         int blocks, SeedRef seed, uint64_t offset, const Params<S>& params,
                         const S* mu, const S* sigma, const S* logit_bias, cudaStream_t stream);

template <class T, class S>
void launch_backward_last(const T* grad_z, const S* grad_kl, const T* x, const T* logit,
                          T* grad_x, T* grad_logit, S* prior_partials, LastShape shape,
                          int blocks, SeedRef seed, uint64_t offset, const Params<S>& params,
                          const S* mu, const S* sigma, const S* logit_bias, cudaStream_t stream);

}  // namespace cuda
}  // namespace infodrop
