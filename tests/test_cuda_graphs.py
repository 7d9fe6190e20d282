"""CUDA graphs: fwd + bwd of a small model with Information Dropout layers captured once and
replayed, with fresh noise on every replay (the seed is drawn on the device by torch.randint
from the CUDA generator, whose state graph capture registers, so each replay advances it); the
same through
torch.compile(mode="reduce-overhead").  The Triton kernels launch on PyTorch's current stream
(Triton's launcher asks torch for it; infodrop/triton/ops.py): a launch on any other stream
would fail the capture, which runs on a side stream."""

import pytest
import torch

import infodrop

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")]

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not infodrop.backends()[name], reason=f"backend {name!r} is not available here"))
    for name in ("cuda", "triton")]


class Net(torch.nn.Module):
    """Two Information Dropout layers, the second with the learned log-normal prior."""

    def __init__(self, backend):
        super().__init__()
        self.main1, self.alpha1 = torch.nn.Linear(16, 32), torch.nn.Linear(16, 32)
        self.main2, self.alpha2 = torch.nn.Linear(32, 24), torch.nn.Linear(32, 24)
        self.drop1 = infodrop.InformationDropout(backend=backend)
        self.drop2 = infodrop.InformationDropout(prior="log_normal", backend=backend)
        infodrop.track_kl(self)  # kl_divergence(self) in forward: this pass's KL

    def forward(self, x):
        h1 = torch.relu(self.main1(x))
        z1 = self.drop1(h1, self.alpha1(x))
        h2 = torch.nn.functional.softplus(self.main2(z1))
        return h2, self.drop2(h2, self.alpha2(z1)), infodrop.kl_divergence(self)


def _step(model, x):
    """Loss and gradients of one training step; h2, z2 to check the noise."""
    h2, z2, kl = model(x)
    loss = z2.square().mean() + 1e-3 * kl.mean()
    grads = torch.autograd.grad(loss, [x] + list(model.parameters()))
    return h2, z2, grads


def _check_replays(outputs):
    """Fresh noise per replay: z2 / h2 (the noise n of the second layer) differs between
    replays; each replay's gradients are finite."""
    noises = [(z2 / h2) for h2, z2, _ in outputs]
    for a, b in zip(noises, noises[1:]):
        assert not torch.allclose(a, b)
    for _, _, grads in outputs:
        assert all(torch.isfinite(g).all() for g in grads)


def _clone(outputs):
    h2, z2, grads = outputs
    return h2.clone(), z2.clone(), [g.clone() for g in grads]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fwd_bwd_captured_in_a_cuda_graph_replays_with_fresh_noise(backend):
    torch.manual_seed(0)
    model = Net(backend).cuda()
    x = torch.rand(8, 16, device="cuda", requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (Triton compiles, cuBLAS workspaces) off-capture
        for _ in range(3):
            _step(model, x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = _step(model, x)
    replays = []
    for _ in range(3):
        graph.replay()
        replays.append(_clone(static))
    torch.cuda.synchronize()
    _check_replays(replays)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_overhead_compile_gives_fresh_noise_per_call(backend):
    torch.manual_seed(0)
    model = Net(backend).cuda()
    x = torch.rand(8, 16, device="cuda", requires_grad=True)
    step = torch.compile(lambda inp: _step(model, inp), mode="reduce-overhead")
    # the first calls record the graph; later ones replay it
    outputs = [_clone(step(x)) for _ in range(5)]
    torch.cuda.synchronize()
    _check_replays(outputs[2:])
