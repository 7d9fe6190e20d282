"""Where the elements of one sample lie in memory: the Python side of csrc/infodrop/layout.h and
walkable_layout() in csrc/glue/op_glue.h, for the kernels written in Python (infodrop/triton).

The noise is a function of an element's logical (row-major) index whatever the memory format
(docs/spec.md section 3).  Logically a sample of a (B, C, d2, ..., dk) tensor is C channels of
S = d2 * ... * dk positions, element j = c * S + s; the kernels walk two memory orders in place,
with the batch dimension outermost and every sample dense (sample b at offset b * C * S):
  channels-first: the sample is contiguous, offset j;
  channels-last:  dim 1 innermost (NHWC, NDHWC, any (B, C, ...) whose memory order is
                  (0, 2, ..., k, 1)), offset s * C + c.
Any other strides are read through a contiguous copy."""

from typing import NamedTuple

import torch


class SampleLayout(NamedTuple):
    channels: int  # C (1 for channels-first: the map is the identity)
    positions: int  # S; channels * positions elements per sample
    channels_last: bool


def walkable_layout(t: torch.Tensor) -> SampleLayout | None:
    """The layout the kernels walk ``t`` in place, or None where they need a contiguous copy.
    Size-1 dimensions may have any stride (PyTorch leaves them arbitrary): they are skipped."""
    shape = t.shape
    samples = shape[0]
    per_sample = t.numel() // samples if samples else 0
    if t.is_contiguous():
        return SampleLayout(1, per_sample, False)
    if t.dim() < 3 or per_sample == 0:
        return None
    # channels-last: the strides of a contiguous tensor of the permuted shape (B, d2, ..., dk, C)
    expected = 1
    for d in (1, *range(t.dim() - 1, 1, -1), 0):
        if shape[d] != 1 and t.stride(d) != expected:
            return None
        expected *= shape[d]
    return SampleLayout(shape[1], per_sample // shape[1], True)
