// Scalar "lanes": the one-element versions of the few operations the shared math needs beyond
// + - * /.  The CPU SIMD kernels provide the same functions for their vector types (csrc/cpu/
// simd.h), so every template in philox.h, fastmath.h and elementwise.h compiles unchanged for a
// CUDA thread, a scalar CPU loop and a CPU vector register.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// INFODROP_INLINE_LAMBDA after a lambda's parameters: inlined whatever its size.  The CUDA
// kernels' walks hand their step to nested lambdas; NVVM outlines one that grows large (the
// backward's step with three noise states became a call with a 256-byte stack frame).  Host
// compilers (GCC, Clang) take the attribute too: the shared code that uses it builds there.
#define INFODROP_INLINE_LAMBDA __attribute__((always_inline))

#if defined(__CUDACC__) || defined(__HIPCC__)
#define INFODROP_HD __host__ __device__ __forceinline__
#define INFODROP_UNROLL _Pragma("unroll")
#else
#define INFODROP_HD inline __attribute__((always_inline))
#define INFODROP_UNROLL _Pragma("GCC unroll 16")
#endif

namespace infodrop {

INFODROP_HD uint32_t as_uint(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
#endif
}

INFODROP_HD float as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
#endif
}

// 32 x 32 -> 64-bit product split into its high and low words (Philox's one multiply).
INFODROP_HD void mulhilo(uint32_t a, uint32_t m, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, m);
  lo = a * m;
#else
  const uint64_t p = static_cast<uint64_t>(a) * m;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#endif
}

template <class T>
INFODROP_HD T select(bool m, T a, T b) { return m ? a : b; }

// Whether any lane of a mask is set (a branch around work that rare lanes need).
INFODROP_HD bool any_(bool m) { return m; }
// a or b, lane by lane
INFODROP_HD bool either(bool a, bool b) { return a || b; }

// uint32 bit pattern read as a signed int32, converted to float (exponent arithmetic).
INFODROP_HD float signed_to_float(uint32_t u) { return static_cast<float>(static_cast<int32_t>(u)); }
INFODROP_HD float unsigned_to_float(uint32_t u) { return static_cast<float>(u); }
// Round to the nearest integer, ties to even, as int32 bits, for |v| < 2^22: adding 1.5 * 2^23
// leaves the integer in the low mantissa bits.  Every lane type rounds this same way.
constexpr float kRoundMagic = 12582912.0f;
INFODROP_HD uint32_t round_to_int(float v) { return as_uint(v + kRoundMagic) - as_uint(kRoundMagic); }

// y * 2^n for y in [0.5, 2) and n in [-150, 128] (n as int32 bits), rounded once as IEEE does:
// +inf past FLT_MAX, a subnormal or 0 below FLT_MIN.  2^n is taken as the two normal factors
// 2^(n - h) * 2^h, h = floor(n / 2), each in [2^-75, 2^64], since 2^n alone may not be a normal
// float: y times the first is exact, times the second rounds.  Written once for every lane type
// (the AVX-512 lanes have an instruction for it, csrc/cpu/simd.h).
template <class F, class U>
INFODROP_HD F scale_pow2_by_halves(F y, U n) {
  const U biased = n + U(254u);  // 2 * 127 + n, positive
  const U h = biased >> 1;
  return y * as_float(h << 23) * as_float((biased - h) << 23);
}
// y * 2^n as above; nf is n as a float (the AVX-512 lanes take that form).
INFODROP_HD float scale_pow2(float y, uint32_t n, float) { return scale_pow2_by_halves(y, n); }

// Unlike fminf / fmaxf, a NaN in a propagates (a NaN input must not become a clamp bound).
INFODROP_HD float min_(float a, float b) { return b < a ? b : a; }
INFODROP_HD float max_(float a, float b) { return b > a ? b : a; }
// Philox's output words as 32-bit lanes: the identity here (csrc/cpu/simd.h runs Philox on
// 64-bit lanes and packs them).
INFODROP_HD uint32_t low_words(uint32_t w) { return w; }

// sqrt of v in [2^-100, 2^100]: only Box-Muller's radius (-2 log u in [1.19e-7, 33.3]) takes
// it, which lets the SIMD lanes use a reciprocal-square-root estimate (csrc/cpu/simd.h).
INFODROP_HD float sqrt_(float v) {
#if defined(__CUDA_ARCH__)
  // The correctly rounded sqrtf of such v by the instructions of sqrtf's own fast path
  // (MUFU.RSQ, two multiplies, two FMAs in the SASS of sqrtf), without its test for the ends
  // of the range that v never reaches: the same value, 5 fewer instructions per call.
  float y;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(v));
  const float s = __fmul_rn(v, y), half_y = __fmul_rn(0.5f, y);
  return __fmaf_rn(__fmaf_rn(-s, s, v), half_y, s);
#else
  return sqrtf(v);
#endif
}
// 1 / v of a normal v below 2^126 (1 + exp(-x) in the sigmoid; SIMD lanes use a refined
// hardware estimate, see csrc/cpu/simd.h)
INFODROP_HD float reciprocal(float v) {
#if defined(__CUDA_ARCH__)
  // The correctly rounded 1 / v (__frcp_rn) by the instructions of __frcp_rn's own fast path
  // (MUFU.RCP, one Newton step in two FMAs), without its test for the ends of the range that
  // such v never reaches: the same value, 6 fewer instructions per call.
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return __fmaf_rn(r, __fmaf_rn(-v, r, 1.0f), r);
#else
  return 1.0f / v;
#endif
}
INFODROP_HD double sqrt_(double v) { return sqrt(v); }

// 1 / v correctly rounded for every v (0, subnormal, inf, NaN included): the division itself,
// bit for bit, in every lane type (SIMD lanes divide).  On CUDA as __frcp_rn / __drcp_rn, which
// round the same way without the division's FCHK test and its slow-path subroutine (rare inputs
// take the reciprocal's own, which reciprocal() above already calls): with 8 such divisions in
// the 16-bit backward step, ptxas on sm_90 kept a loop-invariant in an 8-byte stack frame.
template <class F>
INFODROP_HD F exact_reciprocal(F v) { return F(1.0f) / v; }
INFODROP_HD float exact_reciprocal(float v) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(v);
#else
  return 1.0f / v;
#endif
}
// exact_reciprocal(v) for a normal v below 2^126 (a positive alpha): on CUDA by __frcp_rn's
// own fast path, as reciprocal() above, whose test for the rest these v never need.
template <class F>
INFODROP_HD F exact_reciprocal_of_normal(F v) { return exact_reciprocal(v); }
INFODROP_HD float exact_reciprocal_of_normal(float v) {
#if defined(__CUDA_ARCH__)
  return reciprocal(v);
#else
  return 1.0f / v;
#endif
}
INFODROP_HD double exact_reciprocal(double v) {
#if defined(__CUDA_ARCH__)
  return __drcp_rn(v);
#else
  return 1.0 / v;
#endif
}

}  // namespace infodrop
