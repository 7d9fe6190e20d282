"""The README's usage example runs as written and does what its comments say."""

import pathlib
import re

import torch

import infodrop

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _usage_code():
    text = README.read_text()
    usage = text[text.index("## Usage"):]
    return re.search(r"```python\n(.*?)```", usage, re.S).group(1)


def test_usage_example_runs_and_trains_the_block():
    scope = {}
    exec(compile(_usage_code(), str(README), "exec"), scope)
    block, loss = scope["block"], scope["loss"]
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in block.parameters() if p.requires_grad)
    assert block.dropout.prior == "log_normal"  # softplus -> log-normal prior, learned mu, sigma
    assert infodrop.kl_divergence(block).shape == (128,)
    z, kl, eps = scope["z"], scope["kl"], scope["eps"]  # the functional call at the end
    assert z.shape == eps.shape == (8, 10) and kl.shape == (8,)
