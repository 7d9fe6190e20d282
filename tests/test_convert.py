"""infodrop.convert and the modules it inserts (InfoDropout, InfoDropWrapper), on torchvision and
timm networks (extra "models"), the package's own networks and small hand-built ones.

Every converted model must, in eval mode without noise, compute exactly what it computed before;
in training mode it must draw noise, report a KL per sample and give the new parameters gradients.
"""

import copy
import math
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import infodrop
from infodrop.adapters import alpha_of_dropout_rate
from infodrop.paper.models import all_cnn_32

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _converted(model, x=X, **kwargs):
    """(model before, after convert) outputs in eval mode, and the parameters convert added."""
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        before = model(x)
    old = {id(p) for p in model.parameters()}
    assert infodrop.convert(model, **kwargs) is model
    new = [p for p in model.parameters() if id(p) not in old]
    with torch.no_grad():
        after = model(x)
    return before, after, new


def _trains(model, x=X):
    """A training forward draws noise, has a finite per-sample KL, and every new parameter
    gets a gradient from the KL."""
    model.train()
    out = model(x)
    kl = infodrop.kl_divergence(model)
    assert kl.shape == (x.shape[0],) and torch.isfinite(kl).all() and (kl > 0).all()
    (out.float().square().mean() + kl.mean()).backward()
    return out


MODELS = {
    "torchvision-resnet18": (lambda: torchvision.models.resnet18(),
                             dict(targets=["layer2", "layer3", "layer4"])),
    "torchvision-resnet50": (lambda: torchvision.models.resnet50(), dict(targets=["layer3", "layer4"])),
    "torchvision-vgg11_bn": (lambda: torchvision.models.vgg11_bn(),
                             dict(targets=["features.10", "features.17"], replace_dropout=True)),
    "torchvision-mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(),
                                       dict(targets=["features.1.block.0", "features.2.block.1"])),
    "timm-resnet18": (lambda: timm.create_model("resnet18", pretrained=False),
                      dict(targets=["layer3", "layer4"])),
    # convnext has no ReLU: its stages end in a residual sum of signed values
    "timm-convnext_atto": (lambda: timm.create_model("convnext_atto", pretrained=False, drop_rate=0.3),
                           dict(targets=["stages.2", "stages.3"], replace_dropout=True,
                                allow_negative=True)),
    "paper-all_cnn_32": (lambda: all_cnn_32(in_channels=3, width=0.25, dropout="binary"),
                         dict(targets=["features.0"], replace_dropout=True)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_is_exact_in_eval_and_trains(name):
    build, kwargs = MODELS[name]
    model = build()
    before, after, new = _converted(model, **kwargs)
    assert torch.equal(before, after)
    assert new, "convert added no parameter"
    added = [m for m in model.modules() if isinstance(m, (infodrop.InfoDropWrapper, infodrop.InfoDropout))]
    assert len(added) >= len(kwargs["targets"]) + (1 if kwargs.get("replace_dropout") else 0)
    _trains(model)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new)


def test_convert_keeps_weights_statistics_and_modes():
    model = torchvision.models.resnet18()
    model.train()
    model.layer1.eval()  # a mixed mode, as with frozen parts
    state = copy.deepcopy(model.state_dict())
    infodrop.convert(model, ["layer3"], example_input=X)
    converted = model.state_dict()
    for key, value in state.items():  # the target's own keys gain ".module"
        new_key = key.replace("layer3.", "layer3.module.", 1) if key.startswith("layer3.") else key
        assert torch.equal(converted[new_key], value), key  # running statistics untouched too
    assert model.training and model.layer3.training and model.layer3.dropout.training
    assert not model.layer1.training and not model.layer1[0].bn1.training


def test_an_optimizer_built_after_convert_updates_the_heads():
    model = infodrop.convert(torchvision.models.resnet18(), ["layer4"], alpha_head="1x1")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    head = model.layer4.alpha_head.weight
    start = head.detach().clone()
    _trains(model)
    optimizer.step()
    assert not torch.equal(head, start)


def test_heads_follow_channels_and_stride():
    model = infodrop.convert(torchvision.models.resnet18(), ["layer1", "layer3"])
    conv = model.layer3.alpha_head  # the paper's head: 3x3 with the block's stride
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == \
        (128, 256, (3, 3), (2, 2), (1, 1))
    assert model.layer1.alpha_head.stride == (1, 1)
    cheap = infodrop.convert(torchvision.models.resnet18(), ["layer3"], alpha_head="1x1").layer3.alpha_head
    assert (cheap.kernel_size, cheap.stride, cheap.padding) == ((1, 1), (2, 2), (0, 0))
    assert sum(p.numel() for p in cheap.parameters()) * 8 < sum(p.numel() for p in conv.parameters())


def test_a_conv_target_lends_its_geometry_and_vectors_get_a_linear_head():
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=4, dilation=2), nn.Flatten(),
                          nn.Linear(8 * 32 * 32, 16), nn.ReLU(inplace=True), nn.Linear(16, 2))
    infodrop.convert(model, ["0", "3"], allow_negative=True)
    head = model[0].alpha_head
    assert (head.kernel_size, head.stride, head.padding, head.dilation) == ((5, 5), (2, 2), (4, 4), (2, 2))
    linear = model[3].alpha_head
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (16, 16)
    assert model[3].module.inplace is False  # it would overwrite the input the head saved
    _trains(model, torch.randn(2, 3, 64, 64))


def test_new_parameters_take_the_models_dtype():
    model = torchvision.models.resnet18().double()
    before, after, new = _converted(model, X.double(), targets=["layer2"], replace_dropout=False)
    assert torch.equal(before, after)
    assert {p.dtype for p in new} == {torch.float64}


def test_replace_dropout_in_sequential_and_its_initial_noise():
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 32),
                          nn.ReLU(), nn.Dropout(0.0), nn.Linear(32, 4))
    x = torch.rand(8, 10)
    before, after, new = _converted(model, x, replace_dropout=True)
    assert torch.equal(before, after)
    layer = model[2]
    assert isinstance(layer, infodrop.InfoDropout) and layer.num_features == 32 and layer.dim == 1
    assert type(model[5]) is nn.Dropout  # p = 0: no dropout there to replace
    # the noise of binary dropout at p = 0.3 has relative variance p / (1 - p) = exp(alpha^2) - 1
    assert layer.init_alpha == pytest.approx(math.sqrt(-math.log(0.7)))
    # p = 0.5 needs alpha = 0.83, beyond the cap alpha_min + max_alpha: 95% of the range
    assert alpha_of_dropout_rate(0.5, 1e-3, 0.7) == pytest.approx(1e-3 + 0.95 * 0.7)
    model.train()
    model(x)
    assert layer.kl.shape == (8,)


def test_replace_dropout_channels_of_sequences_and_of_dropout2d():
    seq = infodrop.convert(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.5)),
                           replace_dropout=True, example_input=torch.randn(2, 5, 6))
    assert (seq[2].num_features, seq[2].dim) == (12, -1)
    maps = infodrop.convert(nn.Sequential(nn.Conv2d(3, 7, 3), nn.ReLU(), nn.Dropout2d(0.5)),
                            replace_dropout=True)
    assert (maps[2].num_features, maps[2].dim) == (7, 1)


def test_info_dropout_is_a_drop_in_for_dropout():
    normal = infodrop.InfoDropout(4, prior="log_normal", unit_mean=True)
    assert (normal.dropout.prior, normal.dropout.unit_mean) == ("log_normal", True)  # passed through
    layer = infodrop.InfoDropout(4, max_alpha=0.5)
    assert "4, dim=1, init_alpha=0.251" in repr(layer) and "max_alpha=0.5" in repr(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]))
    x = torch.rand(3, 4, 5)
    torch.manual_seed(7)
    z = nn.Sequential(layer)(x)
    torch.manual_seed(7)
    logit = layer.bias.view(1, 4, 1) + layer.weight.view(1, 4, 1) * x  # alpha from x itself
    expected, kl = infodrop.information_dropout(x, logit, max_alpha=0.5)
    assert torch.equal(z, expected) and torch.allclose(layer.kl, kl)
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.zeros(4))
    layer.eval()
    assert torch.equal(layer(x), x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_features=0), "num_features"),
    (dict(num_features=4, init_alpha=0.9), "init_alpha"),
    (dict(num_features=4, max_alpha=-1.0), "max_alpha"),
])
def test_info_dropout_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        infodrop.InfoDropout(**kwargs)


def test_info_dropout_names_the_channel_mismatch():
    with pytest.raises(ValueError, match=r"InfoDropout\(4, dim=1\).*4 channels.*\(2, 5\)"):
        infodrop.InfoDropout(4)(torch.rand(2, 5))


@pytest.mark.parametrize("targets, kwargs, match", [
    (["layer9"], {}, r"no submodule 'layer9' \(did you mean 'layer4'"),
    ([""], {}, "the model itself"),
    (["layer3", "layer3"], {}, "given twice"),
    ([3], {}, "must be a str"),
    (["layer3"], dict(alpha_head="dw"), r"alpha_head must be one of \('conv', '1x1'\)"),
    (["layer3"], dict(max_alpha=0.0), "max_alpha"),
    ([], {}, "nothing to convert"),
    (["layer3.0.conv1"], {}, r"'layer3.0.conv1' returns negative values.*'layer3.0.relu', 'layer3.0'"),
    (["layer3"], dict(prior="log_normal"), r"log_normal prior needs x > 0.*'layer3'"),
    (["fc"], dict(example_input=torch.randn(2, 3, 64, 64)), "'fc' returns negative"),
])
def test_errors_name_the_target_or_argument(targets, kwargs, match):
    model = torchvision.models.resnet18()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises((ValueError, TypeError), match=match):
        infodrop.convert(model, targets, **kwargs)
    assert model.state_dict().keys() == state.keys()  # untouched


def test_a_failing_target_leaves_the_others_unconverted():
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="layer4.1.bn2"):
        infodrop.convert(model, ["layer3", "layer4.1.bn2"])
    assert isinstance(model.layer3, nn.Sequential)


def test_converting_twice_and_unused_and_shared_modules_are_errors():
    model = infodrop.convert(torchvision.models.resnet18(), ["layer3"])
    with pytest.raises(ValueError, match="'layer3' is already an Information Dropout module"):
        infodrop.convert(model, ["layer3"])

    class Spare(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.unused = nn.ReLU()

        def forward(self, x):
            return self[1](self[0](x))

    spare = Spare()
    with pytest.raises(ValueError, match="'unused' did not run"):
        infodrop.convert(spare, ["unused"])
    relu = nn.ReLU()
    shared = nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 6, 3, stride=2), relu)
    with pytest.raises(ValueError, match="'1' runs more than once"):
        infodrop.convert(shared, ["1"])


def test_an_input_size_the_head_cannot_follow_is_named_at_run_time():
    model = infodrop.convert(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)), ["2"])
    model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"alpha head of '2' gives shape \(1, 4, 32, 32\).*\(1, 4, 31, 31\)"):
        model(torch.randn(1, 3, 63, 63))


def test_state_dict_round_trip_and_deepcopy():
    torch.manual_seed(1)
    a = infodrop.convert(torchvision.models.resnet18(), ["layer3", "layer4"], replace_dropout=False)
    torch.manual_seed(2)
    b = infodrop.convert(torchvision.models.resnet18(), ["layer3", "layer4"])
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    c = copy.deepcopy(a)
    with torch.no_grad():
        assert torch.equal(a(X), b(X)) and torch.equal(a(X), c(X))


def test_kl_weight_trains_a_converted_resnet_with_the_plain_loss():
    """One SGD step with the plain loss (no KL in the loop) equals one with the KL term written
    out: the layers add kl_weight * kl.mean()'s gradient in their backward."""
    weight, target = 1e-3, torch.tensor([1, 3])
    torch.manual_seed(0)
    plain_loop = infodrop.convert(torchvision.models.resnet18(), ["layer3", "layer4"], alpha_head="1x1",
                                  kl_weight=weight)
    written_out = infodrop.convert(torchvision.models.resnet18(), ["layer3", "layer4"], alpha_head="1x1")
    written_out.load_state_dict(plain_loop.state_dict())
    steps = {}
    for name, model, with_kl in (("plain", plain_loop, False), ("explicit", written_out, True)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(3)
        loss = nn.functional.cross_entropy(model(X), target)
        if with_kl:
            loss = loss + weight * infodrop.kl_divergence(model).mean()
        loss.backward()
        steps[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
    assert steps["plain"].keys() == steps["explicit"].keys()
    for n, grad in steps["plain"].items():
        torch.testing.assert_close(grad, steps["explicit"][n], rtol=1e-4, atol=1e-6, msg=n)
    assert steps["plain"]["layer4.alpha_head.weight"].abs().sum() > 0


def test_readme_convert_example_runs():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Information Dropout in your CNN"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert any(isinstance(m, infodrop.InfoDropWrapper) for m in scope["model"].modules())


def test_import_infodrop_imports_neither_torchvision_nor_timm():
    code = ("import sys, infodrop; print(sorted(m for m in ('torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_autocast_keeps_the_networks_dtypes():
    """timm's convnext under CPU bfloat16 autocast: float32 LayerNorm outputs, bfloat16 convs
    (the alpha heads too); the converted model runs and keeps the original's output dtype."""
    model = timm.create_model("convnext_atto", pretrained=False, drop_rate=0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before, after, _ = _converted(model, targets=["stages.1.blocks.0", "stages.2"],
                                      replace_dropout=True, allow_negative=True)
        assert after.dtype == before.dtype and torch.equal(before, after)
        _trains(model)


def test_a_model_the_guessed_example_does_not_fit_asks_for_one():
    model = nn.Sequential(nn.Unflatten(1, (3, 4, 4)), nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"guessed, of shape \(2, 3, 64, 64\).*pass example_input="):
        infodrop.convert(model, ["2"])
    infodrop.convert(model, ["2"], example_input=torch.randn(2, 48))
    assert isinstance(model[2], infodrop.InfoDropWrapper)


def test_an_eval_mode_converted_model_exports():
    model = infodrop.convert(torchvision.models.resnet18(num_classes=10), ["layer3", "layer4"],
                             alpha_head="1x1").eval()
    with torch.no_grad():
        expected = model(X)
    program = torch.export.export(model, (X,))
    assert torch.equal(program.module()(X), expected)
    pytest.importorskip("onnxscript")
    onnx_program = torch.onnx.export(model, (X,), dynamo=True, verbose=False)
    assert not any(node.domain.startswith("infodrop") for node in onnx_program.model_proto.graph.node)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(onnx_program.model_proto.SerializeToString())
    (got,) = session.run(None, {session.get_inputs()[0].name: X.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


def _small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, 10))


def test_a_converted_model_counts_the_kl_of_its_last_forward_only():
    """convert tracks the model: a forward's KL is that forward's, whatever ran before (an eval
    forward, a bigger batch) and however often the model is called."""
    model = infodrop.convert(_small_cnn(), ["3"], replace_dropout=True, example_input=X)
    model(torch.randn(5, 3, 32, 32))  # another batch size, not summed with the next forward
    model.eval()(X)
    model.train()
    model(X)
    kl = infodrop.kl_divergence(model)
    assert kl.shape == (2,) and kl.requires_grad
    parts = model[3].dropout.kl + model[6].dropout.kl
    torch.testing.assert_close(kl, parts)


def test_torch_compile_fullgraph_of_a_whole_converted_model():
    model = infodrop.convert(_small_cnn(), ["1", "3"], replace_dropout=True, example_input=X,
                             kl_weight=1e-3)
    compiled = torch.compile(model, fullgraph=True)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(X), model(X))
    model.train()
    out = compiled(X)
    out.square().mean().backward()  # kl_weight: the KL's gradient comes with the plain loss
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert infodrop.kl_divergence(model).shape == (2,)


def test_kl_divergence_of_the_compiled_model_compiles_it_once():
    """kl_divergence(torch.compile(model)) put its pass hooks on the compiled wrapper, around
    the compiled forward: the layers' pass depth changed under the graph and the second step
    compiled a second one (for a ResNet-50 under inductor, a minute).  The KL is the model's."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = infodrop.convert(_small_cnn(), ["1", "3"], replace_dropout=True, example_input=X)
    compiled = torch.compile(model, backend="aot_eager")
    for _ in range(3):
        out = compiled(X)
        kl = infodrop.kl_divergence(compiled)
        (out.square().mean() + kl.mean()).backward()
    assert counters["stats"]["unique_graphs"] == 1
    # the compiled pass's KL: the sum of what its three layers (two targets, the dropout)
    # recorded in it
    layers = [m for m in model.modules() if isinstance(m, infodrop.InformationDropout)]
    assert len(layers) == 3
    torch.testing.assert_close(kl, sum(layer.kl for layer in layers))
    assert kl.shape == (2,) and kl.requires_grad


def test_converting_a_compiled_model_says_to_convert_first():
    """The wrapper's modules are the model's under "_orig_mod.": a target named as in the model
    was reported missing, with no word of the compile."""
    compiled = torch.compile(_small_cnn(), backend="eager")
    with pytest.raises(ValueError, match="torch.compile wrapper .* convert the model, then "
                                         "compile it"):
        infodrop.convert(compiled, ["1"], example_input=X)


@pytest.mark.parametrize("head", ["1x1", "conv"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_the_heads_bias_goes_to_the_op_where_the_op_is_cudas(monkeypatch, head, layout):
    """On the CUDA op the wrapper runs its alpha head without the bias and hands the bias to the
    op where its kernels add it as they read the logits (a channels_last output: no pass of its
    own), adding it itself otherwise; the CPU's convolutions add theirs inside them, so
    elsewhere the head keeps it.  The path behind the GPU's, run here on the CPU op (which adds
    the bias before its kernels): the same outputs, KL, KL maps and gradients as the head with
    its bias."""
    from infodrop import adapters, functional
    from infodrop.paper.analysis import kl_maps

    seen = []
    call = functional.information_dropout

    def spy(*args, **kwargs):
        seen.append(kwargs.get("logit_bias"))
        return call(*args, **kwargs)

    monkeypatch.setattr(functional, "information_dropout", spy)
    runs = []
    for to_op in (False, True):
        monkeypatch.setattr(adapters, "picks_cuda", lambda backend, device, to_op=to_op: to_op)
        torch.manual_seed(0)
        model = infodrop.convert(_small_cnn(), ["3"], alpha_head=head, example_input=X)
        x = X.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else X
        if layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        seen.clear()
        torch.manual_seed(1)
        out = model(x)
        kl = infodrop.kl_divergence(model)
        (out.square().mean() + kl.mean()).backward()
        wrapper = model[3]
        to_kernels = to_op and layout == "channels_last"
        assert seen == [wrapper.alpha_head.bias if to_kernels else None]
        # hooks on the layer see (x, alpha_logit), the bias by keyword: the KL maps read it
        maps = kl_maps(model, x)["3.dropout"]
        runs.append((out, kl, wrapper.alpha_head.bias.grad, wrapper.alpha_head.weight.grad,
                     model[0].weight.grad, maps))
    for with_op, with_head in zip(runs[1], runs[0]):
        torch.testing.assert_close(with_op, with_head, rtol=1e-5, atol=1e-6)
    # a head with hooks is called as a module (its hooks run), bias and all
    monkeypatch.setattr(adapters, "picks_cuda", lambda backend, device: True)
    for register in (lambda h, f: h.register_forward_hook(f),
                     lambda h, f: h.register_full_backward_hook(f)):
        hooked = []
        handle = register(model[3].alpha_head, lambda *args, hooked=hooked: hooked.append(1))
        seen.clear()
        model(x).sum().backward()
        handle.remove()
        assert hooked == [1] and seen == [None]


def test_only_a_conv_heads_bias_on_maps_goes_to_the_op(monkeypatch):
    """logit_bias is per channel, dim 1: a Linear head on (B, T, C) sequences has its bias on
    the last dim (T == C here, so a bias on dim 1 would not even fail), and its matrix multiply
    adds the bias for free: the head keeps it."""
    from infodrop import adapters

    monkeypatch.setattr(adapters, "picks_cuda", lambda backend, device: True)
    x = torch.rand(2, 5, 5)
    wrapper = infodrop.InfoDropWrapper(nn.ReLU(), nn.Linear(5, 5), backend="cpu").eval()
    with torch.no_grad():
        wrapper.alpha_head.bias.copy_(torch.arange(5.0))
    calls = []
    wrapper.dropout.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((len(args), kwargs)), with_kwargs=True)
    wrapper(x)
    assert calls == [(2, {})]


def test_the_heads_bias_handed_to_the_op_compiles_in_one_graph(monkeypatch):
    """What a compiled converted model runs on CUDA (gpu-check compiles ResNet-50 with
    inductor), here on the CPU op: the head without its bias, the layout test, the op with
    logit_bias, in one graph that gives the eager step's outputs and gradients."""
    from torch._dynamo.utils import counters

    from infodrop import adapters

    monkeypatch.setattr(adapters, "picks_cuda", lambda backend, device: True)
    x = X.contiguous(memory_format=torch.channels_last)
    grads = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = infodrop.convert(_small_cnn(), ["3"], alpha_head="1x1", example_input=X,
                                 kl_weight=1e-3).to(memory_format=torch.channels_last)
        torch._dynamo.reset()
        counters.clear()
        run = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
        torch.manual_seed(1)
        run(x).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    assert counters["stats"]["unique_graphs"] == 1
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
