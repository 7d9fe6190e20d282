"""Which tracer is running a call: export needs other code than eager calls and torch.compile."""

import torch


def exporting() -> bool:
    """Whether torch.export (also inside torch.onnx.export(..., dynamo=True)) traces this call.

    Not torch.compiler.is_exporting(): inside torch.compile, torch 2.11's dynamo answers it with
    True in every compiled region (plain torch.compile too), so a compiled layer recorded no KL
    and kl_divergence(model) raised after a compiled forward.  torch.export sets this flag for
    the whole export (strict and non-strict); dynamo reads it as a constant of the graph."""
    return torch.compiler._is_exporting_flag
