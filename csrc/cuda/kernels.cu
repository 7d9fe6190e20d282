// CUDA kernels of the infodrop ops.  The math is the shared code of csrc/infodrop/elementwise.h
// (noise_group, and forward_step / backward_step on a step's elements); what is CUDA's
// own here is the walk over memory (16-byte loads and stores, 64-bit grid-stride loops) and the
// per-sample reductions (CUB block sums, one partial per block and sample, summed by the caller
// in a fixed order so that results are deterministic).
//
// One thread step covers whole Philox groups (4 consecutive logical elements): 8 floats or
// halves (two groups), 4 doubles, so that each step's loads are whole 16-byte accesses.
// Which thread takes which step of which sample, and which partial sum a block writes, is
// walker.h's (tested on the CPU); this file does the memory accesses and the math.
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cub/block/block_reduce.cuh>

#include "cuda/kernels.h"
#include "cuda/walker.h"

namespace infodrop {
namespace cuda {
namespace {

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

__device__ __forceinline__ uint64_t read_seed(const SeedRef& seed) {
  return seed.device != nullptr ? static_cast<uint64_t>(*seed.device) : seed.host;
}

// eps of the V elements of step `step` (V / 4 Philox groups), in the unit the element functions
// of compute type S take (kNoiseInLog2); zeros when no noise is applied.
template <class S, int V>
__device__ __forceinline__ void step_noise(int64_t step, const StreamKey& key, bool apply,
                                           float (&eps)[V]) {
#pragma unroll
  for (int j = 0; j < V / 4; ++j) {
    if (apply) {
      const uint64_t group = static_cast<uint64_t>(step) * (V / 4) + j;
      noise_group<kNoiseInLog2<S>>(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                                   key, &eps[4 * j]);
    } else {
      eps[4 * j] = eps[4 * j + 1] = eps[4 * j + 2] = eps[4 * j + 3] = 0.0f;
    }
  }
}

// f(q) with q = p and q.apply_noise a constant the compiler sees: the step is compiled once with
// noise and once without, each free of the per-element tests of the flag (and the one with
// noise is the path docs/performance.md counts).
template <class S, class F>
__device__ __forceinline__ void with_noise_flag_known(const Params<S>& p, F&& f) {
  Params<S> q = p;
  if (p.apply_noise) {
    q.apply_noise = true;
    f(q);
  } else {
    q.apply_noise = false;
    f(q);
  }
}

// f(whole) with whole a constant the compiler sees: the step is compiled once as one vector
// access per tensor and once element by element, so that the whole steps (nearly all) take no
// branch per load and store (their reconvergence cost 3-4 instructions per tensor and step).
// (Not for double: its forward then spilled 8 bytes.)
template <class T, class F>
__device__ __forceinline__ void with_whole_known(bool whole, F&& f) {
  if (sizeof(T) == 8) {
    f(whole);
  } else if (whole) {
    f(true);
  } else {
    f(false);
  }
}

// Elements i0 .. i0 + V - 1 of p, converted to S: one vector load (16 bytes for 16-bit types; 32 for float and double)
// for a whole step, else element by element within the sample.
template <int V, class T, class S>
__device__ __forceinline__ void load_step(const T* __restrict__ p, int64_t i0, bool whole,
                                          const SampleSteps<V>& sample, S (&v)[V]) {
  if (whole) {
    if constexpr (std::is_same<T, c10::BFloat16>::value) {
      // bfloat16 is float's high half: one byte permute (PRMT) per element puts its two bytes
      // on top of zeros, where c10's conversion takes 3 per pair (the high element moved down
      // by PRMT, then shifted back up).  (A shift and a mask instead: same count, but the
      // forward's per-element IEEE path then spilled 8 bytes.)
      const Pack<uint32_t, V / 2> words = *reinterpret_cast<const Pack<uint32_t, V / 2>*>(p + i0);
#pragma unroll
      for (int k = 0; k < V / 2; ++k) {
        v[2 * k] = __uint_as_float(__byte_perm(words.v[k], 0u, 0x1044));
        v[2 * k + 1] = __uint_as_float(__byte_perm(words.v[k], 0u, 0x3244));
      }
    } else {
      const Pack<T, V> pack = *reinterpret_cast<const Pack<T, V>*>(p + i0);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = static_cast<S>(pack.v[k]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      v[k] = sample.has(i0 + k) ? static_cast<S>(p[i0 + k]) : S(0);
    }
  }
}

template <int V, class T, class S>
__device__ __forceinline__ void store_step(T* __restrict__ p, int64_t i0, bool whole,
                                           const SampleSteps<V>& sample, const S (&v)[V]) {
  if (whole) {
    Pack<T, V> pack;
#pragma unroll
    for (int k = 0; k < V; ++k) pack.v[k] = static_cast<T>(v[k]);
    *reinterpret_cast<Pack<T, V>*>(p + i0) = pack;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (sample.has(i0 + k)) p[i0 + k] = static_cast<T>(v[k]);
    }
  }
}

// The per-sample partial sums of a block (CUB block sums; the caller sums the blocks' partials
// in a fixed order).  Each returns with the shared storage free for the next sample's sums.
template <class S>
using BlockSum = cub::BlockReduce<S, kThreads>;

// *out = the block's sum of v, written by thread 0
template <class S>
__device__ __forceinline__ void write_block_sum(typename BlockSum<S>::TempStorage& storage, S v,
                                                S* out) {
  const S sum = BlockSum<S>(storage).Sum(v);
  if (threadIdx.x == 0) *out = sum;
  __syncthreads();
}

// out[0], out[1] = weight times the block's sums of dmu and dsigma (the log-normal prior's
// gradients of one sample, weighted by its grad_kl)
template <class S>
__device__ __forceinline__ void write_prior_sums(typename BlockSum<S>::TempStorage& storage,
                                                 S weight, S dmu, S dsigma, S* out) {
  const S dmu_block = BlockSum<S>(storage).Sum(dmu);
  __syncthreads();
  const S dsigma_block = BlockSum<S>(storage).Sum(dsigma);
  if (threadIdx.x == 0) {
    out[0] = weight * dmu_block;
    out[1] = weight * dsigma_block;
  }
  __syncthreads();
}

// 5 resident blocks (62% occupancy) need at most 51 registers, which the float and 16-bit
// forward kernels fit without spilling (ptxas would otherwise take 57); 0 leaves the double
// kernel's registers to ptxas (a bound spilled there).
template <class T>
constexpr int kForwardMinBlocks = sizeof(T) <= 4 ? 5 : 0;

template <class T, class S>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocks<T>)
    forward_kernel(const T* __restrict__ x, const T* __restrict__ logit, T* __restrict__ z,
                   S* __restrict__ kl_partials, Shape shape, bool aligned, SeedRef seed,
                   uint64_t offset, Params<S> p, const S* mu, const S* sigma) {
  constexpr int V = elements_per_step(sizeof(T));
  __shared__ typename BlockSum<S>::TempStorage reduce_storage;
  p.set_prior(*mu, *sigma);
  const StreamKey key(read_seed(seed), offset);
  for_each_sample(shape.samples, blockIdx.y, gridDim.y, [&](int64_t b) INFODROP_INLINE_LAMBDA {
    const SampleSteps<V> sample(shape, b, aligned);
    S kl_sum = 0;
    for_each_step(sample, blockIdx.x, gridDim.x, threadIdx.x,
                  [&](int64_t step) INFODROP_INLINE_LAMBDA {
      with_noise_flag_known(p, [&](const Params<S>& p) INFODROP_INLINE_LAMBDA {
      with_whole_known<T>(sample.whole(step), [&](const bool whole) INFODROP_INLINE_LAMBDA {
      const int64_t i0 = step * V;
      float eps[V];
      step_noise<S>(step, key, p.apply_noise, eps);
      S xv[V], lv[V], zv[V];
      load_step(x, i0, whole, sample, xv);
      load_step(logit, i0, whole, sample, lv);
      kl_sum += forward_step(xv, lv, eps, p, zv, whole, [&](int k) INFODROP_INLINE_LAMBDA {
        return sample.has(i0 + k);
      });
      store_step(z, i0, whole, sample, zv);
      });
      });
    });
    write_block_sum(reduce_storage, kl_sum, &kl_partials[partial_slot(b, gridDim.x, blockIdx.x)]);
  });
}

template <class T, class S>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ grad_z, const S* __restrict__ grad_kl,
                    const T* __restrict__ x, const T* __restrict__ logit, T* __restrict__ grad_x,
                    T* __restrict__ grad_logit, S* __restrict__ prior_partials, Shape shape,
                    bool aligned, SeedRef seed, uint64_t offset, Params<S> p, const S* mu,
                    const S* sigma) {
  constexpr int V = elements_per_step(sizeof(T));
  __shared__ typename BlockSum<S>::TempStorage reduce_storage;
  p.set_prior(*mu, *sigma);
  const StreamKey key(read_seed(seed), offset);
  for_each_sample(shape.samples, blockIdx.y, gridDim.y, [&](int64_t b) INFODROP_INLINE_LAMBDA {
    const SampleSteps<V> sample(shape, b, aligned);
    const S weight = grad_kl[b];
    S dmu_sum = 0, dsigma_sum = 0;
    for_each_step(sample, blockIdx.x, gridDim.x, threadIdx.x,
                  [&](int64_t step) INFODROP_INLINE_LAMBDA {
      with_noise_flag_known(p, [&](const Params<S>& p) INFODROP_INLINE_LAMBDA {
      with_whole_known<T>(sample.whole(step), [&](const bool whole) INFODROP_INLINE_LAMBDA {
      const int64_t i0 = step * V;
      float eps[V];
      step_noise<S>(step, key, p.apply_noise, eps);
      S gzv[V], xv[V], lv[V], gxv[V], glv[V], dmuv[V], dsigmav[V];
      load_step(grad_z, i0, whole, sample, gzv);
      load_step(x, i0, whole, sample, xv);
      load_step(logit, i0, whole, sample, lv);
      backward_step(gzv, weight, xv, lv, eps, p, gxv, glv, dmuv, dsigmav);
      store_step(grad_x, i0, whole, sample, gxv);
      store_step(grad_logit, i0, whole, sample, glv);
      const auto in_sample = [&](int k) INFODROP_INLINE_LAMBDA { return sample.has(i0 + k); };
      dmu_sum += counted_sum(dmuv, whole, in_sample);
      dsigma_sum += counted_sum(dsigmav, whole, in_sample);
      });
      });
    });
    if (prior_partials != nullptr)
      write_prior_sums(reduce_storage, weight, dmu_sum, dsigma_sum,
                       prior_partials + 2 * partial_slot(b, gridDim.x, blockIdx.x));
  });
}

__global__ void __launch_bounds__(kThreads)
    noise_kernel(float* __restrict__ out, int64_t n, uint64_t start, bool aligned, SeedRef seed,
                 uint64_t offset) {
  const StreamKey key(read_seed(seed), offset);
  const NoiseGroups groups(start, n);
  for_each_group(groups, blockIdx.x, gridDim.x, threadIdx.x, [&](uint64_t group) {
    const uint64_t i0 = group << 2;
    float eps[4];
    noise_group(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), key, eps);
    if (groups.whole(group, aligned)) {
      *reinterpret_cast<float4*>(out + (i0 - start)) = make_float4(eps[0], eps[1], eps[2], eps[3]);
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (groups.has(i0 + k)) out[i0 + k - start] = eps[k];
    }
  });
}

int resident_blocks() {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms * kBlocksPerSm;
}

dim3 sample_grid(const Shape& shape, int blocks) {
  return dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(grid_rows(shape.samples)));
}

}  // namespace

int blocks_per_sample(const Shape& shape, int element_bytes) {
  return blocks_per_sample_of(shape, element_bytes, resident_blocks());
}

template <class T, class S>
void launch_forward(const T* x, const T* logit, T* z, S* kl_partials, Shape shape, int blocks,
                    bool aligned, SeedRef seed, uint64_t offset, const Params<S>& params,
                    const S* mu, const S* sigma, cudaStream_t stream) {
  forward_kernel<T, S><<<sample_grid(shape, blocks), kThreads, 0, stream>>>(
      x, logit, z, kl_partials, shape, aligned, seed, offset, params, mu, sigma);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T, class S>
void launch_backward(const T* grad_z, const S* grad_kl, const T* x, const T* logit, T* grad_x,
                     T* grad_logit, S* prior_partials, Shape shape, int blocks, bool aligned,
                     SeedRef seed, uint64_t offset, const Params<S>& params, const S* mu,
                     const S* sigma, cudaStream_t stream) {
  backward_kernel<T, S><<<sample_grid(shape, blocks), kThreads, 0, stream>>>(
      grad_z, grad_kl, x, logit, grad_x, grad_logit, prior_partials, shape, aligned, seed, offset,
      params, mu, sigma);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_noise(float* out, int64_t n, uint64_t start, bool aligned, SeedRef seed,
                  uint64_t offset, cudaStream_t stream) {
  const uint64_t blocks = noise_blocks(NoiseGroups(start, n), resident_blocks());
  noise_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, n, start, aligned, seed,
                                                                       offset);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define INFODROP_INSTANTIATE(T, S)                                                              \
  template void launch_forward<T, S>(const T*, const T*, T*, S*, Shape, int, bool, SeedRef,     \
                                     uint64_t, const Params<S>&, const S*, const S*,            \
                                     cudaStream_t);                                              \
  template void launch_backward<T, S>(const T*, const S*, const T*, const T*, T*, T*, S*, Shape, \
                                      int, bool, SeedRef, uint64_t, const Params<S>&, const S*,  \
                                      const S*, cudaStream_t);
INFODROP_INSTANTIATE(float, float)
INFODROP_INSTANTIATE(double, double)
INFODROP_INSTANTIATE(c10::Half, float)
INFODROP_INSTANTIATE(c10::BFloat16, float)
#undef INFODROP_INSTANTIATE

// ---- Channels-last samples, walked in place (walker.h's tiles) ---------------------------------
//
// The same math as the kernels above (forward_step / backward_step on a tile's 4 W elements,
// which take the same path per element as the contiguous steps: elementwise.h), on tiles of W
// channels x 4 positions: element [w * 4 + k] of a tile's arrays is channel c0 + w, position
// 4 * quad + k.  Each position's W
// channels are one access (Pack<T, W>); neighbouring threads take neighbouring channels, so a
// warp's accesses for one position are adjacent.  The noise is drawn from the logical index,
// so the results are the contiguous kernels' element for element.

namespace {

// How a kernel knows where a channel's 4 elements of a tile lie among Philox groups.
enum class Groups { AtRunTime, Aligned, Straddling };

// eps of a tile whose first element (c0, 4 * quad) has the global logical index `first`;
// channel c0 + w starts at first + w * S.  Where the channels start Philox groups (S % 4 == 0:
// `G` Aligned, or `groups_aligned` at run time), one group per channel; else the two groups its
// 4 elements straddle.
template <class S, int W, Groups G>
__device__ __forceinline__ void tile_noise(uint64_t first, int64_t positions, bool groups_aligned,
                                           const StreamKey& key, bool apply, float (&eps)[4 * W]) {
  const bool aligned = G == Groups::Aligned || (G == Groups::AtRunTime && groups_aligned);
#pragma unroll
  for (int w = 0; w < W; ++w) {
    const uint64_t i0 = first + static_cast<uint64_t>(w * positions);
    const uint64_t group = i0 >> 2;
    if (!apply) {
      eps[4 * w] = eps[4 * w + 1] = eps[4 * w + 2] = eps[4 * w + 3] = 0.0f;
    } else if (aligned) {
      noise_group<kNoiseInLog2<S>>(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), key,
                  &eps[4 * w]);
    } else {
      float e[4];
      noise_of_four<kNoiseInLog2<S>>(i0, key, e);
#pragma unroll
      for (int k = 0; k < 4; ++k) eps[4 * w + k] = e[k];
    }
  }
}

// The tile's elements of p (p points at its (c0, 4 * quad)), converted to S; zeros past the
// sample's last position.  `whole`: all 4 positions are in the sample (always where S % 4 == 0:
// with Groups::Aligned the compiler drops the checks).
template <int W, class T, class S>
__device__ __forceinline__ void load_tile(const T* __restrict__ p, int64_t channels, bool whole,
                                          int valid, S (&v)[4 * W]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (whole || k < valid) {
      const Pack<T, W> pack = *reinterpret_cast<const Pack<T, W>*>(p + k * channels);
#pragma unroll
      for (int w = 0; w < W; ++w) v[4 * w + k] = static_cast<S>(pack.v[w]);
    } else {
#pragma unroll
      for (int w = 0; w < W; ++w) v[4 * w + k] = S(0);
    }
  }
}

// An unsigned word of N bytes, for storing a Pack in one access.
template <int N>
struct WordOf;
template <>
struct WordOf<2> { using type = unsigned short; };
template <>
struct WordOf<4> { using type = unsigned int; };
template <>
struct WordOf<8> { using type = unsigned long long; };

// *p = pack in one store: nvcc split the plain assignment of a Pack<T, 2> into one store per
// element.  (This gives 16-bit pairs one 32-bit store; float pairs still get two 32-bit stores,
// as the noise kernel's float4 gets four.)
template <class T, int W>
__device__ __forceinline__ void store_pack(T* __restrict__ p, const Pack<T, W>& pack) {
  using Word = typename WordOf<sizeof(Pack<T, W>)>::type;
  Word word;
  memcpy(&word, &pack, sizeof word);
  *reinterpret_cast<Word*>(p) = word;
}

// A whole tile stores (and sums) behind one branch, not one test per position: as with
// elementwise.h's counted_sum, the compiler kept the per-position tests on whole tiles otherwise.
template <int W, class T, class S>
__device__ __forceinline__ void store_tile(T* __restrict__ p, int64_t channels, bool whole,
                                           int valid, const S (&v)[4 * W]) {
  Pack<T, W> pack[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
#pragma unroll
    for (int w = 0; w < W; ++w) pack[k].v[w] = static_cast<T>(v[4 * w + k]);
  if (whole) {
#pragma unroll
    for (int k = 0; k < 4; ++k) store_pack(p + k * channels, pack[k]);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (k < valid) store_pack(p + k * channels, pack[k]);
  }
}

// The tile's logits plus their channels' logit_bias (where the call has one), in S: the
// per-channel bias of an alpha head, added here rather than by a pass of its own over the
// logits (docs/performance.md: 0.11 ms of a ResNet-50 step).  Behind a test of the pointer, the
// same for every tile: +1.9 instructions per element where taken.
template <class T, int W, class S>
__device__ __forceinline__ void add_logit_bias(const S* __restrict__ logit_bias, uint32_t c0,
                                               S (&lv)[4 * W]) {
  if constexpr (last_kernels_add_bias(sizeof(T))) {
    if (logit_bias == nullptr) return;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const S b = logit_bias[c0 + w];
#pragma unroll
      for (int k = 0; k < 4; ++k) lv[4 * w + k] += b;
    }
  }
}

// Resident blocks the float and 16-bit forward kernels are held to, as above: 5 (62%
// occupancy, 51 registers) for one channel per tile; 4 (50%, 64 registers) for pairs, which
// spilled 24 bytes at 5 (8 elements and four addresses per tensor).
template <class T, int W>
constexpr int kLastForwardMinBlocks = sizeof(T) > 4 ? 0 : W == 2 ? 4 : 5;

template <class T, class S, int W, Groups G>
__global__ void __launch_bounds__(kThreads, kLastForwardMinBlocks<T, W>)
    forward_last_kernel(const T* __restrict__ x, const T* __restrict__ logit, T* __restrict__ z,
                        S* __restrict__ kl_partials, LastShape shape, SeedRef seed,
                        uint64_t offset, Params<S> p, const S* mu, const S* sigma,
                        const S* __restrict__ logit_bias) {
  constexpr int N = 4 * W;
  __shared__ typename BlockSum<S>::TempStorage reduce_storage;
  p.set_prior(*mu, *sigma);
  const StreamKey key(read_seed(seed), offset);
  const bool groups_aligned = shape.groups_aligned();
  for_each_sample(shape.samples, blockIdx.y, gridDim.y, [&](int64_t b) INFODROP_INLINE_LAMBDA {
    const int64_t base = b * shape.per_sample();
    S kl_sum = 0;
    for_each_tile(shape, blockIdx.x, gridDim.x, threadIdx.x,
                  [&](const Tile& tile) INFODROP_INLINE_LAMBDA {
      with_noise_flag_known(p, [&](const Params<S>& p) INFODROP_INLINE_LAMBDA {
        const int64_t at = base + tile.row;
        const bool whole = G == Groups::Aligned || tile.whole();
        float eps[N];
        tile_noise<S, W, G>(static_cast<uint64_t>(base + tile.logical), shape.positions,
                         groups_aligned, key, p.apply_noise, eps);
        S xv[N], lv[N], zv[N];
        load_tile<W>(x + at, shape.channels, whole, tile.valid, xv);
        load_tile<W>(logit + at, shape.channels, whole, tile.valid, lv);
        add_logit_bias<T, W>(logit_bias, tile.channel, lv);
        kl_sum += forward_step(xv, lv, eps, p, zv, whole, [&](int j) INFODROP_INLINE_LAMBDA {
          return j % 4 < tile.valid;
        });
        store_tile<W>(z + at, shape.channels, whole, tile.valid, zv);
      });
    });
    write_block_sum(reduce_storage, kl_sum, &kl_partials[partial_slot(b, gridDim.x, blockIdx.x)]);
  });
}

template <class T, class S, int W, Groups G>
__global__ void __launch_bounds__(kThreads)
    backward_last_kernel(const T* __restrict__ grad_z, const S* __restrict__ grad_kl,
                         const T* __restrict__ x, const T* __restrict__ logit,
                         T* __restrict__ grad_x, T* __restrict__ grad_logit,
                         S* __restrict__ prior_partials, LastShape shape, SeedRef seed,
                         uint64_t offset, Params<S> p, const S* mu, const S* sigma,
                         const S* __restrict__ logit_bias) {
  constexpr int N = 4 * W;
  __shared__ typename BlockSum<S>::TempStorage reduce_storage;
  p.set_prior(*mu, *sigma);
  const StreamKey key(read_seed(seed), offset);
  const bool groups_aligned = shape.groups_aligned();
  for_each_sample(shape.samples, blockIdx.y, gridDim.y, [&](int64_t b) INFODROP_INLINE_LAMBDA {
    const int64_t base = b * shape.per_sample();
    const S weight = grad_kl[b];
    S dmu_sum = 0, dsigma_sum = 0;
    for_each_tile(shape, blockIdx.x, gridDim.x, threadIdx.x,
                  [&](const Tile& tile) INFODROP_INLINE_LAMBDA {
      with_noise_flag_known(p, [&](const Params<S>& p) INFODROP_INLINE_LAMBDA {
        const int64_t at = base + tile.row;
        const bool whole = G == Groups::Aligned || tile.whole();
        float eps[N];
        tile_noise<S, W, G>(static_cast<uint64_t>(base + tile.logical), shape.positions,
                         groups_aligned, key, p.apply_noise, eps);
        S gzv[N], xv[N], lv[N], gxv[N], glv[N], dmuv[N], dsigmav[N];
        load_tile<W>(grad_z + at, shape.channels, whole, tile.valid, gzv);
        load_tile<W>(x + at, shape.channels, whole, tile.valid, xv);
        load_tile<W>(logit + at, shape.channels, whole, tile.valid, lv);
        add_logit_bias<T, W>(logit_bias, tile.channel, lv);
        backward_step(gzv, weight, xv, lv, eps, p, gxv, glv, dmuv, dsigmav);
        store_tile<W>(grad_x + at, shape.channels, whole, tile.valid, gxv);
        store_tile<W>(grad_logit + at, shape.channels, whole, tile.valid, glv);
        const auto in_tile = [&](int j) INFODROP_INLINE_LAMBDA { return j % 4 < tile.valid; };
        dmu_sum += counted_sum(dmuv, whole, in_tile);
        dsigma_sum += counted_sum(dsigmav, whole, in_tile);
      });
    });
    if (prior_partials != nullptr)
      write_prior_sums(reduce_storage, weight, dmu_sum, dsigma_sum,
                       prior_partials + 2 * partial_slot(b, gridDim.x, blockIdx.x));
  });
}

}  // namespace

int blocks_per_sample(const LastShape& shape) {
  return blocks_per_sample_of(shape, resident_blocks());
}

template <class T, class S>
void launch_forward_last(const T* x, const T* logit, T* z, S* kl_partials, LastShape shape,
                         int blocks, SeedRef seed, uint64_t offset, const Params<S>& params,
                         const S* mu, const S* sigma, const S* logit_bias, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(grid_rows(shape.samples)));
  TORCH_CHECK(logit_bias == nullptr || last_kernels_add_bias(sizeof(T)),
              "infodrop (cuda): these kernels add no logit_bias");
  // pairs with their Philox groups known at compile time; one channel per tile decides at run time
  const auto launch = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, stream>>>(x, logit, z, kl_partials, shape, seed, offset, params,
                                          mu, sigma, logit_bias);
  };
  if constexpr (sizeof(T) <= 4) {
    if (shape.width == 2 && shape.groups_aligned())
      launch(forward_last_kernel<T, S, 2, Groups::Aligned>);
    else if (shape.width == 2)
      launch(forward_last_kernel<T, S, 2, Groups::Straddling>);
  }
  if (shape.width == 1) launch(forward_last_kernel<T, S, 1, Groups::AtRunTime>);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T, class S>
void launch_backward_last(const T* grad_z, const S* grad_kl, const T* x, const T* logit,
                          T* grad_x, T* grad_logit, S* prior_partials, LastShape shape,
                          int blocks, SeedRef seed, uint64_t offset, const Params<S>& params,
                          const S* mu, const S* sigma, const S* logit_bias, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(grid_rows(shape.samples)));
  TORCH_CHECK(logit_bias == nullptr || last_kernels_add_bias(sizeof(T)),
              "infodrop (cuda): these kernels add no logit_bias");
  const auto launch = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, stream>>>(grad_z, grad_kl, x, logit, grad_x, grad_logit,
                                          prior_partials, shape, seed, offset, params, mu, sigma,
                                          logit_bias);
  };
  if constexpr (sizeof(T) <= 4) {
    if (shape.width == 2 && shape.groups_aligned())
      launch(backward_last_kernel<T, S, 2, Groups::Aligned>);
    else if (shape.width == 2)
      launch(backward_last_kernel<T, S, 2, Groups::Straddling>);
  }
  if (shape.width == 1) launch(backward_last_kernel<T, S, 1, Groups::AtRunTime>);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define INFODROP_INSTANTIATE_LAST(T, S)                                                        \
  template void launch_forward_last<T, S>(const T*, const T*, T*, S*, LastShape, int, SeedRef, \
                                          uint64_t, const Params<S>&, const S*, const S*,      \
                                          const S*, cudaStream_t);                              \
  template void launch_backward_last<T, S>(const T*, const S*, const T*, const T*, T*, T*, S*, \
                                           LastShape, int, SeedRef, uint64_t,                  \
                                           const Params<S>&, const S*, const S*, const S*,     \
                                           cudaStream_t);
INFODROP_INSTANTIATE_LAST(float, float)
INFODROP_INSTANTIATE_LAST(double, double)
INFODROP_INSTANTIATE_LAST(c10::Half, float)
INFODROP_INSTANTIATE_LAST(c10::BFloat16, float)
#undef INFODROP_INSTANTIATE_LAST

}  // namespace cuda
}  // namespace infodrop
