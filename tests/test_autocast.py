"""The op under torch.autocast (docs/spec.md section 4): alpha_logit takes x's dtype, so the
layer never changes the dtype of the activation stream, through the functional API, the modules,
the raw op and torch.compile.  Runs on the CPU with bfloat16 autocast; the CUDA kernel of the
rule (csrc/autocast.cpp) is the same template."""

import pytest
import torch

import infodrop
from infodrop.testing import make_inputs

from ._helpers import requires_compiled

pytestmark = requires_compiled

BF16 = torch.bfloat16


def _autocast():
    return torch.autocast("cpu", dtype=BF16)


@pytest.mark.parametrize("x_dtype, logit_dtype", [(torch.float32, BF16), (BF16, torch.float32)],
                         ids=["fp32-stream-bf16-alpha", "bf16-stream-fp32-alpha"])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_mixed_dtypes_under_autocast_take_the_dtype_of_x(x_dtype, logit_dtype, backend):
    x, logit = make_inputs((3, 2, 5), torch.float64)
    x, logit = x.to(x_dtype).requires_grad_(), logit.to(logit_dtype).requires_grad_()
    with _autocast():
        z, kl = infodrop.information_dropout(x, logit, seed=7, backend=backend)
    assert z.dtype == x_dtype and kl.dtype == torch.float32
    (z.float().sum() + kl.sum()).backward()
    assert x.grad.dtype == x_dtype and logit.grad.dtype == logit_dtype
    # the rule, spelled out: the same call with alpha_logit cast to x's dtype, outside autocast
    x2, logit2 = x.detach().clone().requires_grad_(), logit.detach().clone().requires_grad_()
    z2, kl2 = infodrop.information_dropout(x2, logit2.to(x_dtype), seed=7, backend=backend)
    (z2.float().sum() + kl2.sum()).backward()
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    torch.testing.assert_close(kl, kl2, rtol=0, atol=0)
    torch.testing.assert_close(logit.grad, logit2.grad, rtol=0, atol=0)


def test_a_mismatch_outside_autocast_is_still_an_error():
    x, logit = make_inputs((2, 4))
    with pytest.raises(TypeError, match="alpha_logit must have the dtype of x"):
        infodrop.information_dropout(x, logit.to(BF16))
    with torch.autocast("cpu", enabled=False), pytest.raises(TypeError, match="alpha_logit"):
        infodrop.information_dropout(x, logit.to(BF16))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_the_raw_op_follows_the_same_rule(compiled):
    op = torch.ops.infodrop.information_dropout.default
    x, logit = make_inputs((2, 3, 4))
    seed, mu, sigma = torch.tensor(5), torch.tensor(0.0), torch.tensor(1.0)
    args = (seed, 0, mu, sigma, "log_uniform", 0.7, 1e-3, False, False, True)

    def call(x, logit):
        with _autocast():
            return op(x, logit, *args)

    z, kl = (torch.compile(call, fullgraph=True) if compiled else call)(x, logit.to(BF16))
    want_z, want_kl = op(x, logit.to(BF16).float(), *args)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, want_z, rtol=0, atol=0)
    torch.testing.assert_close(kl, want_kl, rtol=0, atol=0)


class LayerScaleBlock(torch.nn.Module):
    """The mix of timm's convnext under CPU autocast: the conv runs in bfloat16, its output
    times a float32 layer-scale parameter gives a float32 stream, and the alpha conv on the
    block's input gives a bfloat16 alpha_logit."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.gamma = torch.nn.Parameter(torch.full((4, 1, 1), 0.5))
        self.alpha = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        stream, alpha_logit = torch.relu(self.conv(x)) * self.gamma, self.alpha(x)
        assert (stream.dtype, alpha_logit.dtype) == (torch.float32, BF16)  # the mix, really
        return infodrop.information_dropout(stream, alpha_logit)


def test_a_convnext_like_block_trains_under_autocast():
    torch.manual_seed(0)
    block = LayerScaleBlock()
    with _autocast():
        z, kl = block(torch.rand(2, 3, 6, 6))
    assert z.dtype == torch.float32
    (z.sum() + kl.sum()).backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.dtype == p.dtype, name
        assert torch.isfinite(p.grad).all(), name


def test_compile_fullgraph_under_autocast_matches_eager():
    def layer(x, logit):
        with _autocast():
            z, kl = infodrop.information_dropout(x, torch.nn.functional.linear(logit, weight))
        return z.float().sum() + kl.sum()

    weight = torch.eye(4)
    x, logit = make_inputs((3, 4))
    eager_in = [x.clone().requires_grad_(), logit.clone().requires_grad_()]
    compiled_in = [x.clone().requires_grad_(), logit.clone().requires_grad_()]
    torch.manual_seed(1)
    eager = layer(*eager_in)
    eager.backward()
    torch.manual_seed(1)
    compiled = torch.compile(layer, fullgraph=True)(*compiled_in)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for got, want in zip(compiled_in, eager_in):
        assert got.grad.dtype == want.grad.dtype == torch.float32
        torch.testing.assert_close(got.grad, want.grad)
