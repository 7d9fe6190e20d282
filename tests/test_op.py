"""The custom op as PyTorch sees it: opcheck, torch.compile, seeds and determinism, what autograd
saves.  (gradcheck of every backend: tests/test_backend_numerics.py.)"""

import pytest
import torch

import infodrop
from infodrop.testing import make_inputs

from ._helpers import requires_compiled

pytestmark = requires_compiled


def _op_args(x, logit, prior="log_uniform", mu=0.0, sigma=1.0, **flags):
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    mu = mu if isinstance(mu, torch.Tensor) else torch.tensor(mu, dtype=dtype)
    sigma = sigma if isinstance(sigma, torch.Tensor) else torch.tensor(sigma, dtype=dtype)
    return (x, logit, torch.tensor(99), 3, mu, sigma, prior, 0.7, 1e-3,
            flags.get("mask_inactive", False), flags.get("unit_mean", False),
            flags.get("apply_noise", True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("prior", ["log_uniform", "log_normal"])
def test_opcheck(dtype, prior):
    x, logit = make_inputs((3, 4, 6), dtype, prior=prior)
    args = _op_args(x.requires_grad_(), logit.requires_grad_(), prior)
    torch.library.opcheck(torch.ops.infodrop.information_dropout.default, args)
    grads = (torch.randn_like(x), torch.randn(3))
    torch.library.opcheck(torch.ops.infodrop.information_dropout_backward.default,
                          grads + tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_opcheck_channels_last():
    x, logit = make_inputs((2, 3, 4, 5), torch.float32)
    args = _op_args(*(t.contiguous(memory_format=torch.channels_last) for t in (x, logit)))
    torch.library.opcheck(torch.ops.infodrop.information_dropout.default, args)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck_with_logit_bias(layout):
    """The optional per-channel logit_bias: schema, fake kernels (its gradient's shape), autograd
    registration and the compiled op, forward and backward."""
    x, logit = make_inputs((2, 3, 4, 5), torch.float32)
    if layout == "channels_last":
        x, logit = (t.contiguous(memory_format=torch.channels_last) for t in (x, logit))
    bias = torch.randn(3, requires_grad=True)
    args = _op_args(x.requires_grad_(), logit.requires_grad_()) + (bias,)
    torch.library.opcheck(torch.ops.infodrop.information_dropout.default, args)
    grads = (torch.randn_like(x), torch.randn(2))
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.infodrop.information_dropout_backward.default,
                          grads + detached,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_the_fake_kernel_checks_the_logit_bias():
    """A traced call (torch.compile, torch.export) fails where the kernels would, naming it."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 3, 4)
        args = _op_args(x, torch.empty(2, 3, 4))
        with pytest.raises(ValueError, match=r"logit_bias must have shape \(3,\)"):
            torch.ops.infodrop.information_dropout(*args, torch.empty(4))


def test_compiled_layer_with_logit_bias_matches_eager():
    def layer(x, logit, bias):
        z, kl = infodrop.information_dropout(x, logit, logit_bias=bias, seed=5, offset=1)
        return (z * z).sum() + kl.mean()

    x, logit = make_inputs((4, 8, 6), torch.float32)
    bias = torch.randn(8)
    grads = []
    for fn in (layer, torch.compile(layer, fullgraph=True)):
        torch._dynamo.reset()
        leaves = [t.clone().requires_grad_() for t in (x, logit, bias)]
        fn(*leaves).backward()
        grads.append([t.grad for t in leaves])
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager)


def _layer(x, logit):
    z, kl = infodrop.information_dropout(x, logit, seed=5, offset=1)
    return (z * z).sum() + kl.mean()


def test_compile_fullgraph_matches_eager():
    x, logit = make_inputs((4, 8, 6), torch.float32)
    xe, le = x.clone().requires_grad_(), logit.clone().requires_grad_()
    xc, lc = x.clone().requires_grad_(), logit.clone().requires_grad_()
    eager = _layer(xe, le)
    eager.backward()
    torch._dynamo.reset()
    compiled = torch.compile(_layer, fullgraph=True)(xc, lc)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(xc.grad, xe.grad)
    torch.testing.assert_close(lc.grad, le.grad)


def test_compile_draws_seed_without_graph_break():
    """The default seed is drawn inside the graph: fullgraph compiles and calls differ."""
    def f(x, logit):
        return infodrop.information_dropout(x, logit)[0]

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    x, logit = make_inputs((2, 64), torch.float32)
    x = x + 0.1
    a, b = compiled(x, logit), compiled(x, logit)
    assert not torch.equal(a, b)


def test_same_seed_same_output_and_different_seed_or_offset_differs():
    x, logit = make_inputs((3, 100), torch.float32)
    x = x + 0.1
    z1, _ = infodrop.information_dropout(x, logit, seed=1, offset=0)
    z2, _ = infodrop.information_dropout(x, logit, seed=1, offset=0)
    assert torch.equal(z1, z2)
    assert not torch.allclose(infodrop.information_dropout(x, logit, seed=2)[0], z1)
    assert not torch.allclose(infodrop.information_dropout(x, logit, seed=1, offset=1)[0], z1)
    # the default seed comes from the generator: two draws differ, a generator reproduces
    assert not torch.equal(infodrop.information_dropout(x, logit)[0],
                           infodrop.information_dropout(x, logit)[0])
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(infodrop.information_dropout(x, logit, generator=g1)[0],
                       infodrop.information_dropout(x, logit, generator=g2)[0])


def test_manual_seed_reproduces_a_training_step():
    def step():
        torch.manual_seed(123)
        layer = infodrop.InfoDropConv2d(3, 8, 3, stride=2, padding=1)
        opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(4, 3, 12, 12)
        for _ in range(2):
            z = layer(x)
            loss = z.square().mean() + layer.kl.mean() / 100
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.detach(), [p.detach().clone() for p in layer.parameters()]

    (loss1, params1), (loss2, params2) = step(), step()
    assert torch.equal(loss1, loss2)
    assert all(torch.equal(a, b) for a, b in zip(params1, params2))


def test_backward_saves_only_the_inputs():
    """The noise is regenerated, not stored: what autograd keeps is x, alpha_logit and scalars."""
    x, logit = make_inputs((4, 1000), torch.float32)
    x.requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        infodrop.information_dropout(x, logit, seed=1)
    big = [t for t in saved if t.numel() > 1]
    assert len(big) == 2 and all(t.shape == x.shape for t in big)


def test_compile_dynamic_fullgraph_matches_eager():
    """The Python checks traced math.isfinite on symbolic floats: dynamic=True failed."""
    def layer(x, logit, max_alpha):
        return infodrop.information_dropout(x, logit, seed=5, max_alpha=max_alpha,
                                            prior="log_normal", mu=0.1, sigma=1.5)

    torch._dynamo.reset()
    compiled = torch.compile(layer, dynamic=True, fullgraph=True)
    for shape in [(4, 6), (3, 10)]:
        x, logit = make_inputs(shape, prior="log_normal")
        for got, want in zip(compiled(x, logit, 0.7), layer(x, logit, 0.7)):
            torch.testing.assert_close(got, want)


def test_a_network_of_layers_compiles_to_one_graph():
    """Without fullgraph a 2-layer net split into 7 graphs."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(infodrop.InfoDropConv2d(3, 4, 3),
                              infodrop.InfoDropConv2d(4, 4, 3, activation="softplus"))
    x = torch.rand(2, 3, 12, 12)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(net)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    torch._dynamo.reset()
    out = torch.compile(net, dynamic=True, fullgraph=True)(x)
    out.sum().backward()
    assert out.shape == (2, 4, 8, 8) and all(p.grad is not None for p in net.parameters())
