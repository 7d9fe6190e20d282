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
  // x = m * 2^e with m in [sqrt(1/2), sqrt(2)), so that f = m - 1 is small and the
  // polynomial's relative error holds near log(1) = 0.  Taking sqrt(1/2)'s mantissa bits
  // (0x3504f3) off x's borrows one from the exponent field exactly where x's mantissa is below
  // them (m = 2 * its m in [0.5, 1), e one less), so integer ops alone split x, no compare and
  // select: t's exponent field is e + 126, its low bits plus sqrt(1/2)'s bits are m's bits.
  const U t = as_uint(x) - U(0x003504f3u);
  const F f = as_float((t & U(0x007fffffu)) + U(0x3f3504f3u)) - F(1.0f);
  const F e = signed_to_float((t >> 23) - U(126u));
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

// Where log_of_normal does not apply: x not a positive normal float (the bits 0x00800000 ..
// 0x7f7fffff are).
template <class F>
INFODROP_HD auto outside_log_range(F x) {
  using U = LanesUint<F>;
  return U(0x7effffffu) < as_uint(x) - U(0x00800000u);
}

// log(x) as IEEE float32 has it for every x: log(0) = -inf, log(+inf) = +inf, NaN for x < 0,
// subnormal x as accurate as normal x; NaN propagates.  The KL takes the log of alpha, which is
// 0 or subnormal when alpha_min = 0 and the sigmoid underflows, and of x, which may be +inf.
template <class F>
INFODROP_HD F fast_log(F x) {
  // Positive normal floats take the polynomial alone; the rest is behind a branch that is
  // rarely taken (run always, it cost the CPU forward about 10%).
  if (!any_(outside_log_range(x))) return log_of_normal(x);
  // A subnormal x is scaled into the normal range (exactly) and 23 ln 2 taken off its log.
  const auto subnormal = x < F(1.17549435e-38f);
  const F y = log_of_normal(select(subnormal, x * F(8388608.0f), x)) -
              select(subnormal, F(15.9423851528787f), F(0.0f));
  // The ends, where the bits mean nothing: +inf and NaN are their own log.
  const F zero_or_negative = select(x == F(0.0f), F(-INFINITY), F(NAN));
  return select(x < F(INFINITY), select(x > F(0.0f), y, zero_or_negative), x);
}

// exp(x) = y * 2^n: y in [0.7, 1.5) from the polynomial, n = round(x / ln 2) (as int32 bits and
// as a float), for |x| <= 104.
template <class F, class U>
INFODROP_HD F exp_parts(F x, U& n, F& nf) {
  n = round_to_int(x * F(1.44269504088896341f));
  nf = signed_to_float(n);
  const F r = x - nf * F(0.693359375f) - nf * F(-2.12194440e-4f);
  F p = F(1.9875691500e-4f);
  p = p * r + F(1.3981999507e-3f);
  p = p * r + F(8.3334519073e-3f);
  p = p * r + F(4.1665795894e-2f);
  p = p * r + F(1.6666665459e-1f);
  p = p * r + F(5.0000001201e-1f);
  return r * r * p + r + F(1.0f);
}

// Where exp_in_range does not apply: |x| > 86, or NaN.  An unsigned compare of the bits (NaN's
// are above 86's), the same on every lane type.
template <class F>
INFODROP_HD auto outside_exp_range(F x) {
  using U = LanesUint<F>;
  return U(0x42ac0000u) < (as_uint(x) & U(0x7fffffffu));  // 0x42ac0000 = 86.0f
}

// exp(x) for |x| <= 86, the same value as fast_exp: there |n| <= 125 and y * 2^n is a normal
// float, so adding n to y's exponent field is the exact product, one integer add in place of
// the clamp and fast_exp's two multiplies.
template <class F>
INFODROP_HD F exp_in_range(F x) {
  using U = LanesUint<F>;
  U n;
  F nf;
  const F y = exp_parts(x, n, nf);
  return as_float(as_uint(y) + (n << 23));
}

// exp(x) as IEEE float32 has it at the ends of the range: +inf from log(FLT_MAX) = 88.72 up,
// the subnormal (correctly rounded from the polynomial) below log(FLT_MIN) = -87.34, 0 below
// -103.97 and at -inf; NaN propagates through the clamp and the polynomial.
template <class F>
INFODROP_HD F exp_ieee(F x) {
  using U = LanesUint<F>;
  // Outside [-104, 89] the result is 0 or inf whatever x is; the clamp keeps n in [-150, 128].
  U n;
  F nf;
  const F y = exp_parts(min_(max_(x, F(-104.0f)), F(89.0f)), n, nf);
  return scale_pow2(y, n, nf);  // rounds once, to +inf past FLT_MAX or to a subnormal
}

// exp(x) for every x: the ends behind a branch that is rarely taken (on the GPU the clamp and
// the two-step scaling cost about 8 instructions per call).
template <class F>
INFODROP_HD F fast_exp(F x) {
  if (!any_(outside_exp_range(x))) return exp_in_range(x);
  return exp_ieee(x);
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

// sigmoid(x) and 1 - sigmoid(x), the second without cancellation (e / (1 + e), e = exp(-x)),
// for |x| <= 86 (outside_exp_range(x) false): e in [e^-86, e^86], 1 + e normal and below
// 2^126, as reciprocal needs.
template <class F>
INFODROP_HD void sigmoid_in_range(F x, F& s, F& one_minus_s) {
  const F e = exp_in_range(-x);
  s = reciprocal(F(1.0f) + e);
  one_minus_s = e * s;
}

// The same for every x, as IEEE float32 evaluation of 1 / (1 + exp(-x)) has it.
template <class F>
INFODROP_HD void fast_sigmoid(F x, F& s, F& one_minus_s) {
  // The rest (rare) is behind one branch, not selects on every lane (those cost the AVX2
  // kernels ~5%).
  if (!any_(outside_exp_range(x))) return sigmoid_in_range(x, s, one_minus_s);
  const F e = exp_ieee(-x);
  s = reciprocal(F(1.0f) + e);  // 1 + e in [1, e^87] for x >= -87: normal, as reciprocal needs
  one_minus_s = e * s;
  // Below -87, e is huge or inf (the SIMD reciprocal of inf is NaN) and sigmoid(x) = exp(x) to
  // float precision; it is 0 where exp(-x) overflows, as 1 / (1 + exp(-x)) (torch.sigmoid, so
  // the reference) is: with alpha_min = 0 the KL is then +inf where the reference's is.
  const auto low = x < F(-87.0f);
  s = select(low, select(x > F(-kExpOverflowF), exp_ieee(x), F(0.0f)), s);
  one_minus_s = select(low, F(1.0f), one_minus_s);
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
