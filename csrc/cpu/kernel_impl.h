// The CPU kernels, written once over a lane policy and compiled once per instruction set by
// kernel_<isa>.cpp.  Memory order equals logical order here (the glue passes contiguous
// tensors or, for channels-last ones, buffers gathered in logical order by chunk_arrays.h), so
// element i of a segment has index index0 + i in the noise stream.
//
// A segment is walked as: up to 3 scalar elements until the index is a multiple of 4, then
// blocks of 4 W elements (W Philox groups in the W lanes, one call for 4 W elements), then one
// zero-padded block for the rest, whose extra lanes are masked out of the sums.
#pragma once

#include <type_traits>

#include "cpu/segments.h"
#include "cpu/simd.h"

namespace infodrop {
namespace INFODROP_ISA {

// W float lanes; storage float, half or bfloat16.
struct FloatLanes {
  using E = VFloat;
  using S = float;
  static constexpr int W = kLanes;

  // Always inlined: as an out-of-line call (through the PLT) it re-broadcast its round keys and
  // constants on every call and handed eps back through memory.
  INFODROP_HD static void noise_block(uint64_t index, const StreamKey& key, VFloat eps[4]) {
    const VWide group = wide_iota(index >> 2);
    VFloat by_lane[4];
    noise_group(group, group >> 32, key, by_lane);
    interleave4(by_lane, eps);
  }

  INFODROP_HD static Mask lanes_below(int k, int64_t valid) {
    return VUint(static_cast<uint32_t>(k * W)) + lane_index() < VUint(static_cast<uint32_t>(valid));
  }
  INFODROP_HD static float sum(VFloat v) { return horizontal_sum(v); }

  INFODROP_HD static VFloat load(const float* p) {
    VFloat r;
    std::memcpy(&r.v, p, sizeof r.v);
    return r;
  }
  INFODROP_HD static void store(float* p, VFloat v) { std::memcpy(p, &v.v, sizeof v.v); }

  INFODROP_HD static VFloat load(const BFloat16* p) {
    vu16_t h;
    std::memcpy(&h, p, sizeof h);
    return as_float(VUint(__builtin_convertvector(h, vu_t) << 16));
  }
  INFODROP_HD static void store(BFloat16* p, VFloat v) {
    const VUint u = as_uint(v);
    const VUint rounded = (u + VUint(0x7fffu) + ((u >> 16) & VUint(1u))) >> 16;  // to even
    const Mask nan = VUint(0x7f800000u) < (u & VUint(0x7fffffffu));
    const vu16_t h = __builtin_convertvector(select(nan, VUint(0x7fc0u), rounded).v, vu16_t);
    std::memcpy(p, &h, sizeof h);
  }

  INFODROP_HD static VFloat load(const Half16* p) {
#if defined(INFODROP_TARGET_AVX512)
    return VFloat((vf_t)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif defined(INFODROP_TARGET_AVX2)
    return VFloat((vf_t)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#else
    VFloat r;
    for (int j = 0; j < W; ++j) r.v[j] = to_float(p[j]);
    return r;
#endif
  }
  INFODROP_HD static void store(Half16* p, VFloat v) {
#if defined(INFODROP_TARGET_AVX512)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph((__m512)v.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(INFODROP_TARGET_AVX2)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph((__m256)v.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
    for (int j = 0; j < W; ++j) p[j] = from_float<Half16>(v.v[j]);
#endif
  }
};

// One double lane; the noise is still float32 math (it is the same stream for every dtype).
struct DoubleLanes {
  using E = double;
  using S = double;
  static constexpr int W = 1;

  static void noise_block(uint64_t index, const StreamKey& key, double eps[4]) {
    const uint64_t group = index >> 2;
    float e[4];
    noise_group(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), key, e);
    for (int k = 0; k < 4; ++k) eps[k] = e[k];
  }
  static bool lanes_below(int k, int64_t valid) { return k < valid; }
  static double sum(double v) { return v; }
  static double load(const double* p) { return *p; }
  static void store(double* p, double v) { *p = v; }
};

// Without noise (evaluation) eps is never read: skip the generator, the costliest part.
// Forced inline, as the block lambdas below: each block is called twice (full blocks and the
// padded tail), and GCC made these out-of-line calls, eps handed back through memory.
template <class L>
INFODROP_HD void noise_or_zero(bool apply_noise, uint64_t index, const StreamKey& key,
                               typename L::E eps[4]) {
  if (apply_noise) {
    L::noise_block(index, key, eps);
  } else {
    for (int k = 0; k < 4; ++k) eps[k] = typename L::E(typename L::S(0));
  }
}

template <class T>
T from_compute(float v) { return from_float<T>(v); }
template <class T>
T from_compute(double v) { return v; }

template <class L, class T>
void forward_segment(const T* x, const T* logit, T* z, int64_t n, uint64_t index0,
                     const StreamKey& key_in, const Params<typename L::S>& p_in,
                     typename L::S* kl_sum) {
  using E = typename L::E;
  using S = typename L::S;
  constexpr int64_t kBlock = 4 * L::W;
  // Local copies: stores through z could alias the caller's structs, which made GCC reload
  // and re-broadcast every constant in every block.
  const Params<S> p = p_in;
  const StreamKey key = key_in;
  const auto block = [&](const T* xb, const T* lb, T* zb, uint64_t index, int64_t valid)
      __attribute__((always_inline)) {
    E eps[4], acc(S(0));
    noise_or_zero<L>(p.apply_noise, index, key, eps);
    for (int k = 0; k < 4; ++k) {
      const ForwardOut<E> out = forward_element(L::load(xb + k * L::W), L::load(lb + k * L::W), eps[k], p);
      L::store(zb + k * L::W, out.z);
      acc = acc + select(L::lanes_below(k, valid), out.kl, E(S(0)));
    }
    return acc;
  };

  S head = 0;
  int64_t i = 0;
  for (; i < n && ((index0 + i) & 3) != 0; ++i) {
    const ForwardOut<S> out = forward_element(S(to_float(x[i])), S(to_float(logit[i])),
                                              S(noise_at(index0 + i, key)), p);
    z[i] = from_compute<T>(out.z);
    head += out.kl;
  }
  E acc(S(0));
  for (; i + kBlock <= n; i += kBlock) acc = acc + block(x + i, logit + i, z + i, index0 + i, kBlock);
  if (i < n) {
    const int64_t rest = n - i;
    T xb[kBlock] = {}, lb[kBlock] = {}, zb[kBlock];
    std::memcpy(xb, x + i, rest * sizeof(T));
    std::memcpy(lb, logit + i, rest * sizeof(T));
    acc = acc + block(xb, lb, zb, index0 + i, rest);
    std::memcpy(z + i, zb, rest * sizeof(T));
  }
  *kl_sum = head + L::sum(acc);
}

template <class L, class T>
void backward_segment(const T* grad_z, typename L::S grad_kl, const T* x, const T* logit,
                      T* grad_x, T* grad_logit, int64_t n, uint64_t index0,
                      const StreamKey& key_in, const Params<typename L::S>& p_in,
                      typename L::S* dmu_sum, typename L::S* dsigma_sum) {
  using E = typename L::E;
  using S = typename L::S;
  constexpr int64_t kBlock = 4 * L::W;
  const Params<S> p = p_in;  // local copies, as in forward_segment
  const StreamKey key = key_in;
  E dmu(S(0)), dsigma(S(0));
  const auto block = [&](const T* gzb, const T* xb, const T* lb, T* gxb, T* glb, uint64_t index,
                         int64_t valid) __attribute__((always_inline)) {
    E eps[4];
    noise_or_zero<L>(p.apply_noise, index, key, eps);
    for (int k = 0; k < 4; ++k) {
      const int o = k * L::W;
      const BackwardOut<E> out =
          backward_element(L::load(gzb + o), E(grad_kl), L::load(xb + o), L::load(lb + o), eps[k], p);
      L::store(gxb + o, out.grad_x);
      L::store(glb + o, out.grad_logit);
      const auto in_range = L::lanes_below(k, valid);
      dmu = dmu + select(in_range, out.dmu, E(S(0)));
      dsigma = dsigma + select(in_range, out.dsigma, E(S(0)));
    }
  };

  S head_dmu = 0, head_dsigma = 0;
  int64_t i = 0;
  for (; i < n && ((index0 + i) & 3) != 0; ++i) {
    const BackwardOut<S> out =
        backward_element(S(to_float(grad_z[i])), grad_kl, S(to_float(x[i])), S(to_float(logit[i])),
                         S(noise_at(index0 + i, key)), p);
    grad_x[i] = from_compute<T>(out.grad_x);
    grad_logit[i] = from_compute<T>(out.grad_logit);
    head_dmu += out.dmu;
    head_dsigma += out.dsigma;
  }
  for (; i + kBlock <= n; i += kBlock)
    block(grad_z + i, x + i, logit + i, grad_x + i, grad_logit + i, index0 + i, kBlock);
  if (i < n) {
    const int64_t rest = n - i;
    T gzb[kBlock] = {}, xb[kBlock] = {}, lb[kBlock] = {}, gxb[kBlock], glb[kBlock];
    std::memcpy(gzb, grad_z + i, rest * sizeof(T));
    std::memcpy(xb, x + i, rest * sizeof(T));
    std::memcpy(lb, logit + i, rest * sizeof(T));
    block(gzb, xb, lb, gxb, glb, index0 + i, rest);
    std::memcpy(grad_x + i, gxb, rest * sizeof(T));
    std::memcpy(grad_logit + i, glb, rest * sizeof(T));
  }
  *dmu_sum = head_dmu + L::sum(dmu);
  *dsigma_sum = head_dsigma + L::sum(dsigma);
}

inline void noise_segment(float* out, int64_t n, uint64_t index0, const StreamKey& key) {
  constexpr int64_t kBlock = 4 * kLanes;
  int64_t i = 0;
  for (; i < n && ((index0 + i) & 3) != 0; ++i) out[i] = noise_at(index0 + i, key);
  VFloat eps[4];
  for (; i + kBlock <= n; i += kBlock) {
    FloatLanes::noise_block(index0 + i, key, eps);
    for (int k = 0; k < 4; ++k) FloatLanes::store(out + i + k * kLanes, eps[k]);
  }
  if (i < n) {
    float buffer[kBlock];
    FloatLanes::noise_block(index0 + i, key, eps);
    for (int k = 0; k < 4; ++k) FloatLanes::store(buffer + k * kLanes, eps[k]);
    std::memcpy(out + i, buffer, (n - i) * sizeof(float));
  }
}

template <class L, class T>
constexpr cpu::SegmentPair<T, typename L::S> segment_pair() {
  return {&forward_segment<L, T>, &backward_segment<L, T>};
}

inline cpu::Segments segments(const char* isa) {
  return {isa,
          segment_pair<FloatLanes, float>(),
          segment_pair<FloatLanes, Half16>(),
          segment_pair<FloatLanes, BFloat16>(),
          segment_pair<DoubleLanes, double>(),
          &noise_segment};
}

}  // namespace INFODROP_ISA
}  // namespace infodrop
