// SIMD lane types for the CPU kernels: GCC vector extensions of INFODROP_SIMD_BYTES bytes.
//
// Each ISA translation unit (kernel_avx512.cpp, kernel_avx2.cpp, kernel_baseline.cpp) sets the
// width and the target before including this file, so one source yields 16-, 8- and 4-lane
// code.  VFloat / VUint supply the operations that csrc/infodrop/lanes.h supplies for scalars,
// which is all the shared math templates need.  Everything lives in a namespace named after the
// ISA, so the three copies never meet at link time.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../infodrop/elementwise.h"

#ifndef INFODROP_SIMD_BYTES
#error "define INFODROP_SIMD_BYTES (and the ISA namespace) before including simd.h"
#endif
// INFODROP_TARGET_AVX512 / _AVX2 / _SSE2 name the instruction set of the including file: GCC's
// `#pragma GCC target` enables the instructions but does not define __AVX512F__ and friends.

namespace infodrop {
namespace INFODROP_ISA {

constexpr int kLanes = INFODROP_SIMD_BYTES / 4;

// The scalar versions stay visible beside the vector overloads below (scalar head elements).
using ::infodrop::as_float;
using ::infodrop::as_uint;
using ::infodrop::max_;
using ::infodrop::min_;
using ::infodrop::mulhilo;
using ::infodrop::reciprocal;
using ::infodrop::round_to_int;
using ::infodrop::select;
using ::infodrop::signed_to_float;
using ::infodrop::sqrt_;

typedef float vf_t __attribute__((vector_size(INFODROP_SIMD_BYTES)));
typedef uint32_t vu_t __attribute__((vector_size(INFODROP_SIMD_BYTES)));
typedef int32_t vi_t __attribute__((vector_size(INFODROP_SIMD_BYTES)));
typedef uint64_t vu64_t __attribute__((vector_size(INFODROP_SIMD_BYTES)));
typedef uint16_t vu16_t __attribute__((vector_size(INFODROP_SIMD_BYTES / 2)));

struct Mask {
  vi_t m;  // all ones where true
};

struct VFloat {
  vf_t v;
  VFloat() = default;
  VFloat(float s) : v(s - vf_t{}) {}  // s - 0 == s exactly, so it folds to a broadcast
  explicit VFloat(vf_t x) : v(x) {}
  friend VFloat operator+(VFloat a, VFloat b) { return VFloat(a.v + b.v); }
  friend VFloat operator-(VFloat a, VFloat b) { return VFloat(a.v - b.v); }
  friend VFloat operator*(VFloat a, VFloat b) { return VFloat(a.v * b.v); }
  friend VFloat operator/(VFloat a, VFloat b) { return VFloat(a.v / b.v); }
  friend VFloat operator-(VFloat a) { return VFloat(-a.v); }
  friend Mask operator<(VFloat a, VFloat b) { return {a.v < b.v}; }
  friend Mask operator>(VFloat a, VFloat b) { return {a.v > b.v}; }
  friend Mask operator==(VFloat a, VFloat b) { return {a.v == b.v}; }
};

struct VUint {
  vu_t v;
  VUint() = default;
  VUint(uint32_t s) : v(s + vu_t{}) {}
  explicit VUint(vu_t x) : v(x) {}
  friend VUint operator+(VUint a, VUint b) { return VUint(a.v + b.v); }
  friend VUint operator-(VUint a, VUint b) { return VUint(a.v - b.v); }
  friend VUint operator^(VUint a, VUint b) { return VUint(a.v ^ b.v); }
  friend VUint operator&(VUint a, VUint b) { return VUint(a.v & b.v); }
  friend VUint operator|(VUint a, VUint b) { return VUint(a.v | b.v); }
  friend VUint operator>>(VUint a, int s) { return VUint(a.v >> s); }
  friend VUint operator<<(VUint a, int s) { return VUint(a.v << s); }
  friend Mask operator<(VUint a, VUint b) { return {(vi_t)(a.v < b.v)}; }
  friend Mask operator!=(VUint a, VUint b) { return {(vi_t)(a.v != b.v)}; }
};

inline VUint as_uint(VFloat a) { return VUint((vu_t)a.v); }
inline VFloat as_float(VUint a) { return VFloat((vf_t)a.v); }
// select by bit operations: GCC 12 scalarises the vector ?: operator when the mask comes
// through a struct (16 vcomiss + setcc per compare, measured), but not these.
inline VFloat select(Mask m, VFloat a, VFloat b) {
  return VFloat((vf_t)(((vi_t)a.v & m.m) | ((vi_t)b.v & ~m.m)));
}
inline VUint select(Mask m, VUint a, VUint b) {
  return VUint((a.v & (vu_t)m.m) | (b.v & ~(vu_t)m.m));
}
inline VFloat signed_to_float(VUint a) { return VFloat(__builtin_convertvector((vi_t)a.v, vf_t)); }
// NaN in a propagates, as in lanes.h
inline VFloat min_(VFloat a, VFloat b) { return select(b < a, b, a); }
inline VFloat max_(VFloat a, VFloat b) { return select(b > a, b, a); }

inline VUint round_to_int(VFloat a) {
  return as_uint(a + VFloat(kRoundMagic)) - as_uint(VFloat(kRoundMagic));
}

inline VFloat sqrt_(VFloat a) {
#if defined(INFODROP_TARGET_AVX512)
  return VFloat((vf_t)_mm512_sqrt_ps((__m512)a.v));
#elif defined(INFODROP_TARGET_AVX2)
  return VFloat((vf_t)_mm256_sqrt_ps((__m256)a.v));
#elif defined(INFODROP_TARGET_SSE2)
  return VFloat((vf_t)_mm_sqrt_ps((__m128)a.v));
#else
  VFloat r;
  for (int j = 0; j < kLanes; ++j) r.v[j] = __builtin_sqrtf(a.v[j]);
  return r;
#endif
}

// 1 / a for normal a: the hardware estimate refined by one Newton step (about 2^-23 relative),
// which costs less than a vector division.
inline VFloat reciprocal(VFloat a) {
#if defined(INFODROP_TARGET_AVX512)
  const VFloat r((vf_t)_mm512_rcp14_ps((__m512)a.v));
#elif defined(INFODROP_TARGET_AVX2)
  const VFloat r((vf_t)_mm256_rcp_ps((__m256)a.v));
#elif defined(INFODROP_TARGET_SSE2)
  const VFloat r((vf_t)_mm_rcp_ps((__m128)a.v));
#else
  const VFloat r = VFloat(1.0f) / a;
#endif
  return r + r * (VFloat(1.0f) - a * r);
}

// 32 x 32 -> 64-bit products of every lane: even and odd lanes are multiplied as 64-bit lanes
// (one vpmuludq each on x86) and their halves reassembled.
inline void mulhilo(VUint a, uint32_t m, VUint& hi, VUint& lo) {
  const vu64_t low_word = vu64_t{} + 0xFFFFFFFFull;
  const vu64_t a64 = (vu64_t)a.v;
  const vu64_t even = (a64 & low_word) * (uint64_t)m;
  const vu64_t odd = (a64 >> 32) * (uint64_t)m;
  lo = VUint((vu_t)((even & low_word) | (odd << 32)));
  hi = VUint((vu_t)((even >> 32) | (odd & ~low_word)));
}

inline float horizontal_sum(VFloat a) {
  float s = 0.0f;
  for (int j = 0; j < kLanes; ++j) s += a.v[j];
  return s;
}

// Lanes 0, 1, ..., W - 1.
inline VUint lane_index() {
  VUint r;
  for (int j = 0; j < kLanes; ++j) r.v[j] = static_cast<uint32_t>(j);
  return r;
}

// Interleave the four Box-Muller outputs of W consecutive Philox groups (e[k] lane j = element
// 4j + k) into memory order (out[k] lane j = element k W + j).
template <int Offset>
inline vi_t zip_mask() {
  vi_t m;
  for (int j = 0; j < kLanes; ++j) m[j] = (j % 2 ? kLanes : 0) + Offset + j / 2;
  return m;
}
inline void interleave4(const VFloat e[4], VFloat out[4]) {
  const vi_t lo = zip_mask<0>(), hi = zip_mask<kLanes / 2>();
  const vf_t p0 = __builtin_shuffle(e[0].v, e[2].v, lo), p1 = __builtin_shuffle(e[0].v, e[2].v, hi);
  const vf_t q0 = __builtin_shuffle(e[1].v, e[3].v, lo), q1 = __builtin_shuffle(e[1].v, e[3].v, hi);
  out[0] = VFloat(__builtin_shuffle(p0, q0, lo));
  out[1] = VFloat(__builtin_shuffle(p0, q0, hi));
  out[2] = VFloat(__builtin_shuffle(p1, q1, lo));
  out[3] = VFloat(__builtin_shuffle(p1, q1, hi));
}

}  // namespace INFODROP_ISA
}  // namespace infodrop
