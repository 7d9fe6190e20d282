// Fast float32 log, exp, sigmoid and sin/cos of 2*pi*u, written once for every lane type.
//
// docs/spec.md section 5 allows approximations whose error stays below 2^-20 (relative; absolute
// for sin and cos).  These are minimax polynomials after an exact range reduction (the
// coefficients are Cephes' single-precision ones); tests/test_fastmath.py checks the bound
// against float64 on a dense sweep.  They use only + - * /, comparisons, select, bit casts and
// the few lane functions of lanes.h (scale_pow2, any_), so the same code runs on CUDA threads
// and on CPU SIMD lanes.  At the ends of the range (0, subnormals, overflow, inf, NaN) they
// return what IEEE float32 does (tests/test_edges.py).  The double overloads are exact: float64
// inputs (gradcheck) get libm.
#pragma once

#include <utility>

#include "infodrop/lanes.h"

namespace infodrop {

template <class F>
using LanesUint = decltype(as_uint(std::declval<F>()));

// log(x) for a positive normal float x, all that Box-Muller takes (uniforms in [2^-24, 1)).
template <class F>
INFODROP_HD F log_of_normal(F x) {
  using U = LanesUint<F>;
  const U bits = as_uint(x);
  // x = m * 2^e with m in [0.5, 1); then fold m into [sqrt(1/2), sqrt(2)) so that f = m - 1 is
  // small and the polynomial's relative error holds near log(1) = 0.
  const F m = as_float((bits & U(0x007fffffu)) | U(0x3f000000u));
  const auto below = m < F(0.70710678118654752f);
  const F f = select(below, m + m, m) - F(1.0f);
  const F e = signed_to_float((bits >> 23) - U(126u)) - select(below, F(1.0f), F(0.0f));
  const F z = f * f;
  F p = F(7.0376836292e-2f);
  p = p * f + F(-1.1514610310e-1f);
  p = p * f + F(1.1676998740e-1f);
  p = p * f + F(-1.2420140846e-1f);
  p = p * f + F(1.4249322787e-1f);
  p = p * f + F(-1.6668057665e-1f);
  p = p * f + F(2.0000714765e-1f);
  p = p * f + F(-2.4999993993e-1f);
  p = p * f + F(3.3333331174e-1f);
  // ln 2 = 0.693359375 - 2.12194440e-4, split so that e * ln 2 adds without rounding error
  const F tail = f * z * p + e * F(-2.12194440e-4f) - F(0.5f) * z;
  return f + tail + e * F(0.693359375f);
}

// log(x) as IEEE float32 has it for every x: log(0) = -inf, log(+inf) = +inf, NaN for x < 0,
// subnormal x as accurate as normal x; NaN propagates.  The KL takes the log of alpha, which is
// 0 or subnormal when alpha_min = 0 and the sigmoid underflows, and of x, which may be +inf.
template <class F>
INFODROP_HD F fast_log(F x) {
  using U = LanesUint<F>;
  // Positive normal floats, the bits 0x00800000 .. 0x7f7fffff, take the polynomial alone; the
  // rest is behind a branch that is rarely taken (run always, it cost the CPU forward about 10%).
  if (!any_(U(0x7effffffu) < as_uint(x) - U(0x00800000u))) return log_of_normal(x);
  // A subnormal x is scaled into the normal range (exactly) and 23 ln 2 taken off its log.
  const auto subnormal = x < F(1.17549435e-38f);
  const F y = log_of_normal(select(subnormal, x * F(8388608.0f), x)) -
              select(subnormal, F(15.9423851528787f), F(0.0f));
  // The ends, where the bits mean nothing: +inf and NaN are their own log.
  const F zero_or_negative = select(x == F(0.0f), F(-INFINITY), F(NAN));
  return select(x < F(INFINITY), select(x > F(0.0f), y, zero_or_negative), x);
}

// exp(x) as IEEE float32 has it at the ends of the range: +inf from log(FLT_MAX) = 88.72 up,
// the subnormal (correctly rounded from the polynomial) below log(FLT_MIN) = -87.34, 0 below
// -103.97 and at -inf; NaN propagates through the clamp and the polynomial.
template <class F>
INFODROP_HD F fast_exp(F x) {
  using U = LanesUint<F>;
  // Outside [-104, 89] the result is 0 or inf whatever x is; the clamp keeps n in [-150, 128].
  const F xc = min_(max_(x, F(-104.0f)), F(89.0f));
  const U n = round_to_int(xc * F(1.44269504088896341f));
  const F nf = signed_to_float(n);
  const F r = xc - nf * F(0.693359375f) - nf * F(-2.12194440e-4f);
  F p = F(1.9875691500e-4f);
  p = p * r + F(1.3981999507e-3f);
  p = p * r + F(8.3334519073e-3f);
  p = p * r + F(4.1665795894e-2f);
  p = p * r + F(1.6666665459e-1f);
  p = p * r + F(5.0000001201e-1f);
  const F y = r * r * p + r + F(1.0f);
  return scale_pow2(y, n, nf);  // rounds once, to +inf past FLT_MAX or to a subnormal
}

// sin(2 pi u) and cos(2 pi u) for u in [0, 1].  Reducing in turns is exact: u and q / 4 are
// multiples of 2^-24, so r carries no rounding error, unlike a reduction of 2 pi u by pi / 2.
template <class F>
INFODROP_HD void fast_sincos_2pi(F u, F& sin_out, F& cos_out) {
  using U = LanesUint<F>;
  const U q = round_to_int(u * F(4.0f));
  const F a = (u - signed_to_float(q) * F(0.25f)) * F(6.28318530717958647692f);  // |a| <= pi/4
  const F z = a * a;
  const F sin_a = ((F(-1.9515295891e-4f) * z + F(8.3321608736e-3f)) * z + F(-1.6666654611e-1f)) * z * a + a;
  const F cos_a = ((F(2.443315711809948e-5f) * z + F(-1.388731625493765e-3f)) * z +
                   F(4.166664568298827e-2f)) * z * z - F(0.5f) * z + F(1.0f);
  // quadrant q: sin(q pi/2 + a), cos(q pi/2 + a) from sin a and cos a by swaps and sign flips
  const auto odd = (q & U(1u)) != U(0u);
  const F s = select(odd, cos_a, sin_a);
  const F c = select(odd, sin_a, cos_a);
  sin_out = as_float(as_uint(s) ^ ((q & U(2u)) << 30));
  cos_out = as_float(as_uint(c) ^ (((q + U(1u)) & U(2u)) << 30));
}

// The least float and double whose exp overflows (to +inf).
constexpr float kExpOverflowF = 88.72283935546875f;
constexpr double kExpOverflowD = 709.7827128933841;

// sigmoid(x) and 1 - sigmoid(x), the second without cancellation (e / (1 + e), e = exp(-x)).
template <class F>
INFODROP_HD void fast_sigmoid(F x, F& s, F& one_minus_s) {
  const F e = fast_exp(-x);
  s = reciprocal(F(1.0f) + e);  // 1 + e in [1, e^87] for x >= -87: normal, as reciprocal needs
  one_minus_s = e * s;
  // Below -87, e is huge or inf (the SIMD reciprocal of inf is NaN) and sigmoid(x) = exp(x) to
  // float precision; it is 0 where exp(-x) overflows, as 1 / (1 + exp(-x)) (torch.sigmoid, so
  // the reference) is: with alpha_min = 0 the KL is then +inf where the reference's is.  Such
  // lanes are rare: a branch, not selects on every lane (those cost the AVX2 kernels ~5%).
  const auto low = x < F(-87.0f);
  if (any_(low)) {
    s = select(low, select(x > F(-kExpOverflowF), fast_exp(x), F(0.0f)), s);
    one_minus_s = select(low, F(1.0f), one_minus_s);
  }
}

INFODROP_HD double fast_log(double x) { return log(x); }
INFODROP_HD double fast_exp(double x) { return exp(x); }
INFODROP_HD void fast_sigmoid(double x, double& s, double& one_minus_s) {
  const double e = exp(-fabs(x));  // in [0, 1]: no overflow for large |x|
  const double small = e / (1.0 + e), large = 1.0 / (1.0 + e);
  s = x < 0 ? (x > -kExpOverflowD ? small : 0.0) : large;  // NaN: large, which is NaN
  one_minus_s = x < 0 ? large : small;
}

}  // namespace infodrop
