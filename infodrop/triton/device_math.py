"""The Triton kernels' float32 transcendental functions on the special-function unit (MUFU):
the approximations, constants and argument reductions of csrc/infodrop/device_math.h, as
inline PTX, so that both GPU backends share one error analysis (the bounds are stated and
derived there, and measured against float64 on a GPU by tests/test_device_math.py for CUDA and
tests/test_triton_device_math.py for these).  Issue 19: with libdevice's sin/cos and the
polynomial log, the float32 forward issued about 153 instructions per element on sm_90.

Under TRITON_INTERPRET=1 inline PTX cannot run: MUFU is then false and every function here is
the exact one it replaces (tl.exp, tl.log, tl.sqrt_rn, libdevice's sin/cos, the polynomial
log of Box-Muller), which the CPU numerics tests check.  float64 values always take the exact
functions (the PTX instructions are float32 only).
"""

import struct

import triton
import triton.language as tl
from triton import knobs

# True when @triton.jit compiles for a GPU (the decision it takes when it decorates, from the
# same setting): under TRITON_INTERPRET=1 it makes interpreter functions, which run on the CPU.
MUFU = tl.constexpr(not knobs.runtime.interpret)

LN2 = tl.constexpr(0.693147182464599609375)  # ln 2 rounded to float32 (device_math.h kLn2)


def _f32(x: float) -> float:
    """x rounded to float32 (no numpy: the package needs torch and triton alone)."""
    return struct.unpack("f", struct.pack("f", x))[0]


LOG2E = tl.constexpr(1.44269504088896341)
HALF_LOG2E = tl.constexpr(0.5 * 1.4426950408889634)  # alpha^2 / 2 in powers of 2
TWO_LOG2E = tl.constexpr(_f32(2.0 * 1.4426950408889634))  # -2 ln 2 (log2 e)^2
TWO_PI = tl.constexpr(6.28318530717958647692)
# 2 pi 2^-24: float32(2 pi) scaled by a power of two, as device_math.h's kTwoPi * 2^-24
TWO_PI_HALF_ULP = tl.constexpr(6.28318530717958647692 * 5.9604644775390625e-8)
ONE_MINUS_HALF_ULP = tl.constexpr(0.99999994039535522)  # 1 - 2^-24, exact in float32

# P(v) ~ -log(1 - v) / v of minus_two_log_uniform, highest degree first: the coefficients of
# device_math.h, written there and copied here (tests/test_triton_device_math.py checks that
# the two copies are equal, and tests/test_device_math.py bounds the polynomial's error).
LOG_UNIFORM_POLY = (0.7997335791587830, 0.2133045196533203, 0.5316225886344910,
                    0.6643252372741699, 1.0000623464584351, 1.9999997615814209)
P5, P4, P3, P2, P1, P0 = (tl.constexpr(c) for c in LOG_UNIFORM_POLY)
# The same times (log2 e)^2, each float32 coefficient scaled in double and rounded once, as
# device_math.h's `scaled` (the noise in powers of 2: noise_tile's NATURAL false)
LOG2E_SQUARED = 2.0813689810056077
LOG_UNIFORM_POLY_LOG2 = tuple(_f32(_f32(c) * LOG2E_SQUARED) for c in LOG_UNIFORM_POLY)
Q5, Q4, Q3, Q2, Q1, Q0 = (tl.constexpr(c) for c in LOG_UNIFORM_POLY_LOG2)


# ---- the instructions (device_math.h states each one's bound) --------------------------------

@triton.jit
def mufu(x, ASM: tl.constexpr):
    """The one float32 PTX instruction ASM ("ex2.approx.ftz.f32 $0, $1;" and its kin) on x."""
    return tl.inline_asm_elementwise(ASM, "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def ex2(x):
    return mufu(x, "ex2.approx.ftz.f32 $0, $1;")


@triton.jit
def lg2(x):
    return mufu(x, "lg2.approx.ftz.f32 $0, $1;")


@triton.jit
def rcp(x):
    return mufu(x, "rcp.approx.ftz.f32 $0, $1;")


@triton.jit
def rsqrt(x):
    return mufu(x, "rsqrt.approx.ftz.f32 $0, $1;")


@triton.jit
def sin(x):
    return mufu(x, "sin.approx.ftz.f32 $0, $1;")


@triton.jit
def cos(x):
    return mufu(x, "cos.approx.ftz.f32 $0, $1;")


# ---- the functions of the kernels ------------------------------------------------------------

# The noise in powers of 2 (device_math.h box_muller<true>, elementwise.h kNoiseInLog2): where
# MUFU computes float32, eps comes as eps log2 e, so that the noise factor is one ex2 of
# alpha eps log2 e (- alpha^2 log2 e / 2), no multiply by log2 e and no exp correction.

@triton.jit
def log_noise_of(alpha, eps, UNIT_MEAN: tl.constexpr):
    """alpha eps (- alpha^2 / 2): log n, in eps's unit (log2 e where MUFU computes float32)."""
    log_noise = alpha * eps
    if UNIT_MEAN:
        if MUFU and alpha.dtype == tl.float32:
            log_noise = log_noise - (HALF_LOG2E * alpha) * alpha
        else:
            log_noise = log_noise - 0.5 * alpha * alpha
    return log_noise


@triton.jit
def noise_factor(log_noise):
    """n = e^log n from log_noise_of: 2^(log n log2 e) by one ex2 (within 2^-22 of 2^y for the
    float y it is given) where MUFU computes float32."""
    if MUFU and log_noise.dtype == tl.float32:
        return ex2(log_noise)
    else:
        return tl.exp(log_noise)


@triton.jit
def natural_eps(eps):
    """eps in natural units (the backward's d log n / d alpha)."""
    if MUFU and eps.dtype == tl.float32:
        return eps * LN2
    else:
        return eps


@triton.jit
def log_uniform_kl(alpha, CAP: tl.constexpr):
    """-log(alpha / CAP), the log-uniform KL, as the CUDA kernels: `log` of alpha times 1 / CAP
    (a constant: no division), whose product is near 1 where the KL is near 0 (lg2's absolute
    bound there, at any cap) and normal wherever alpha is not 0."""
    if MUFU and alpha.dtype == tl.float32:
        return -log(alpha * (1.0 / CAP))
    else:
        return -tl.log(alpha / CAP)


@triton.jit
def sigmoid_pair(v):
    """sigmoid(v) and 1 - sigmoid(v), without overflow or cancellation: device_math.h sigmoid
    on -|v| (relative errors <= 2^-20.4 and 2^-20.3), |v| held to 100 with NaN kept (for
    |v| > 87.3 exp(-|v|) flushes to 0: sigmoid(v) is 0 there, as torch.sigmoid's is from
    88.7 on, between the two it is a subnormal).  Exact functions: sigmoid is 0 where exp(-v)
    = 1 / e overflows, as 1 / (1 + exp(-v)) (torch.sigmoid, the reference) is: with ALPHA_MIN
    = 0 the KL is then inf where the reference's is (csrc/infodrop/fastmath.h)."""
    positive = v >= 0
    if MUFU and v.dtype == tl.float32:
        t = -tl.minimum(tl.abs(v), 100.0, propagate_nan=tl.PropagateNan.ALL)
        a = t * LOG2E
        e = ex2(a)
        e = tl.fma(e, tl.fma(a, -LN2, t), e)  # exp_finite: 2^a (1 + r) in one FMA
        large = rcp(1.0 + e)
        small = e * large
        return tl.where(positive, large, small), tl.where(positive, small, large)
    else:
        e = tl.exp(-tl.abs(v))
        large = 1.0 / (1.0 + e)
        small = e * large
        s = tl.where((v < 0) & (1.0 / e == float("inf")), 0.0, tl.where(positive, large, small))
        return s, tl.where(positive, small, large)


@triton.jit
def log(x):
    """device_math.h log: lg2(x) ln 2, 2^-22.2 absolute in [0.5, 2], 2^-21.7 relative
    elsewhere, for positive normal x (the KL's logs: their arguments carry a rounding of the
    same absolute size already)."""
    if MUFU and x.dtype == tl.float32:
        return lg2(x) * LN2
    else:
        return tl.log(x)


@triton.jit
def uniform(r):
    # (r >> 9) * 2^-23 + 2^-24: exact in float32, in (0, 1), never 0 or 1
    return (r >> 9).to(tl.float32) * 1.1920928955078125e-07 + 5.9604644775390625e-08


@triton.jit
def log_normal_f32(x):
    """log of a normal float32 x > 0, relative error below 2^-20 also near x = 1, where a
    log2-based hardware approximation (which tl.log may lower to) has only an absolute bound:
    there -log(u) is tiny and must stay >= 0 for the square root of Box-Muller.  The mantissa
    is folded into [sqrt(1/2), sqrt(2)) and Cephes' polynomial applied, as in
    csrc/infodrop/fastmath.h."""
    bits = x.to(tl.uint32, bitcast=True)
    m = ((bits & 0x007FFFFF) | 0x3F000000).to(tl.float32, bitcast=True)
    below = m < 0.70710678118654752
    f = tl.where(below, m + m, m) - 1.0
    e = ((bits >> 23).to(tl.int32) - 126).to(tl.float32) - tl.where(below, 1.0, 0.0)
    z = f * f
    p = 7.0376836292e-2
    p = p * f - 1.1514610310e-1
    p = p * f + 1.1676998740e-1
    p = p * f - 1.2420140846e-1
    p = p * f + 1.4249322787e-1
    p = p * f - 1.6668057665e-1
    p = p * f + 2.0000714765e-1
    p = p * f - 2.4999993993e-1
    p = p * f + 3.3333331174e-1
    # ln 2 = 0.693359375 - 2.12194440e-4, split so that e * ln 2 adds without rounding error
    return f + (f * z * p + e * -2.12194440e-4 - 0.5 * z) + e * 0.693359375


@triton.jit
def mantissa_from_bits(bits):
    """1 + (bits >> 9) 2^-23, built from the bits: the stream's uniform plus 1 - 2^-24."""
    return ((bits >> 9) | 0x3F800000).to(tl.float32, bitcast=True)


@triton.jit
def minus_two_log_uniform(u, NATURAL: tl.constexpr = True):
    """device_math.h minus_two_log_uniform: -2 log u for the stream's uniforms (times (log2 e)^2
    unless NATURAL), relative error <= 2^-20.9 (2^-20.8): lg2 where u <= 0.7, 2 v P(v) with
    v = 1 - u (exact) above."""
    v = 1.0 - u
    if NATURAL:
        c5, c4, c3, c2, c1, c0, to_log = P5, P4, P3, P2, P1, P0, -2.0 * LN2
    else:
        c5, c4, c3, c2, c1, c0, to_log = Q5, Q4, Q3, Q2, Q1, Q0, -TWO_LOG2E
    p = tl.fma(v, c5, c4)
    p = tl.fma(p, v, c3)
    p = tl.fma(p, v, c2)
    p = tl.fma(p, v, c1)
    p = tl.fma(p, v, c0)
    return tl.where(v > 0.3, lg2(u) * to_log, v * p)


@triton.jit
def radius_and_minus_radius(x):
    """sqrt(x) and -sqrt(x) as x rsqrt(x) and (-x) rsqrt(x) for x in [2^-24, 72] (device_math.h
    sqrt_of_normal; <= 2^-21.7 relative): Box-Muller's radius, and the same with the sign its
    cosine lane needs (below), taken by the multiply for free."""
    inv = rsqrt(x)
    return x * inv, (-x) * inv


@triton.jit
def sin_and_minus_cos_2pi(m):
    """sin(2 pi u) and -cos(2 pi u), u = m - (1 - 2^-24), as sin and cos of the angle
    2 pi ((1.5 - m) - 2^-24) = 2 pi (1/2 - u) in [-pi, pi] (1.5 - m exact), where sin.approx and
    cos.approx have their bounds (device_math.h sincos_2pi_from_mantissa, its angle negated,
    so that only the cosine needs a sign flip); <= 2^-20.6 absolute."""
    angle = tl.fma(1.5 - m, TWO_PI, -TWO_PI_HALF_ULP)
    return sin(angle), cos(angle)


@triton.jit
def box_muller(a, b, NATURAL: tl.constexpr = True):
    """eps of the even and odd element of one pair of Philox words (docs/spec.md section 3):
    sqrt(-2 log u1) times cos and sin of 2 pi u2.  MUFU: device_math.h box_muller, absolute
    error <= |eps| 2^-20.7 + sqrt(-2 log u1) 2^-20.6: the radius as x rsqrt(x), the angle
    2 pi (1/2 - u2) in [-pi, pi], where sin.approx and cos.approx have their bounds, the
    cosine's sign flipped for the shift by pi; eps log2 e unless NATURAL (log_noise_of)."""
    if MUFU:
        # The cosine's sign flip taken by its radius's multiply: a flip of eps after
        # noise_tile's lane selects cost an instruction per element (triton 3.8), and both
        # lanes' flips on one negative radius made triton 3.6 spill 8 bytes in one variant.
        rad, minus_rad = radius_and_minus_radius(
            minus_two_log_uniform(mantissa_from_bits(a) - ONE_MINUS_HALF_ULP, NATURAL))
        sin_t, minus_cos_t = sin_and_minus_cos_2pi(mantissa_from_bits(b))
        return minus_rad * minus_cos_t, rad * sin_t
    else:
        rad = tl.sqrt_rn(-2.0 * log_normal_f32(uniform(a)))
        # 2 pi u reduced to [-pi, pi) exactly (u - 1 is exact for u >= 1/2): sin and cos are
        # accurate there whatever the hardware's range reduction.
        u = uniform(b)
        theta = 6.283185307179586 * tl.where(u >= 0.5, u - 1.0, u)
        return rad * tl.cos(theta), rad * tl.sin(theta)
