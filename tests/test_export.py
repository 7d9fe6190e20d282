"""Models with Information Dropout layers exported and compiled whole: torch.export in train and
eval mode, ONNX (dynamo) in eval mode, torch.compile(fullgraph=True).  In a call that draws no
noise z = x, and while exporting its KL is computed with plain torch ops, so an exported eval
model needs no infodrop op (docs/spec.md section 4)."""

import pytest
import torch
from torch import nn

import infodrop
from infodrop.testing import TOLERANCE, make_inputs

from ._helpers import requires_compiled

pytestmark = requires_compiled


class SmallNet(nn.Module):
    """Two Information Dropout conv blocks and a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(infodrop.InfoDropConv2d(3, 4, 3, padding=1),
                                      infodrop.InfoDropConv2d(4, 6, 3, stride=2, padding=1,
                                                              activation="softplus"))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class Layer(nn.Module):
    """The functional API in a module: returns z and the KL, so both can be compared."""

    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, x, alpha_logit):
        return infodrop.information_dropout(x, alpha_logit, training=self.training, **self.options)


def _infodrop_nodes(graph):
    return [n for n in graph.nodes if n.op == "call_function" and "infodrop" in str(n.target)]


def _small_net(mode):
    torch.manual_seed(0)
    net = SmallNet()
    getattr(net, mode)()
    return net, torch.rand(2, 3, 8, 8)


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_export_in_train_mode_draws_the_noise_of_eager(strict):
    net, x = _small_net("train")
    program = torch.export.export(net, (x,), strict=strict)
    assert len(_infodrop_nodes(program.graph)) == 2  # the noise needs the fused op
    torch.manual_seed(3)
    exported = program.module()(x)
    torch.manual_seed(3)
    torch.testing.assert_close(exported, net(x))
    assert not torch.equal(program.module()(x), exported)  # a fresh seed per call


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_export_in_eval_mode_needs_no_infodrop_op(strict):
    net, x = _small_net("eval")
    program = torch.export.export(net, (x,), strict=strict)
    assert _infodrop_nodes(program.graph) == []
    torch.testing.assert_close(program.module()(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("prior", ["log_uniform", "log_normal"])
def test_exported_kl_equals_the_fused_ops(prior):
    options = {"prior": prior, "mask_inactive": True}
    if prior == "log_normal":
        options.update(mu=torch.tensor(0.3), sigma=torch.tensor(1.4))
    layer = Layer(**options).eval()
    x, logit = make_inputs((4, 3, 5), prior=prior, zeros=0.2)
    program = torch.export.export(layer, (x, logit))
    assert _infodrop_nodes(program.graph) == []
    z, kl = program.module()(x, logit)
    want_z, want_kl = layer(x, logit)  # eager: the fused op
    rtol, atol = TOLERANCE[torch.float32]
    torch.testing.assert_close(z, want_z, rtol=0, atol=0)
    torch.testing.assert_close(kl, want_kl, rtol=rtol, atol=atol * x[0].numel())


def test_export_with_noise_in_eval_keeps_the_op():
    layer = Layer(noise_in_eval=True).eval()
    program = torch.export.export(layer, make_inputs((2, 4)))
    assert len(_infodrop_nodes(program.graph)) == 1


def test_onnx_export_in_eval_mode(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    net, x = _small_net("eval")
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=True, verbose=False)
    model = onnx.load(str(path))
    domains = {node.domain for node in model.graph.node} | {f.domain for f in model.functions}
    assert not any("infodrop" in d for d in domains)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compile_fullgraph_of_a_whole_model_matches_eager(mode):
    net, x = _small_net(mode)
    compiled = torch.compile(net, fullgraph=True)
    torch.manual_seed(4)
    got = compiled(x)
    got.sum().backward()
    compiled_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    torch.manual_seed(4)
    want = net(x)
    want.sum().backward()
    torch.testing.assert_close(got, want)
    for g, w in zip(compiled_grads, (p.grad for p in net.parameters())):
        torch.testing.assert_close(g, w)
