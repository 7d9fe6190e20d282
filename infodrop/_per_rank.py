"""Per-rank noise (docs/spec.md section 3): with torch.distributed initialised, a call that draws
its seed folds the process's rank into the stream, so that ranks which seeded identically (the
usual ``torch.manual_seed`` on every rank, as DistributedDataParallel needs for equal initial
weights) still draw different noise.

The rank goes into the 64-bit ``offset`` (the high half of the Philox counter), not into the
drawn seed: the offset is a Python int, so folding it costs no device operation, no
synchronisation and no graph break; distinct counters under one key give independent streams
just as distinct keys do.  Rank 0 keeps its offset, so a single process (and rank 0) draws
exactly the noise it drew before.  An explicit ``seed=`` is never altered.
"""

import torch
import torch.distributed as dist

# 2^64 / golden ratio, odd: rank -> rank * _RANK_MIX (mod 2^64) is a bijection that spreads
# consecutive ranks over the whole offset space, far from the small offsets users pick
_RANK_MIX = 0x9E3779B97F4A7C15
_U64 = 1 << 64

_enabled = True
_DIST = dist.is_available()
# (the world process group the rank was read for, its offset mask): dist.get_rank() costs about
# a microsecond, a check of the group object a third of that
_cache = (None, 0)


def use_per_rank_noise(enabled: bool) -> None:
    """Whether calls that draw their seed fold the torch.distributed rank into their noise
    (default True).  ``False``: every rank that seeded identically draws identical noise, as
    ``nn.Dropout`` does (e.g. for ranks of one tensor-parallel group that must agree)."""
    if type(enabled) is not bool:
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
    global _enabled
    _enabled = enabled


def is_per_rank_noise_enabled() -> bool:
    """The switch of :func:`use_per_rank_noise`."""
    return _enabled


def _mask(rank: int) -> int:
    """The offset bits XORed in on ``rank`` (as int64 bits, like every offset the op takes)."""
    bits = rank * _RANK_MIX % _U64
    return bits - _U64 if bits >= 1 << 63 else bits


def fold_rank(offset_bits: int) -> int:
    """``offset_bits`` (int64 bits of the uint64 offset) of a call that drew its seed, with this
    process's rank folded in where per-rank noise is on and torch.distributed is initialised."""
    if not (_enabled and _DIST):
        return offset_bits
    if torch.compiler.is_compiling():
        # torch.compile folds both calls into constants of the graph (and guards on the switch)
        return offset_bits ^ _mask(dist.get_rank()) if dist.is_initialized() else offset_bits
    global _cache
    world = dist.GroupMember.WORLD  # None until init_process_group, and after destroy
    if world is None:
        return offset_bits
    if world is not _cache[0]:
        _cache = (world, _mask(dist.get_rank()))
    return offset_bits ^ _cache[1]
