// SIMD lane types for the CPU kernels: GCC vector extensions of INFODROP_SIMD_BYTES bytes.
//
// Each ISA translation unit (kernel_avx512.cpp, kernel_avx2.cpp, kernel_baseline.cpp) sets the
// width and the target before including this file, so one source yields 16-, 8- and 4-lane
// code.  VFloat / VUint supply the operations that csrc/infodrop/lanes.h supplies for scalars,
// which is all the shared math templates need.  Everything lives in a namespace named after the
// ISA, so the three copies never meet at link time.  Every function is forced inline
// (INFODROP_HD, as in the shared headers): in a large kernel GCC's inliner otherwise runs out of
// budget and calls even a one-line constructor out of line, through the PLT (seen: the AVX2
// noise loop, 10x slower).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "infodrop/elementwise.h"

#ifndef INFODROP_SIMD_BYTES
#error "define INFODROP_SIMD_BYTES (and the ISA namespace) before including simd.h"
#endif
// INFODROP_TARGET_AVX512 / _AVX2 / _SSE2 name the instruction set of the including file: GCC's
// `#pragma GCC target` enables the instructions but does not define __AVX512F__ and friends.

namespace infodrop {
namespace INFODROP_ISA {

constexpr int kLanes = INFODROP_SIMD_BYTES / 4;

// The scalar versions stay visible beside the vector overloads below (scalar head elements).
using ::infodrop::any_;
using ::infodrop::as_float;
using ::infodrop::as_uint;
using ::infodrop::either;
using ::infodrop::max_;
using ::infodrop::min_;
using ::infodrop::low_words;
using ::infodrop::mulhilo;
using ::infodrop::reciprocal;
using ::infodrop::round_to_int;
using ::infodrop::scale_pow2;
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
  INFODROP_HD VFloat(float s) : v(s - vf_t{}) {}  // s - 0 == s exactly, so it folds to a broadcast
  INFODROP_HD explicit VFloat(vf_t x) : v(x) {}
  friend INFODROP_HD VFloat operator+(VFloat a, VFloat b) { return VFloat(a.v + b.v); }
  friend INFODROP_HD VFloat operator-(VFloat a, VFloat b) { return VFloat(a.v - b.v); }
  friend INFODROP_HD VFloat operator*(VFloat a, VFloat b) { return VFloat(a.v * b.v); }
  friend INFODROP_HD VFloat operator/(VFloat a, VFloat b) { return VFloat(a.v / b.v); }
  friend INFODROP_HD VFloat operator-(VFloat a) { return VFloat(-a.v); }
  friend INFODROP_HD Mask operator<(VFloat a, VFloat b) { return {a.v < b.v}; }
  friend INFODROP_HD Mask operator>(VFloat a, VFloat b) { return {a.v > b.v}; }
  friend INFODROP_HD Mask operator==(VFloat a, VFloat b) { return {a.v == b.v}; }
};

struct VUint {
  vu_t v;
  VUint() = default;
  INFODROP_HD VUint(uint32_t s) : v(s + vu_t{}) {}
  INFODROP_HD explicit VUint(vu_t x) : v(x) {}
  friend INFODROP_HD VUint operator+(VUint a, VUint b) { return VUint(a.v + b.v); }
  friend INFODROP_HD VUint operator-(VUint a, VUint b) { return VUint(a.v - b.v); }
  friend INFODROP_HD VUint operator^(VUint a, VUint b) { return VUint(a.v ^ b.v); }
  friend INFODROP_HD VUint operator&(VUint a, VUint b) { return VUint(a.v & b.v); }
  friend INFODROP_HD VUint operator|(VUint a, VUint b) { return VUint(a.v | b.v); }
  friend INFODROP_HD VUint operator>>(VUint a, int s) { return VUint(a.v >> s); }
  friend INFODROP_HD VUint operator<<(VUint a, int s) { return VUint(a.v << s); }
  friend INFODROP_HD Mask operator<(VUint a, VUint b) { return {(vi_t)(a.v < b.v)}; }
  friend INFODROP_HD Mask operator!=(VUint a, VUint b) { return {(vi_t)(a.v != b.v)}; }
};

INFODROP_HD VUint as_uint(VFloat a) { return VUint((vu_t)a.v); }
INFODROP_HD VFloat as_float(VUint a) { return VFloat((vf_t)a.v); }
// select by bit operations: GCC 12 scalarises the vector ?: operator when the mask comes
// through a struct (16 vcomiss + setcc per compare, measured), but not these.
INFODROP_HD VFloat select(Mask m, VFloat a, VFloat b) {
  return VFloat((vf_t)(((vi_t)a.v & m.m) | ((vi_t)b.v & ~m.m)));
}
INFODROP_HD VUint select(Mask m, VUint a, VUint b) {
  return VUint((a.v & (vu_t)m.m) | (b.v & ~(vu_t)m.m));
}
INFODROP_HD Mask either(Mask a, Mask b) { return {a.m | b.m}; }
INFODROP_HD bool any_(Mask m) {
#if defined(INFODROP_TARGET_AVX512)
  return _mm512_test_epi32_mask((__m512i)m.m, (__m512i)m.m) != 0;
#elif defined(INFODROP_TARGET_AVX2)
  return _mm256_movemask_ps((__m256)m.m) != 0;
#elif defined(INFODROP_TARGET_SSE2)
  return _mm_movemask_ps((__m128)m.m) != 0;
#else
  int any = 0;
  for (int j = 0; j < kLanes; ++j) any |= m.m[j];
  return any != 0;
#endif
}
INFODROP_HD VFloat signed_to_float(VUint a) { return VFloat(__builtin_convertvector((vi_t)a.v, vf_t)); }
// NaN in a propagates, as in lanes.h
INFODROP_HD VFloat min_(VFloat a, VFloat b) { return select(b < a, b, a); }
INFODROP_HD VFloat max_(VFloat a, VFloat b) { return select(b > a, b, a); }

INFODROP_HD VUint round_to_int(VFloat a) {
  return as_uint(a + VFloat(kRoundMagic)) - as_uint(VFloat(kRoundMagic));
}

// y * 2^n, rounded once as IEEE does (see lanes.h): vscalefps does exactly that in one
// instruction; other ISAs multiply by two normal powers of 2.
INFODROP_HD VFloat scale_pow2(VFloat y, VUint n, VFloat nf) {
#if defined(INFODROP_TARGET_AVX512)
  (void)n;
  return VFloat((vf_t)_mm512_scalef_ps((__m512)y.v, (__m512)nf.v));
#else
  (void)nf;
  return scale_pow2_by_halves(y, n);
#endif
}

// sqrt of a positive normal a (all that Box-Muller takes, see lanes.h): the hardware reciprocal
// square root estimate, one Newton step (about 2^-22 relative) and a multiply, which costs
// less than a vector square root.
INFODROP_HD VFloat sqrt_(VFloat a) {
#if defined(INFODROP_TARGET_AVX512)
  const VFloat r((vf_t)_mm512_rsqrt14_ps((__m512)a.v));
#elif defined(INFODROP_TARGET_AVX2)
  const VFloat r((vf_t)_mm256_rsqrt_ps((__m256)a.v));
#elif defined(INFODROP_TARGET_SSE2)
  const VFloat r((vf_t)_mm_rsqrt_ps((__m128)a.v));
#else
  VFloat r;
  for (int j = 0; j < kLanes; ++j) r.v[j] = 1.0f / __builtin_sqrtf(a.v[j]);
#endif
  const VFloat ar = a * r;
  return ar * (VFloat(1.5f) - VFloat(0.5f) * ar * r);
}

// 1 / a for normal a: the hardware estimate refined by one Newton step (about 2^-23 relative),
// which costs less than a vector division.
INFODROP_HD VFloat reciprocal(VFloat a) {
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

// ---- Philox on 64-bit lanes ---------------------------------------------------------------
// x86's widening multiply (pmuludq) multiplies the low 32-bit halves of 64-bit lanes into the
// full 64-bit product, so with each 32-bit Philox word in the low half of a 64-bit lane a
// round's product costs one multiply (lo = the product itself, hi = its high half moved down,
// see swap_words).  On 32-bit lanes the same product needs the even and odd lanes split,
// multiplied as 64-bit lanes (GCC emits vpmullq: 3 uops on Intel) and reassembled.  The high
// halves of the lanes carry garbage that nothing reads: the multiply ignores them and
// low_words() keeps only the low halves.
constexpr int kWideLanes = kLanes / 2;

struct VWide {  // kLanes 32-bit words, one per 64-bit lane of two vectors
  vu64_t half[2];
  VWide() = default;
  INFODROP_HD VWide(uint32_t s) : half{vu64_t{} + s, vu64_t{} + s} {}
  INFODROP_HD VWide(vu64_t a, vu64_t b) : half{a, b} {}
  friend INFODROP_HD VWide operator^(VWide a, VWide b) {
    return {a.half[0] ^ b.half[0], a.half[1] ^ b.half[1]};
  }
  friend INFODROP_HD VWide operator>>(VWide a, int s) { return {a.half[0] >> s, a.half[1] >> s}; }
};

// The 64-bit counters first, first + 1, ..., first + kLanes - 1.
INFODROP_HD VWide wide_iota(uint64_t first) {
  vu64_t step;
  for (int j = 0; j < kWideLanes; ++j) step[j] = static_cast<uint64_t>(j);
  const vu64_t base = vu64_t{} + first + step;
  return {base, base + static_cast<uint64_t>(kWideLanes)};
}

INFODROP_HD vu64_t mul_low_halves(vu64_t a, uint32_t m) {
  const vu64_t mv = vu64_t{} + static_cast<uint64_t>(m);
#if defined(INFODROP_TARGET_AVX512)
  return (vu64_t)_mm512_mul_epu32((__m512i)a, (__m512i)mv);
#elif defined(INFODROP_TARGET_AVX2)
  return (vu64_t)_mm256_mul_epu32((__m256i)a, (__m256i)mv);
#elif defined(INFODROP_TARGET_SSE2)
  return (vu64_t)_mm_mul_epu32((__m128i)a, (__m128i)mv);
#else
  return (a & 0xFFFFFFFFull) * mv;
#endif
}

// The two 32-bit words of each 64-bit lane swapped: moves hi into the low half.  A shuffle
// rather than a 64-bit shift because on Intel both the shift and the multiply issue on port 0
// only, the shuffle on port 5.
INFODROP_HD vu64_t swap_words(vu64_t a) {
  vi_t swap;
  for (int j = 0; j < kLanes; ++j) swap[j] = j ^ 1;
  return (vu64_t)__builtin_shuffle((vu_t)a, swap);
}

INFODROP_HD void mulhilo(VWide a, uint32_t m, VWide& hi, VWide& lo) {
  lo = {mul_low_halves(a.half[0], m), mul_low_halves(a.half[1], m)};
  hi = {swap_words(lo.half[0]), swap_words(lo.half[1])};
}

// The low 32-bit halves of the kLanes 64-bit lanes, in order, as one vector of 32-bit lanes.
INFODROP_HD VUint low_words(VWide a) {
  vi_t even;
  for (int j = 0; j < kLanes; ++j) even[j] = 2 * j;
  return VUint(__builtin_shuffle((vu_t)a.half[0], (vu_t)a.half[1], even));
}

INFODROP_HD float horizontal_sum(VFloat a) {
  float s = 0.0f;
  for (int j = 0; j < kLanes; ++j) s += a.v[j];
  return s;
}

// Lanes 0, 1, ..., W - 1.
INFODROP_HD VUint lane_index() {
  VUint r;
  for (int j = 0; j < kLanes; ++j) r.v[j] = static_cast<uint32_t>(j);
  return r;
}

// Interleave the four Box-Muller outputs of W consecutive Philox groups (e[k] lane j = element
// 4j + k) into memory order (out[k] lane j = element k W + j).
template <int Offset>
INFODROP_HD vi_t zip_mask() {
  vi_t m;
  for (int j = 0; j < kLanes; ++j) m[j] = (j % 2 ? kLanes : 0) + Offset + j / 2;
  return m;
}
INFODROP_HD void interleave4(const VFloat e[4], VFloat out[4]) {
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
