"""Triton kernels of the infodrop ops: the math of docs/spec.md sections 1 and 3 re-expressed in
Triton (the C++/CUDA backends share csrc/infodrop/elementwise.h; Triton cannot include it).

Each program belongs to one sample (program id = sample * blocks + block), so the per-sample
sums are one partial per program, summed by the caller in a fixed order (deterministic), and
walks its sample in place in one of the two layouts of infodrop/_layout.py:
- channels-first: GROUPS Philox groups of 4 consecutive logical elements as a [GROUPS, 4]
  tile (4 consecutive addresses per group);
- channels-last: a [4, GROUPS / CHANNEL_BLOCK, CHANNEL_BLOCK] tile: for CHANNEL_BLOCK
  consecutive channels, the groups of 4 logically consecutive positions of each channel (C
  elements apart in memory), so that one Philox call still serves four elements while the
  threads of a warp touch neighbouring channels, i.e. neighbouring addresses.  A group that
  straddles two channels is drawn by both (the same numbers: the noise is a function of the
  logical index), one partial group per channel.

The noise is the exact stream of docs/spec.md section 3 (Philox4x32-10 written with tl.umulhi, not
tl.randn, whose stream differs), in float32; backends agree to float32 rounding, not bit for
bit.  exp, log, sin, cos, the sigmoid and Box-Muller's log and square root are those of
device_math.py: float32 on the special-function unit as in csrc/infodrop/device_math.h when
compiled for a GPU, exact under TRITON_INTERPRET=1.
"""

import triton
import triton.language as tl

from .. import _spec
from .device_math import (
    box_muller,
    log,
    log_noise_of,
    log_uniform_kl,
    natural_eps,
    noise_factor,
    sigmoid_pair,
)

# The spec's constants (infodrop/_spec.py).  A @jit function may read a module global only
# when it is a tl.constexpr *instance*: an annotated int (`PHILOX_M0: tl.constexpr = ...`) runs
# under TRITON_INTERPRET=1 but is a NameError when compiled for a GPU
# (tests/test_triton_aot.py compiles them).
PHILOX_M0 = tl.constexpr(_spec.PHILOX_M0)
PHILOX_M1 = tl.constexpr(_spec.PHILOX_M1)
PHILOX_W0 = tl.constexpr(_spec.PHILOX_W0)
PHILOX_W1 = tl.constexpr(_spec.PHILOX_W1)
X_FLOOR = tl.constexpr(_spec.X_FLOOR)  # floor of x inside log x (the authors' code)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, PHILOX_M0)
        lo0 = c0 * PHILOX_M0
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo1 = c2 * PHILOX_M1
        c0 = hi1 ^ c1 ^ k0
        c1 = lo1
        c2 = hi0 ^ c3 ^ k1
        c3 = lo0
        k0 = k0 + PHILOX_W0
        k1 = k1 + PHILOX_W1
    return c0, c1, c2, c3


@triton.jit
def noise_tile(groups, lane, seed_ptr, offset_lo, offset_hi, CHANNELS_LAST: tl.constexpr,
               NATURAL: tl.constexpr):
    """eps of the elements 4 g + lane of the int64 group indices g (in powers of 2 on MUFU unless
    NATURAL: the float32 kernels' noise, device_math.log_noise_of): `groups` is [G] for a
    channels-first tile ([G, 4] with `lane` [1, 4]), [K, C] for a channels-last one ([4, K, C],
    `lane` [4, 1, 1]).  One Philox call per group serves its four lanes; it runs on the
    unexpanded groups (an expanded [G, 1] tensor would be replicated across the lanes'
    registers and the Philox rounds with it)."""
    seed = tl.load(seed_ptr)
    zero = tl.zeros(groups.shape, tl.uint32)
    r0, r1, r2, r3 = philox4x32_10(groups.to(tl.uint32), (groups >> 32).to(tl.uint32),
                                   zero + offset_lo.to(tl.uint32), zero + offset_hi.to(tl.uint32),
                                   seed.to(tl.uint32), (seed >> 32).to(tl.uint32))
    e0, e1 = box_muller(r0, r1, NATURAL)
    e2, e3 = box_muller(r2, r3, NATURAL)
    if CHANNELS_LAST:
        e0, e1, e2, e3 = e0[None, :, :], e1[None, :, :], e2[None, :, :], e3[None, :, :]
    else:
        e0, e1, e2, e3 = e0[:, None], e1[:, None], e2[:, None], e3[:, None]
    return tl.where(lane == 0, e0, tl.where(lane == 1, e1, tl.where(lane == 2, e2, e3)))


@triton.jit
def to_compute(v, FLOAT64: tl.constexpr):
    """float64 math for float64 tensors, float32 for the others (docs/spec.md section 4)."""
    if FLOAT64:
        return v.to(tl.float64)
    elif v.dtype == tl.bfloat16:
        # float's high half: one shift, where triton 3.6 converts with more
        return (v.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return v.to(tl.float32)


@triton.jit
def log_x_minus_mu(x, mu):
    # tl.log, not device_math's lg2: with lg2 here, triton 3.6 spilled 12 bytes in the float32
    # log-normal forward with the flags off on sm_90 (the log-uniform main path is unaffected)
    return tl.log(tl.where(x > X_FLOOR, x, X_FLOOR)) - mu


@triton.jit
def channels_first_tile(GROUPS: tl.constexpr, ALIGNED: tl.constexpr, per_sample,
                        blocks_per_sample):
    """This program's sample, its [GROUPS] group indices and [1, 4] lanes, the base of the
    offsets (0) and the memory offsets (= logical indices, int64) and mask of the [GROUPS, 4]
    elements.  int64 offsets, not the sample's begin plus i32 offsets within it: the i32 form
    counted 167.8 instead of 154.2 instructions per element in the float32 forward (sm_90) and
    made the float32 log-normal backward spill on sm_80.  ALIGNED (per_sample % 4 == 0, nearly
    every CNN activation): no group straddles a sample's edge, so the mask is one per group,
    which shows Triton that each group's 4 elements are loaded and stored together (16-byte
    accesses for float32); otherwise the mask is per element from the sample's bounds, and the
    accesses scalar."""
    pid = tl.program_id(0)
    sample = pid // blocks_per_sample
    begin = sample.to(tl.int64) * per_sample
    groups = begin // 4 + (pid % blocks_per_sample).to(tl.int64) * GROUPS + tl.arange(0, GROUPS)
    lane = tl.arange(0, 4)[None, :]
    index = groups[:, None] * 4 + lane
    if ALIGNED:
        # the groups begin at the sample's first: only its end needs a test
        mask = tl.broadcast_to((groups < (begin + per_sample) // 4)[:, None], (GROUPS, 4))
    else:
        mask = (index >= begin) & (index < begin + per_sample)
    return pid, sample, groups, lane, 0, index, mask


@triton.jit
def channels_last_tile(GROUPS: tl.constexpr, CHANNEL_BLOCK: tl.constexpr, per_sample,
                       blocks_per_sample, channels, positions):
    """As channels_first_tile for a channels-last sample: [GROUPS / CHANNEL_BLOCK,
    CHANNEL_BLOCK] groups, [4, 1, 1] lanes; element (lane, k, c) is the logical element
    4 (first_c // 4 + k) + lane, first_c = begin + c * positions being channel c's position 0,
    at offset s * channels + c within the sample for its position s (in the width of the size
    arguments, i32 unless a size reaches 2**31: int64 offsets made this tile spill on sm_80).
    The blocks of a sample run over channel blocks first (neighbouring programs read
    neighbouring addresses)."""
    pid = tl.program_id(0)
    sample = pid // blocks_per_sample
    block = pid % blocks_per_sample
    channel_blocks = tl.cdiv(channels, CHANNEL_BLOCK)
    begin = sample.to(tl.int64) * per_sample
    c = (block % channel_blocks) * CHANNEL_BLOCK + tl.arange(0, CHANNEL_BLOCK)
    k = (block // channel_blocks) * (GROUPS // CHANNEL_BLOCK) + tl.arange(0, GROUPS // CHANNEL_BLOCK)
    first = begin + c.to(tl.int64) * positions
    groups = (first // 4)[None, :] + k.to(tl.int64)[:, None]
    lane = tl.arange(0, 4)[:, None, None]
    s = k[None, :, None] * 4 + lane - (first % 4).to(k.dtype)[None, None, :]
    offsets = s * channels + c[None, None, :]
    mask = (s >= 0) & (s < positions) & (c < channels)[None, None, :]
    return pid, sample, groups, lane, begin, offsets, mask


@triton.jit
def sample_tile(GROUPS: tl.constexpr, CHANNEL_BLOCK: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                ALIGNED: tl.constexpr, per_sample, blocks_per_sample, channels, positions):
    if CHANNELS_LAST:
        return channels_last_tile(GROUPS, CHANNEL_BLOCK, per_sample, blocks_per_sample, channels,
                                  positions)
    else:
        return channels_first_tile(GROUPS, ALIGNED, per_sample, blocks_per_sample)


# Sizes and offsets are not specialised on their values (Triton would recompile for each value
# of 1 and each divisibility by 16, and turn 1 into a constant without .to()).  MAX_ALPHA and
# ALPHA_MIN are constexpr: Triton passes a Python float argument as fp32, which would round them
# for float64 inputs; a constexpr takes the compute dtype exactly (one compile per layer setting).
_SIZES = ["offset_lo", "offset_hi", "per_sample", "blocks_per_sample", "channels", "positions"]


@triton.jit(do_not_specialize=_SIZES)
def forward_kernel(x_ptr, logit_ptr, z_ptr, kl_partials_ptr, seed_ptr, offset_lo, offset_hi,
                   mu_ptr, sigma_ptr, per_sample, blocks_per_sample, channels, positions,
                   MAX_ALPHA: tl.constexpr, ALPHA_MIN: tl.constexpr, FLOAT64: tl.constexpr,
                   LOG_NORMAL: tl.constexpr, MASK_INACTIVE: tl.constexpr,
                   UNIT_MEAN: tl.constexpr, APPLY_NOISE: tl.constexpr,
                   CHANNELS_LAST: tl.constexpr, ALIGNED: tl.constexpr, GROUPS: tl.constexpr,
                   CHANNEL_BLOCK: tl.constexpr):
    pid, sample, groups, lane, begin, offsets, mask = sample_tile(
        GROUPS, CHANNEL_BLOCK, CHANNELS_LAST, ALIGNED, per_sample, blocks_per_sample, channels,
        positions)
    x = to_compute(tl.load(x_ptr + begin + offsets, mask=mask, other=0), FLOAT64)
    logit = to_compute(tl.load(logit_ptr + begin + offsets, mask=mask, other=0), FLOAT64)
    s, one_minus_s = sigmoid_pair(logit)
    alpha = ALPHA_MIN + MAX_ALPHA * s
    z = x
    if APPLY_NOISE:
        eps = to_compute(noise_tile(groups, lane, seed_ptr, offset_lo, offset_hi, CHANNELS_LAST,
                                    FLOAT64), FLOAT64)
        z = x * noise_factor(log_noise_of(alpha, eps, UNIT_MEAN))
    if LOG_NORMAL:
        mu = to_compute(tl.load(mu_ptr), FLOAT64)
        sigma = to_compute(tl.load(sigma_ptr), FLOAT64)
        d = log_x_minus_mu(x, mu)
        kl = (d * d + alpha * alpha) / (2.0 * sigma * sigma) - log(alpha / sigma) - 0.5
    else:
        kl = log_uniform_kl(alpha, ALPHA_MIN + MAX_ALPHA)
    if MASK_INACTIVE:
        kl = tl.where(x == 0, 0.0, kl)
    tl.store(z_ptr + begin + offsets, z.to(z_ptr.dtype.element_ty), mask=mask)
    tl.store(kl_partials_ptr + pid, tl.sum(tl.where(mask, kl, 0.0)))


@triton.jit(do_not_specialize=_SIZES + ["grad_kl_stride"])
def backward_kernel(grad_z_ptr, grad_kl_ptr, grad_kl_stride, x_ptr, logit_ptr, grad_x_ptr,
                    grad_logit_ptr, prior_partials_ptr, grad_mu_ptr, grad_sigma_ptr, seed_ptr, offset_lo,
                    offset_hi, mu_ptr, sigma_ptr, per_sample, blocks_per_sample, channels,
                    positions, MAX_ALPHA: tl.constexpr, ALPHA_MIN: tl.constexpr,
                    FLOAT64: tl.constexpr, LOG_NORMAL: tl.constexpr, MASK_INACTIVE: tl.constexpr,
                    UNIT_MEAN: tl.constexpr, APPLY_NOISE: tl.constexpr,
                    CHANNELS_LAST: tl.constexpr, ALIGNED: tl.constexpr, GROUPS: tl.constexpr,
                    CHANNEL_BLOCK: tl.constexpr):
    """grad_x and grad_logit; with the log-normal prior, per program grad_kl[b] * (sum of
    d kl / d mu, sum of d kl / d sigma) in prior_partials (prior_grads_kernel sums them), with
    the log-uniform prior the zero gradients of mu and sigma, written by program 0 (no separate
    fill kernels)."""
    pid, sample, groups, lane, begin, offsets, mask = sample_tile(
        GROUPS, CHANNEL_BLOCK, CHANNELS_LAST, ALIGNED, per_sample, blocks_per_sample, channels,
        positions)
    grad_z = to_compute(tl.load(grad_z_ptr + begin + offsets, mask=mask, other=0), FLOAT64)
    x = to_compute(tl.load(x_ptr + begin + offsets, mask=mask, other=0), FLOAT64)
    logit = to_compute(tl.load(logit_ptr + begin + offsets, mask=mask, other=0), FLOAT64)
    grad_kl = to_compute(tl.load(grad_kl_ptr + sample * grad_kl_stride), FLOAT64)
    s, one_minus_s = sigmoid_pair(logit)
    alpha = ALPHA_MIN + MAX_ALPHA * s
    grad_x = grad_z
    grad_alpha = tl.zeros_like(x)
    if APPLY_NOISE:
        eps = to_compute(noise_tile(groups, lane, seed_ptr, offset_lo, offset_hi, CHANNELS_LAST,
                                    FLOAT64), FLOAT64)
        dlog_noise = natural_eps(eps)  # d log n / d alpha
        if UNIT_MEAN:
            dlog_noise = dlog_noise - alpha
        n = noise_factor(log_noise_of(alpha, eps, UNIT_MEAN))
        grad_x = grad_z * n
        grad_alpha = grad_z * x * n * dlog_noise
    inactive = x == 0
    if LOG_NORMAL:
        mu = to_compute(tl.load(mu_ptr), FLOAT64)
        sigma = to_compute(tl.load(sigma_ptr), FLOAT64)
        inv_sigma2 = 1.0 / (sigma * sigma)
        d = log_x_minus_mu(x, mu)
        dkl_dalpha = alpha * inv_sigma2 - 1.0 / alpha
        above_floor = x > X_FLOOR
        dkl_dx = tl.where(above_floor, d * inv_sigma2 / tl.where(above_floor, x, 1.0), 0.0)
        dmu = -d * inv_sigma2
        dsigma = 1.0 / sigma - (d * d + alpha * alpha) * inv_sigma2 / sigma
        if MASK_INACTIVE:
            dkl_dx = tl.where(inactive, 0.0, dkl_dx)
            dmu = tl.where(inactive, 0.0, dmu)
            dsigma = tl.where(inactive, 0.0, dsigma)
        grad_x = grad_x + grad_kl * dkl_dx
        sums_ptr = prior_partials_ptr + 2 * pid
        tl.store(sums_ptr, grad_kl * tl.sum(tl.where(mask, dmu, 0.0)))
        tl.store(sums_ptr + 1, grad_kl * tl.sum(tl.where(mask, dsigma, 0.0)))
    else:
        dkl_dalpha = -1.0 / alpha
        tl.store(grad_mu_ptr, 0.0, mask=pid == 0)
        tl.store(grad_sigma_ptr, 0.0, mask=pid == 0)
    if MASK_INACTIVE:
        dkl_dalpha = tl.where(inactive, 0.0, dkl_dalpha)
    grad_alpha = grad_alpha + grad_kl * dkl_dalpha
    grad_logit = grad_alpha * MAX_ALPHA * s * one_minus_s
    tl.store(grad_x_ptr + begin + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_logit_ptr + begin + offsets, grad_logit.to(grad_logit_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["programs"])
def prior_grads_kernel(prior_partials_ptr, programs, grad_mu_ptr, grad_sigma_ptr,
                       BLOCK: tl.constexpr):
    """grad_mu and grad_sigma: the sums of the backward programs' partials, in one program and
    a fixed order (deterministic), each written to its own tensor."""
    acc_mu = tl.zeros([BLOCK], prior_partials_ptr.dtype.element_ty)
    acc_sigma = tl.zeros([BLOCK], prior_partials_ptr.dtype.element_ty)
    # A while loop, not range(0, programs, BLOCK): triton 3.6's interpreter (torch 2.11's)
    # cannot turn a scalar argument into a Python int for range(), but can test it.
    start = 0
    while start < programs:
        i = start + tl.arange(0, BLOCK)
        acc_mu += tl.load(prior_partials_ptr + 2 * i, mask=i < programs, other=0)
        acc_sigma += tl.load(prior_partials_ptr + 2 * i + 1, mask=i < programs, other=0)
        start += BLOCK
    tl.store(grad_mu_ptr, tl.sum(acc_mu).to(grad_mu_ptr.dtype.element_ty))
    tl.store(grad_sigma_ptr, tl.sum(acc_sigma).to(grad_sigma_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["n", "first_group", "head", "offset_lo", "offset_hi"])
def noise_kernel(out_ptr, n, first_group, head, seed_ptr, offset_lo, offset_hi,
                 GROUPS: tl.constexpr):
    """out[j] = eps at stream index 4 * first_group + head + j, j < n."""
    groups = first_group + tl.program_id(0).to(tl.int64) * GROUPS + tl.arange(0, GROUPS)
    j = (groups[:, None] - first_group) * 4 + tl.arange(0, 4)[None, :] - head
    eps = noise_tile(groups, tl.arange(0, 4)[None, :], seed_ptr, offset_lo, offset_hi, False,
                     True)
    tl.store(out_ptr + j, eps, mask=(j >= 0) & (j < n))
