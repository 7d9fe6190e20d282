// The CUDA kernels' transcendental functions on the special-function unit (MUFU): exp, log,
// reciprocal, square root, sin and cos as one approximate instruction plus at most a few FMAs,
// in place of fastmath.h's polynomials on the FP32 pipe (issue 19: the kernels were
// issue-bound at about 130 instructions per element, 1.5 of them on MUFU).
//
// Device code only (the CPU kernels keep fastmath.h, bit for bit).  Each function's error bound
// is stated with it, relative unless named absolute, against the exact function of its float
// argument; docs/spec.md section 5 allows 2^-20.  The instruction bounds are those of the CUDA
// C++ Programming Guide's table of intrinsic functions, which compile to exactly these
// instructions: ex2.approx.ftz.f32 (exp2f, __expf's core) 2 ulp = 2^-22; lg2.approx.ftz.f32
// (__log2f) 2^-22 absolute for x in [0.5, 2], 2 ulp elsewhere; rcp.approx.ftz.f32 1 ulp;
// rsqrt.approx.ftz.f32 (rsqrtf) 2 ulp; sin/cos.approx.ftz.f32 (__sinf, __cosf) 2^-21.41 and
// 2^-21.19 absolute for x in [-pi, pi].  tests/test_device_math.py measures each function below
// against float64 on a dense sweep of its input range on a GPU.  .ftz flushes subnormal
// inputs and results to zero: the callers keep their arguments where that cannot happen
// (elementwise.h's device_in_range).
#pragma once

#include <cstdint>

#include "infodrop/lanes.h"

#if defined(__CUDACC__)
namespace infodrop {
namespace device {

// ---- the instructions ------------------------------------------------------------------------

// float f(float x) as the one PTX instruction `ptx` (ex2.approx.ftz.f32 and its kin)
#define INFODROP_PTX_UNARY(f, ptx)                      \
  __device__ __forceinline__ float f(float x) {         \
    float y;                                            \
    asm(ptx " %0, %1;" : "=f"(y) : "f"(x));             \
    return y;                                           \
  }
INFODROP_PTX_UNARY(ex2, "ex2.approx.ftz.f32")
INFODROP_PTX_UNARY(lg2, "lg2.approx.ftz.f32")
INFODROP_PTX_UNARY(rcp, "rcp.approx.ftz.f32")
INFODROP_PTX_UNARY(rsqrt, "rsqrt.approx.ftz.f32")
INFODROP_PTX_UNARY(sin, "sin.approx.ftz.f32")
INFODROP_PTX_UNARY(cos, "cos.approx.ftz.f32")
#undef INFODROP_PTX_UNARY

// ln 2 rounded to float: 1.9e-9 above ln 2, so a * kLn2 errs by |x| 2.8e-9 for the a below
constexpr float kLn2 = 0.693147182464599609375f;
constexpr float kLog2e = 1.44269504088896341f;

// ---- exp -------------------------------------------------------------------------------------

// exp(x) for |x| <= 86 (the sigmoid's), where 2^a is finite: 2^a e^r = 2^a (1 + r) by one FMA,
// a = fl(x log2 e) and r = x - a ln 2 (one FMA, |r| <= |x| 2^-24), so the rounding of x log2 e,
// which alone would cost |x| 2^-24 relative (2^-17.6 at |x| = 86), is undone to first order.
// Relative error <= 2^-22 (ex2) + |x| 2.8e-9 (kLn2) + 2^-24 (the FMA) <= 2^-20.8.  (The noise
// factor needs no such correction: its exponent comes in powers of 2, elementwise.h.)
__device__ __forceinline__ float exp_finite(float x) {
  const float a = x * kLog2e;
  const float r = __fmaf_rn(a, -kLn2, x);
  const float e = ex2(a);
  return __fmaf_rn(e, r, e);
}

// sigmoid(x) and 1 - sigmoid(x) = e / (1 + e), e = exp(-x), for |x| <= 86: relative errors
// (1 - s) d + 2^-24 + 2^-23 <= 2^-20.4 and s d + 2^-22 <= 2^-20.3, d <= 2^-20.8 exp_finite's.
__device__ __forceinline__ void sigmoid(float x, float& s, float& one_minus_s) {
  const float e = exp_finite(-x);
  s = rcp(1.0f + e);
  one_minus_s = e * s;
}

// ---- log -------------------------------------------------------------------------------------

// log(x) for positive normal x: 2^-22 ln 2 + 2^-24.5 = 2^-22.2 absolute for x in [0.5, 2],
// 2 ulp + 2^-24 = 2^-21.7 relative elsewhere; inf for inf, NaN for NaN and x < 0, -inf for 0 (and subnormal x).  Not
// relative near x = 1: the kernels use it in the KL, where its argument carries a rounding of
// the same absolute size already (alpha / cap and log x - mu, docs/performance.md), never for
// Box-Muller's log, which needs a relative bound (minus_two_log_uniform).
__device__ __forceinline__ float log(float x) { return lg2(x) * kLn2; }

// log(x) - m, rounded once (elementwise.h rounds each multiply-add where it is written)
__device__ __forceinline__ float log_minus(float x, float m) { return __fmaf_rn(lg2(x), kLn2, -m); }

// ---- the noise stream ------------------------------------------------------------------------

// u = k 2^-23 + 2^-24 (k = bits >> 9, the stream's uniform: elementwise.h uniform_from_bits) as
// m - (1 - 2^-24) with m = 1 + k 2^-23 built from the bits: both exact, no conversion.
__device__ __forceinline__ float mantissa_from_bits(uint32_t bits) {
  return as_float((bits >> 9) | 0x3f800000u);
}

// (log2 e)^2, by which kLog2 scales -2 log u below (so that the radius and eps come out times
// log2 e: the kernels' noise in powers of 2, elementwise.h kNoiseInLog2)
constexpr double kLog2eSquared = 2.0813689810056077;

// -2 log u for the stream's uniforms u in [2^-24, 1 - 2^-24], times (log2 e)^2 where kLog2 (its
// constants scaled, each rounded once: 2^-24 more), relative error <= 2^-20.9 (2^-20.8 where
// kLog2).  Where u <= 0.7, |log2 u| >= 0.51 and lg2's 2^-22 absolute is 2^-21.04 relative
// (2^-20.9 with the product's rounding).  Above, where it would not be (log u -> 0 as u -> 1,
// and the radius sqrt(-2 log u) with it), -2 log u = 2 v P(v) with v = 1 - u, which is exact in
// this stream: P(v) ~ -log(1 - v) / v, degree 5, fitted on [0, 0.3] for relative error (2^-22.8
// fit, 2^-21.9 evaluated in float32; exhaustive over the stream's v in tests/test_device_math.py).
template <bool kLog2 = false>
__device__ __forceinline__ float minus_two_log_uniform(float u) {
  // c, or c (log2 e)^2 rounded once
  constexpr auto scaled = [](float c) { return kLog2 ? static_cast<float>(c * kLog2eSquared) : c; };
  constexpr float c5 = scaled(0.7997335791587830f), c4 = scaled(0.2133045196533203f),
                  c3 = scaled(0.5316225886344910f), c2 = scaled(0.6643252372741699f),
                  c1 = scaled(1.0000623464584351f), c0 = scaled(1.9999997615814209f);
  const float v = 1.0f - u;  // exact: u is an odd multiple of 2^-24 below 1
  float p = c5;
  p = __fmaf_rn(p, v, c4);
  p = __fmaf_rn(p, v, c3);
  p = __fmaf_rn(p, v, c2);
  p = __fmaf_rn(p, v, c1);
  p = __fmaf_rn(p, v, c0);
  // -2 ln 2 (exact: kLn2 doubled), or -2 ln 2 (log2 e)^2 = -2 log2 e rounded once
  constexpr float to_log = kLog2 ? static_cast<float>(-2.0 * 1.4426950408889634) : -2.0f * kLn2;
  return v > 0.3f ? lg2(u) * to_log : v * p;
}

// sqrt of x in [2^-24, 72] (the radius, or the radius times log2 e): x rsqrt(x), relative error
// <= 2^-22 + 2^-24 = 2^-21.7.
__device__ __forceinline__ float sqrt_of_normal(float x) { return x * rsqrt(x); }

// sin(2 pi u) and cos(2 pi u) for u = m - (1 - 2^-24), m = mantissa_from_bits(bits): the angle
// 2 pi (u - 1/2) = 2 pi ((m - 1.5) + 2^-24) is in [-pi, pi] (m - 1.5 exact), where sin.approx
// and cos.approx have their bounds, and shifting by pi flips both signs.  Absolute error <=
// 2^-21.19 + 2^-23 (the angle's rounding, |angle| < 4) + 0.5 x 1.75e-7 (2 pi's) = 2^-20.6.
__device__ __forceinline__ void sincos_2pi_from_mantissa(float m, float& sin_out, float& cos_out) {
  constexpr float kTwoPi = 6.28318530717958647692f;
  const float angle = __fmaf_rn(m - 1.5f, kTwoPi, kTwoPi * 5.9604644775390625e-8f);
  sin_out = -sin(angle);
  cos_out = -cos(angle);
}

// Box-Muller on one pair of Philox words, as elementwise.h's box_muller: eps = sqrt(-2 log u1)
// times cos and sin of 2 pi u2 (times log2 e where kLog2).  Absolute error <= |eps| 2^-20.7 +
// sqrt(-2 log u1) 2^-20.6 (where kLog2, of eps log2 e: |eps log2 e| 2^-20.6 + ...).
template <bool kLog2 = false>
__device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, float& eps_even,
                                           float& eps_odd) {
  const float u = mantissa_from_bits(a) - 0.99999994039535522f;  // exact, 1 - 2^-24
  const float rad = sqrt_of_normal(minus_two_log_uniform<kLog2>(u));
  float sin_t, cos_t;
  sincos_2pi_from_mantissa(mantissa_from_bits(b), sin_t, cos_t);
  eps_even = rad * cos_t;
  eps_odd = rad * sin_t;
}

}  // namespace device
}  // namespace infodrop
#endif
