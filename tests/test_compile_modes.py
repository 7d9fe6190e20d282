"""torch.compile in every mode, on every backend's path (issue 17): the backend is chosen with
nothing dynamo refuses (the GPU dispatch path is traced here, without a GPU), module state is
updated in place (a CUDA graph's replay overwrites tensors made inside it), and the KL of a
compiled forward is recorded for kl_divergence."""

import warnings

import pytest
import torch
from torch import nn

import infodrop
from infodrop import _backends, _ops

from ._helpers import requires_compiled

MODES = [dict(fullgraph=True), dict(), dict(mode="reduce-overhead")]
MODE_IDS = ["fullgraph", "default", "reduce-overhead"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("cuda_built", [True, False])
@pytest.mark.parametrize("triton_importable", [True, False])
@pytest.mark.parametrize("backend", ["auto", "triton", "reference"])
def test_resolve_for_a_cuda_device_traces_with_fullgraph(monkeypatch, cuda_built,
                                                         triton_importable, backend):
    """The GPU dispatch path, traced on the CPU.  Before: resolve() asked
    importlib.util.find_spec through an lru_cache wrapper, which torch 2.11's dynamo refused
    under fullgraph=True and 2.14's only tolerated (with a warning, an error here)."""
    if backend == "triton" and not triton_importable:
        pytest.skip("an error in eager mode too")
    monkeypatch.setattr(_ops, "CUDA_BUILT", cuda_built)
    monkeypatch.setattr(_backends, "TRITON_IMPORTABLE", triton_importable)
    # an explicit triton runs without a GPU only in the interpreter (dynamo itself asks
    # torch.cuda.is_available(): it cannot be patched to pretend a GPU)
    monkeypatch.setattr(_backends, "TRITON_INTERPRETED", True)
    cuda = torch.device("cuda")

    def chosen(x):
        return x + _backends.NAMES.index(_backends.resolve(backend, cuda))

    want = _backends.NAMES.index(_backends.resolve(backend, cuda))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.compile(chosen, fullgraph=True, backend="eager")(torch.zeros(()))
    assert got.item() == want


def _softplus_net():
    """Two blocks whose log-normal priors follow the data (moment-matched buffers)."""
    torch.manual_seed(0)
    return nn.Sequential(infodrop.InfoDropConv2d(3, 4, 3, padding=1, activation="softplus"),
                         infodrop.InfoDropConv2d(4, 4, 3, stride=2, padding=1,
                                                 activation="softplus"),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _buffers(model):
    return [b for name, b in model.named_buffers() if name.endswith(("mu", "sigma"))]


@requires_compiled
@pytest.mark.parametrize("options", [None] + MODES, ids=["eager"] + MODE_IDS)
def test_prior_buffers_keep_their_storage_across_passes(options):
    """Before: each training call replaced mu and sigma by tensors made in the call, which a
    CUDA graph's next replay overwrites (mode="reduce-overhead" failed on a GPU)."""
    model = infodrop.track_kl(_softplus_net())
    run = model if options is None else torch.compile(model, **options)
    buffers = _buffers(model)
    storage = [b.untyped_storage().data_ptr() for b in buffers]
    before = [b.clone() for b in buffers]
    x = torch.rand(4, 3, 8, 8)
    for _ in range(3):
        run(x).sum().backward()
    assert [b.untyped_storage().data_ptr() for b in buffers] == storage
    assert all(not torch.equal(b, old) for b, old in zip(buffers, before))  # the prior moved
    assert all(torch.isfinite(b).all() for b in buffers)


@requires_compiled
@pytest.mark.parametrize("compiled", [False, True])
def test_a_layer_called_twice_has_each_calls_prior_in_its_backward(compiled):
    """The prior moves between the two calls of a pass, in place: each call's backward reads
    the mu and sigma that call ran with (the op is handed copies)."""
    layer = infodrop.InformationDropout(prior="log_normal")
    seen = []
    layer.register_forward_pre_hook(lambda m, args: seen.append((m.mu.clone(), m.sigma.clone())))
    g = torch.Generator().manual_seed(3)
    x, logit = torch.rand(3, 5, generator=g) + 0.1, torch.randn(3, 5, generator=g)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x, logit):
            return self.layer(self.layer(x, logit), logit)

    model = infodrop.track_kl(Twice())  # the pass's KL is both calls'
    run = torch.compile(model, backend="aot_eager") if compiled else model
    x1, logit1 = x.clone().requires_grad_(), logit.clone().requires_grad_()
    torch.manual_seed(7)
    z = run(x1, logit1)
    (z.sum() + infodrop.kl_divergence(model).sum()).backward()
    assert len(seen) == 2 and not torch.equal(seen[0][0], seen[1][0])

    # the same two calls with the recorded priors given as fixed numbers, and the same noise
    x2, logit2 = x.clone().requires_grad_(), logit.clone().requires_grad_()
    torch.manual_seed(7)
    kls, z2 = [], x2
    for mu, sigma in seen:
        z2, kl = infodrop.information_dropout(z2, logit2, prior="log_normal", mu=mu, sigma=sigma)
        kls.append(kl)
    (z2.sum() + sum(kls).sum()).backward()
    torch.testing.assert_close(z, z2)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(logit1.grad, logit2.grad)


def _converted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    # one target after plain layers: its KL does not depend on noise drawn upstream
    return infodrop.convert(model, ["3"], example_input=torch.randn(2, 3, 16, 16))


@requires_compiled
@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_kl_divergence_after_a_compiled_forward_is_that_passes(options):
    """Before (torch 2.11): dynamo answered torch.compiler.is_exporting() with True in every
    compiled region, the layers recorded nothing and kl_divergence raised."""
    model = _converted()
    compiled = torch.compile(model, **options)
    for batch in (3, 5):
        x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        compiled(x)
        kl = infodrop.kl_divergence(model)
        assert kl.shape == (batch,) and kl.requires_grad
        # the KL does not depend on the noise: the eval forward of the same batch has it
        with torch.no_grad():
            model.eval()(x)
            want = infodrop.kl_divergence(model)
            model.train()
        torch.testing.assert_close(kl.detach(), want, rtol=1e-4, atol=1e-4)


@requires_compiled
def test_export_still_records_no_kl_attribute():
    """The KL of an exported program lives in its graph: exporting records nothing on the
    layer (and an eval-mode export holds no infodrop op)."""
    layer = infodrop.InformationDropout().eval()
    x, logit = torch.rand(2, 5), torch.randn(2, 5)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x, logit):
            return self.layer(x, logit)

    program = torch.export.export(Wrap(), (x, logit))
    assert layer.kl is None
    assert "infodrop" not in str(program.graph)
