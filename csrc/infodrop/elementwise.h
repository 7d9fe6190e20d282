// The per-element math of Information Dropout (docs/spec.md sections 1 and 3), written once.
//
// Every backend calls these functions: the CUDA kernel with E = float (or double) per thread,
// the CPU kernel with E = a SIMD vector of floats (or scalar double).  Backends differ only in
// how they walk memory and reduce the per-sample KL.
#pragma once

#include <type_traits>

#include "infodrop/device_math.h"
#include "infodrop/fastmath.h"
#include "infodrop/philox.h"

namespace infodrop {

constexpr double kXFloor = 1e-4;  // floor of x inside log x (the authors' code)

enum class Prior : int { LogUniform = 0, LogNormal = 1 };

// The op's options, with the derived constants the inner loops need.  S is the compute scalar
// (float for float/half/bfloat16 inputs, double for double).
template <class S>
struct Params {
  S max_alpha, alpha_min, inv_cap;  // inv_cap = 1 / (alpha_min + max_alpha), the largest alpha
  S mu, half_inv_sigma2, inv_sigma2, log_sigma, inv_sigma, inv_sigma3;
  Prior prior;
  bool mask_inactive, unit_mean, apply_noise;

  INFODROP_HD void set_options(S max_alpha_, S alpha_min_, Prior prior_, bool mask_inactive_,
                               bool unit_mean_, bool apply_noise_) {
    max_alpha = max_alpha_;
    alpha_min = alpha_min_;
    inv_cap = S(1) / (alpha_min_ + max_alpha_);
    prior = prior_;
    mask_inactive = mask_inactive_;
    unit_mean = unit_mean_;
    apply_noise = apply_noise_;
  }
  // mu and sigma may live in device memory (learned parameters), so a kernel sets them itself.
  INFODROP_HD void set_prior(S mu_, S sigma_) {
    mu = mu_;
    inv_sigma = S(1) / sigma_;
    inv_sigma2 = inv_sigma * inv_sigma;
    half_inv_sigma2 = S(0.5) * inv_sigma2;
    inv_sigma3 = inv_sigma2 * inv_sigma;
    log_sigma = log(sigma_);
  }
};

// ---- the noise stream --------------------------------------------------------------------

// (r >> 9) * 2^-23 + 2^-24: exact in float32, in (0, 1), never 0 or 1.
template <class U>
INFODROP_HD auto uniform_from_bits(U r) {
  using F = decltype(as_float(r));
  return signed_to_float(r >> 9) * F(1.0f / 8388608.0f) + F(1.0f / 16777216.0f);
}

// Box-Muller on one pair of Philox words: eps for the even lane (cos) and the odd lane (sin);
// eps log2 e where kLog2 (CUDA threads only: the kernels' noise in powers of 2, kNoiseInLog2).
template <bool kLog2 = false, class U, class F>
INFODROP_HD void box_muller(U a, U b, F& eps_even, F& eps_odd) {
#if defined(__CUDA_ARCH__)
  // the same values within docs/spec.md's 2^-20 on the special-function unit (device_math.h)
  if constexpr (std::is_same<F, float>::value)
    return device::box_muller<kLog2>(a, b, eps_even, eps_odd);
#endif
#if !defined(__CUDACC__)  // (nvcc's host pass compiles the kernels' instances, never run there)
  static_assert(!kLog2, "eps in powers of 2 is the CUDA kernels' (device_math.h)");
#endif
  const F rad = sqrt_(F(-2.0f) * log_of_normal(uniform_from_bits(a)));
  F sin_t, cos_t;
  fast_sincos_2pi(uniform_from_bits(b), sin_t, cos_t);
  eps_even = rad * cos_t;
  eps_odd = rad * sin_t;
}

// The key and the high half of the counter, shared by every element of one call.
struct StreamKey {
  uint32_t seed_lo, seed_hi, offset_lo, offset_hi;
  INFODROP_HD StreamKey(uint64_t seed, uint64_t offset)
      : seed_lo(static_cast<uint32_t>(seed)), seed_hi(static_cast<uint32_t>(seed >> 32)),
        offset_lo(static_cast<uint32_t>(offset)), offset_hi(static_cast<uint32_t>(offset >> 32)) {}
};

// eps of the four elements 4g .. 4g + 3 of group g = (group_lo, group_hi) (times log2 e where
// kLog2: box_muller); U may hold a vector of consecutive groups, one per lane (only the low 32
// bits of group_lo's lanes are read).
template <bool kLog2 = false, class U, class F>
INFODROP_HD void noise_group(U group_lo, U group_hi, const StreamKey& key, F eps[4]) {
  const Philox4<U> r = philox4x32_10(group_lo, group_hi, U(key.offset_lo), U(key.offset_hi),
                                     key.seed_lo, key.seed_hi);
  box_muller<kLog2>(low_words(r.r0), low_words(r.r1), eps[0], eps[1]);
  box_muller<kLog2>(low_words(r.r2), low_words(r.r3), eps[2], eps[3]);
}

// Four logically consecutive values from index i0 on, where i0 % 4 = r is not known to be 0:
// lanes r .. 3 of group i0 / 4 (`a`) and 0 .. r - 1 of the next (`b`), picked by two conditional
// shifts (no indexing by a variable, which would put the arrays in local memory on a GPU).
template <class E>
INFODROP_HD void pick_lanes(const E (&a)[4], const E (&b)[4], unsigned r, E (&out)[4]) {
  const E joined[8] = {a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]};
  E shifted[5];
  INFODROP_UNROLL
  for (int j = 0; j < 5; ++j) shifted[j] = (r & 2) ? joined[j + 2] : joined[j];
  INFODROP_UNROLL
  for (int k = 0; k < 4; ++k) out[k] = (r & 1) ? shifted[k + 1] : shifted[k];
}

// eps of the four stream indices i0 .. i0 + 3 where i0 % 4 = r is not known to be 0 (a
// channel of a channels-last tile whose channels do not start Philox groups): lanes r .. 3 of
// group g = i0 / 4 and 0 .. r - 1 of g + 1, the values noise_group gives them.  Both groups'
// Philox words, but three Box-Muller pairs, not four: lanes 2, 3 of g and 0, 1 of g + 1 serve
// every r > 0, and the third pair is lanes 0, 1 of g where r < 2 (r = 0 takes g's four lanes)
// and 2, 3 of g + 1 where r >= 2 (a pair is two lanes from two words: each lane's value is
// the same whichever pairs are drawn).
template <bool kLog2 = false, class F>
INFODROP_HD void noise_of_four(uint64_t i0, const StreamKey& key, F (&eps)[4]) {
  const auto words_of = [&](uint64_t group) {
    return philox4x32_10(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                         key.offset_lo, key.offset_hi, key.seed_lo, key.seed_hi);
  };
  const Philox4<uint32_t> a = words_of(i0 >> 2), b = words_of((i0 >> 2) + 1);
  const unsigned r = static_cast<unsigned>(i0 & 3);
  const bool late = (r & 2) != 0;
  F of_a[4], of_b[4];
  box_muller<kLog2>(a.r2, a.r3, of_a[2], of_a[3]);
  box_muller<kLog2>(b.r0, b.r1, of_b[0], of_b[1]);
  box_muller<kLog2>(late ? b.r2 : a.r0, late ? b.r3 : a.r1, of_a[0], of_a[1]);
  of_b[2] = of_a[0];  // the third pair, read from `a` where r < 2 and from `b` where r >= 2
  of_b[3] = of_a[1];
  pick_lanes(of_a, of_b, r, eps);
}

// Whether the CUDA kernels of compute type S hand their element functions eps log2 e in place of
// eps (float: the special-function path's noise factor is then 2^(alpha eps log2 e ...) with no
// multiply by log2 e, one instruction per element; DeviceMath takes it so, and the IEEE path
// of an element outside its range converts it back, forward_element / backward_element).
template <class S>
constexpr bool kNoiseInLog2 = std::is_same<S, float>::value;

// eps of one element; a whole group is computed and one lane kept (for ragged edges).
INFODROP_HD float noise_at(uint64_t index, const StreamKey& key) {
  const uint64_t group = index >> 2;
  float eps[4];
  noise_group(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), key, eps);
  return eps[index & 3];
}

// ---- the layer -------------------------------------------------------------------------------

// The transcendental functions of an element, in two versions with one interface.  IeeeMath is
// fastmath.h's functions, right for every input (each with its own rarely taken branch to the
// ends of its range).  InRangeMath is their fast paths alone, right where the inputs are in
// range, with the same values there; it records in `outside` the lanes where an input was not,
// and its caller then runs the element again with IeeeMath (forward_element below; the CUDA
// kernels once per step): one branch where IeeeMath has one per function.
template <class E>
struct IeeeMath {
  INFODROP_HD void sigmoid(E x, E& s, E& one_minus_s) { fast_sigmoid(x, s, one_minus_s); }
  INFODROP_HD E exp(E x) { return fast_exp(x); }
  INFODROP_HD E log(E x) { return fast_log(x); }
  INFODROP_HD E log_minus(E x, E m) { return log(x) - m; }
  INFODROP_HD E inverse(E alpha) { return exact_reciprocal(alpha); }
};

template <class E>
struct InRangeMath {
  decltype(E() < E()) outside;

  // Not a default member initializer: GCC compiles the implicit constructor without the CPU
  // kernels' `#pragma GCC target` and then cannot inline the SIMD lanes' functions into it.
  INFODROP_HD InRangeMath() : outside(E(0.0f) < E(0.0f)) {}  // no lane yet

  INFODROP_HD void sigmoid(E x, E& s, E& one_minus_s) {
    outside = either(outside, outside_exp_range(x));
    sigmoid_in_range(x, s, one_minus_s);
  }
  INFODROP_HD E exp(E x) {
    outside = either(outside, outside_exp_range(x));
    return exp_in_range(x);
  }
  INFODROP_HD E log(E x) {
    outside = either(outside, outside_log_range(x));
    return log_of_normal(x);
  }
  INFODROP_HD E log_minus(E x, E m) { return log(x) - m; }
  // 1 / alpha for alpha normal and below 2^126 (its bits 0x00800000 .. 0x7e7fffff)
  INFODROP_HD E inverse(E alpha) {
    using U = LanesUint<E>;
    outside = either(outside, U(0x7dffffffu) < as_uint(alpha) - U(0x00800000u));
    return exact_reciprocal_of_normal(alpha);
  }
};

// Where DeviceMath gives the IEEE path's values within the error bound: |logit| <= 80, so that
// the sigmoid's exp is finite and s >= 1.8e-35, which keeps alpha (1 / alpha, log alpha) a normal
// float for any alpha_min > 0 or max_alpha >= 7e-4.  NaN logits pass (NaN propagates alike).
// Host-device, for the device kernels and for tests/device_range_harness.cpp, which checks on
// the CPU that the step's test below agrees with this one on every element.
INFODROP_HD bool device_in_range(float logit) { return !(fabsf(logit) > 80.0f); }

template <int V>
INFODROP_HD bool device_in_range(const float (&logit)[V]) {
  float most = fabsf(logit[0]);
  INFODROP_UNROLL
  for (int k = 1; k < V; ++k) most = fmaxf(most, fabsf(logit[k]));  // fmaxf drops NaN
  return device_in_range(most);  // so: true exactly where device_in_range is for every logit
}

#if defined(__CUDA_ARCH__)
// The CUDA kernels' version for float: device_math.h's special-function-unit approximations, right
// where device_in_range says (their ends, subnormals flushed to zero, are not IEEE's).
struct DeviceMath {
  __device__ void sigmoid(float x, float& s, float& one_minus_s) {
    device::sigmoid(x, s, one_minus_s);
  }
  __device__ float log(float x) { return device::log(x); }
  __device__ float log_minus(float x, float m) { return device::log_minus(x, m); }
  __device__ float inverse(float alpha) { return device::rcp(alpha); }
};

// f(q) with q = p and q's prior, mask_inactive and unit_mean constants the compiler sees: the
// device step is compiled once per combination, each free of the per-element selects and
// predicated instructions of the options it does not have (2-3 instructions per element).
template <class F>
__device__ __forceinline__ void with_options_known(const Params<float>& p, F&& f) {
  Params<float> q = p;
  const auto unit_mean_known = [&] {
    if (p.unit_mean) {
      q.unit_mean = true;
      f(q);
    } else {
      q.unit_mean = false;
      f(q);
    }
  };
  const auto mask_known = [&] {
    if (p.mask_inactive) {
      q.mask_inactive = true;
      unit_mean_known();
    } else {
      q.mask_inactive = false;
      unit_mean_known();
    }
  };
  if (p.prior == Prior::LogUniform) {
    q.prior = Prior::LogUniform;
    mask_known();
  } else {
    q.prior = Prior::LogNormal;
    mask_known();
  }
}

#endif

// ---- rounding points ---------------------------------------------------------------------------
//
// The per-element arithmetic below writes each product that meets a sum as one of these.  On the
// CPU lanes (and for double) they are the operators, the same expressions as before, so the CPU
// kernels compile, and contract, as they always did.  On CUDA threads (float) they are nvcc's
// rounding intrinsics, which it neither contracts nor re-associates (nor does ptxas: mul.rn,
// add.rn, fma.rn).  Left to itself nvcc fuses a product into a neighbouring sum by what else uses
// the product, which differs between the options folded into constants (forward_step's
// all-in-range steps) and run-time options (an in-range element next to a logit beyond +-80): the
// same element came out of a contiguous step and a channels-last tile in different last bits
// (issue 18 promises them equal).  tests/test_device_rounding.py compares the PTX of both.
template <class E>
INFODROP_HD E rn_mul(E a, E b) {  // a b
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) return __fmul_rn(a, b);
#endif
  return a * b;
}
template <class E>
INFODROP_HD E rn_add(E a, E b) {  // a + b
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) return __fadd_rn(a, b);
#endif
  return a + b;
}
template <class E>
INFODROP_HD E rn_add_mul(E c, E a, E b) {  // c + a b, one rounding on CUDA threads
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) return __fmaf_rn(a, b, c);
#endif
  return c + a * b;
}
template <class E>
INFODROP_HD E rn_sub_mul(E c, E a, E b) {  // c - a b, one rounding on CUDA threads
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) return __fmaf_rn(-a, b, c);
#endif
  return c - a * b;
}
template <class E>
INFODROP_HD E rn_mul_add(E a, E b, E c) {  // a b + c, one rounding on CUDA threads
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) return __fmaf_rn(a, b, c);
#endif
  return a * b + c;
}
template <class E>
INFODROP_HD E rn_mul_sub(E a, E b, E c) {  // a b - c, one rounding on CUDA threads
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) return __fmaf_rn(a, b, -c);
#endif
  return a * b - c;
}

// Whether InRangeMath exists for the compute type: float lanes, not double.
template <class E>
constexpr bool kHasInRangeMath = !std::is_same<E, double>::value;

template <class E, class S>
INFODROP_HD E alpha_of(E s, const Params<S>& p) {
  return rn_add_mul(E(p.alpha_min), E(p.max_alpha), s);
}

// The unit of eps as a Math's element functions take it: 1, except DeviceMath's (log2 e: the
// CUDA kernels' noise in powers of 2, kNoiseInLog2)
template <class Math>
constexpr double kEpsUnit = 1.0;

// alpha eps, less alpha^2 / 2 with unit_mean: the log of the noise factor, in eps's unit
template <class Math, class E, class S>
INFODROP_HD E log_noise_of(Math&, E alpha, E eps, const Params<S>& p) {
  E log_noise = rn_mul(alpha, eps);
  if (p.unit_mean) log_noise = rn_sub_mul(log_noise, E(S(0.5 * kEpsUnit<Math>)) * alpha, alpha);
  return log_noise;
}

// grad_x + grad_kl dkl_dx with grad_x = grad_z n (n = 1 without noise).  On CUDA threads the FMA
// takes grad_z n: under the log-uniform prior dkl_dx = 0, grad_kl dkl_dx is then the same for every
// element of a step and computed once (fusing grad_kl dkl_dx instead cost an instruction per element).
template <class E>
INFODROP_HD E plus_kl_term(E grad_x, E grad_z, E n, E grad_kl, E dkl_dx) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) return __fmaf_rn(grad_z, n, __fmul_rn(grad_kl, dkl_dx));
#endif
  return grad_x + grad_kl * dkl_dx;
}

// d^2 + alpha^2, d = log x - mu: the log-normal KL's squared terms
template <class E>
INFODROP_HD E squares(E d, E alpha) {
  return rn_mul_add(d, d, rn_mul(alpha, alpha));
}

// log(max(x, x_floor)) - mu, the mean difference of the log-normal KL
template <class Math, class E, class S>
INFODROP_HD E log_x_minus_mu(Math& math, E x, const Params<S>& p) {
  return math.log_minus(select(x > E(S(kXFloor)), x, E(S(kXFloor))), E(p.mu));
}

// The noise factor n = e^log_noise, and eps in natural units (DeviceMath's overloads below)
template <class Math, class E>
INFODROP_HD E noise_factor(Math& math, E log_noise) {
  return math.exp(log_noise);
}
template <class Math, class E>
INFODROP_HD E natural_eps(Math&, E eps) {
  return eps;
}

#if defined(__CUDA_ARCH__)
// DeviceMath takes eps log2 e (kNoiseInLog2), so log_noise_of gives y = log n log2 e, and n is
// one ex2: within 2^-22 of 2^y for the float y it is given, where e^x of a given x needs a
// multiply by log2 e and an FMA to undo that multiply's rounding (device_math.h exp_finite).
// The roundings that make y (of alpha eps log2 e, and of the scaled constants) are those that
// made x = alpha eps before, one each; with unit_mean, (0.5 log2 e) alpha is rounded where
// 0.5 alpha was exact, |alpha^2 / 2| 2^-24 more in log n (2^-24.4 at the cap 0.7).
template <>
constexpr double kEpsUnit<DeviceMath> = 1.4426950408889634;
__device__ __forceinline__ float noise_factor(DeviceMath&, float log_noise_log2) {
  return device::ex2(log_noise_log2);
}
__device__ __forceinline__ float natural_eps(DeviceMath&, float eps_log2) {
  return __fmul_rn(eps_log2, device::kLn2);  // rounded here, as rn_mul: not fused into its use
}
#endif

template <class E>
struct ForwardOut {
  E z, kl;
};

// z and alpha of an element: the forward without its KL
template <class E>
struct NoisyOut {
  E z, alpha;
};

template <class Math, class E, class S>
INFODROP_HD NoisyOut<E> noisy_element_with(Math& math, E x, E logit, E eps, const Params<S>& p) {
  E s, one_minus_s;
  math.sigmoid(logit, s, one_minus_s);
  const E alpha = alpha_of(s, p);
  E z = x;
  if (p.apply_noise) {
    z = x * noise_factor(math, log_noise_of(math, alpha, eps, p));
  }
  return {z, alpha};
}

// alpha / cap, the log-uniform KL's argument (kl = -log of it)
template <class E, class S>
INFODROP_HD E kl_ratio(E alpha, const Params<S>& p) {
  return alpha * E(p.inv_cap);
}

template <class Math, class E, class S>
INFODROP_HD ForwardOut<E> forward_element_with(Math& math, E x, E logit, E eps,
                                               const Params<S>& p) {
  const NoisyOut<E> noisy = noisy_element_with(math, x, logit, eps, p);
  const E alpha = noisy.alpha;
  E kl;
  if (p.prior == Prior::LogUniform) {
    kl = -math.log(kl_ratio(alpha, p));
  } else {
    const E d = log_x_minus_mu(math, x, p);
    kl = rn_add(rn_mul_sub(squares(d, alpha), E(p.half_inv_sigma2), math.log(alpha)),
                E(p.log_sigma - S(0.5)));
  }
  if (p.mask_inactive) kl = select(x == E(S(0)), E(S(0)), kl);
  return {noisy.z, kl};
}

// -(log r[0] + ... + log r[V - 1]) for positive r (the log-uniform KL of a step's elements, r =
// alpha / cap or 1 for an element left out), as one log of the product where the product is a
// normal float, else term by term: one log per step in place of V (each a special-function
// instruction on CUDA threads).  r <= 1 up to rounding (alpha <= cap), so the product is normal
// exactly where no partial product underflowed (r >= sigmoid(-80) = 2^-115.4 in the kernels'
// range: two such r already do); the test also sends NaN term by term.
// Error of the product's log (float r): V - 1 roundings of 2^-24 relative, (V - 1) 2^-24 absolute
// in the sum (2^-21.2 for V = 8), against V logs of 2^-22 each (DeviceMath's log near 1) term by
// term.
template <class Math, int V, class E>
INFODROP_HD E minus_log_of_product(Math& math, const E (&r)[V]) {
  static_assert(std::is_same<E, float>::value, "float ratios (the kernels' DeviceMath path)");
  E product = r[0];
  INFODROP_UNROLL
  for (int k = 1; k < V; ++k) product = rn_mul(product, r[k]);
  if (product >= 0x1p-126f) return -math.log(product);  // the least normal float
  E sum = -math.log(r[0]);
  INFODROP_UNROLL
  for (int k = 1; k < V; ++k) sum -= math.log(r[k]);
  return sum;
}

template <class E, class S>
INFODROP_HD ForwardOut<E> forward_element(E x, E logit, E eps, const Params<S>& p) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) {
    DeviceMath device;
    if (device_in_range(logit)) return forward_element_with(device, x, logit, eps, p);
    eps = natural_eps(device, eps);  // the kernels' eps is in DeviceMath's unit
  }
#endif
  if constexpr (kHasInRangeMath<E>) {
    InRangeMath<E> fast;
    const ForwardOut<E> out = forward_element_with(fast, x, logit, eps, p);
    if (!any_(fast.outside)) return out;
  }
  IeeeMath<E> ieee;
  return forward_element_with(ieee, x, logit, eps, p);
}

// Gradients of one element.  dmu and dsigma are d kl / d mu and d kl / d sigma of this element,
// not yet weighted by the sample's grad_kl (the caller sums them over the sample first).
template <class E>
struct BackwardOut {
  E grad_x, grad_logit, dmu, dsigma;
};

template <class Math, class E, class S>
INFODROP_HD BackwardOut<E> backward_element_with(Math& math, E grad_z, E grad_kl, E x, E logit,
                                                 E eps, const Params<S>& p) {
  const E zero(S(0));
  E s, one_minus_s;
  math.sigmoid(logit, s, one_minus_s);
  const E alpha = alpha_of(s, p);
  E grad_x = grad_z, grad_alpha = zero, n = E(S(1));
  if (p.apply_noise) {
    n = noise_factor(math, log_noise_of(math, alpha, eps, p));
    const E natural = natural_eps(math, eps);
    const E dlog_noise = p.unit_mean ? natural - alpha : natural;  // d log n / d alpha
    grad_x = rn_mul(grad_z, n);
    grad_alpha = rn_mul(grad_z * x * n, dlog_noise);
  }
  const E inv_alpha = math.inverse(alpha);
  E dkl_dalpha, dkl_dx = zero, dmu = zero, dsigma = zero;
  if (p.prior == Prior::LogUniform) {
    dkl_dalpha = -inv_alpha;
  } else {
    const E d = log_x_minus_mu(math, x, p);
    dkl_dalpha = rn_mul_sub(alpha, E(p.inv_sigma2), inv_alpha);
    dkl_dx = select(x > E(S(kXFloor)), d * E(p.inv_sigma2) / x, zero);
    dmu = -d * E(p.inv_sigma2);
    dsigma = rn_sub_mul(E(p.inv_sigma), squares(d, alpha), E(p.inv_sigma3));
  }
  if (p.mask_inactive) {
    const auto inactive = x == zero;
    dkl_dalpha = select(inactive, zero, dkl_dalpha);
    dkl_dx = select(inactive, zero, dkl_dx);
    dmu = select(inactive, zero, dmu);
    dsigma = select(inactive, zero, dsigma);
  }
  grad_x = plus_kl_term(grad_x, grad_z, n, grad_kl, dkl_dx);
  grad_alpha = rn_add_mul(grad_alpha, grad_kl, dkl_dalpha);
  return {grad_x, grad_alpha * E(p.max_alpha) * s * one_minus_s, dmu, dsigma};
}

template <class E, class S>
INFODROP_HD BackwardOut<E> backward_element(E grad_z, E grad_kl, E x, E logit, E eps,
                                            const Params<S>& p) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<E, float>::value) {
    DeviceMath device;
    if (device_in_range(logit)) return backward_element_with(device, grad_z, grad_kl, x, logit, eps, p);
    eps = natural_eps(device, eps);  // the kernels' eps is in DeviceMath's unit
  }
#endif
  if constexpr (kHasInRangeMath<E>) {
    InRangeMath<E> fast;
    const BackwardOut<E> out = backward_element_with(fast, grad_z, grad_kl, x, logit, eps, p);
    if (!any_(fast.outside)) return out;
  }
  IeeeMath<E> ieee;
  return backward_element_with(ieee, grad_z, grad_kl, x, logit, eps, p);
}

// ---- the elements of a CUDA thread's step --------------------------------------------------
//
// The contiguous kernels' steps (V consecutive elements) and the channels-last kernels' tiles (4
// positions of 1 or 2 channels, whose elements straddle Philox groups where S % 4 != 0) group
// different elements, so which math an element takes is decided per element: DeviceMath where
// device_in_range(its logit), else the IEEE path.  The one range test per step (true exactly
// where every element's is) only lets the steps whose logits are all in range, nearly all, skip
// the per-element tests and fold the options.  A step with a logit outside tests each element
// (forward_element) with the options as run-time values; its in-range elements still give the
// bits they give in an all-in-range step of the other layout, because every multiply-add of the
// element math rounds where it is written (the rn_* helpers), not where nvcc's contraction, which
// the folding would change, puts it.

// fast(math, q) for a step or tile of V elements where the step's one range test holds on CUDA
// threads (DeviceMath, q = p with the options folded into constants), else each(), which takes
// every element by its own test and path (forward_element / backward_element).
template <int V, class S, class Fast, class Each>
INFODROP_HD void for_step_elements(const S (&logit)[V], const Params<S>& p, Fast&& fast,
                                   Each&& each) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same<S, float>::value) {
    if (device_in_range(logit)) {
      with_options_known(p, [&](const Params<float>& q) INFODROP_INLINE_LAMBDA {
        DeviceMath device;
        fast(device, q);
      });
      return;
    }
  }
#endif
  each();
}

// The sum of v over a step's elements where `whole`, else over those k where counted(k): one
// branch for a whole step, not one test per element (the compiler kept the per-element bounds
// checks on whole steps when the sum was written as `whole || counted(k)`).
template <int V, class S, class Counted>
INFODROP_HD S counted_sum(const S (&v)[V], bool whole, Counted&& counted) {
  S sum = S(0);
  if (whole) {
    INFODROP_UNROLL
    for (int k = 0; k < V; ++k) sum += v[k];
  } else {
    INFODROP_UNROLL
    for (int k = 0; k < V; ++k)
      if (counted(k)) sum += v[k];
  }
  return sum;
}

// forward_element of V elements (a step's or a tile's), one range test for the whole step: z,
// and the KL summed over the step's elements where `whole`, else over those k where counted(k)
// (the elements in the sample).  Under the log-uniform prior the fast path takes one log of the
// product of the elements' alpha / cap (minus_log_of_product).
template <int V, class S, class Counted>
INFODROP_HD S forward_step(const S (&x)[V], const S (&logit)[V], const float (&eps)[V],
                           const Params<S>& p, S (&z)[V], bool whole, Counted&& counted) {
  S kl_sum, kl[V];
  const auto keep = [&](int k, const ForwardOut<S>& out) INFODROP_INLINE_LAMBDA {
    z[k] = out.z;
    kl[k] = out.kl;
  };
  for_step_elements(
      logit, p,
      [&](auto& math, const Params<S>& q) INFODROP_INLINE_LAMBDA {
        if (q.prior == Prior::LogUniform) {
          S ratio[V];
          INFODROP_UNROLL
          for (int k = 0; k < V; ++k) {
            const NoisyOut<S> out =
                noisy_element_with(math, x[k], logit[k], static_cast<S>(eps[k]), q);
            z[k] = out.z;
            ratio[k] = q.mask_inactive && x[k] == S(0) ? S(1) : kl_ratio(out.alpha, q);
          }
          if (!whole) {  // one branch for a whole step (counted_sum)
            INFODROP_UNROLL
            for (int k = 0; k < V; ++k)
              if (!counted(k)) ratio[k] = S(1);
          }
          kl_sum = minus_log_of_product(math, ratio);
        } else {
          INFODROP_UNROLL
          for (int k = 0; k < V; ++k)
            keep(k, forward_element_with(math, x[k], logit[k], static_cast<S>(eps[k]), q));
          kl_sum = counted_sum(kl, whole, counted);
        }
      },
      [&]() INFODROP_INLINE_LAMBDA {
        INFODROP_UNROLL
        for (int k = 0; k < V; ++k)
          keep(k, forward_element(x[k], logit[k], static_cast<S>(eps[k]), p));
        kl_sum = counted_sum(kl, whole, counted);
      });
  return kl_sum;
}

// backward_element of V elements, the same way.
template <int V, class S>
INFODROP_HD void backward_step(const S (&grad_z)[V], S grad_kl, const S (&x)[V],
                               const S (&logit)[V], const float (&eps)[V], const Params<S>& p,
                               S (&grad_x)[V], S (&grad_logit)[V], S (&dmu)[V], S (&dsigma)[V]) {
  const auto keep = [&](int k, const BackwardOut<S>& out) INFODROP_INLINE_LAMBDA {
    grad_x[k] = out.grad_x;
    grad_logit[k] = out.grad_logit;
    dmu[k] = out.dmu;
    dsigma[k] = out.dsigma;
  };
  for_step_elements(
      logit, p,
      [&](auto& math, const Params<S>& q) INFODROP_INLINE_LAMBDA {
        INFODROP_UNROLL
        for (int k = 0; k < V; ++k)
          keep(k, backward_element_with(math, grad_z[k], grad_kl, x[k], logit[k],
                                        static_cast<S>(eps[k]), q));
      },
      [&]() INFODROP_INLINE_LAMBDA {
        INFODROP_UNROLL
        for (int k = 0; k < V; ++k)
          keep(k, backward_element(grad_z[k], grad_kl, x[k], logit[k], static_cast<S>(eps[k]), p));
      });
}

}  // namespace infodrop
