"""python -m infodrop bench --network: what it reports beside the timings (which are not checked:
they depend on the machine), on a tiny batch; the contenders' models; the targets' verdicts."""

import inspect
import json

import pytest
import torch

import infodrop
from infodrop import InfoDropWrapper, bench, bench_network

torchvision = pytest.importorskip("torchvision")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_contenders_build_what_they_say():
    kinds = {}
    for contender in bench_network.CONTENDERS:
        model = bench_network.build("resnet18", contender, 32)
        wrappers = [m for m in model.modules() if isinstance(m, InfoDropWrapper)]
        kinds[contender] = (len(wrappers), {type(w.dropout).__name__ for w in wrappers},
                            {w.alpha_head.kernel_size for w in wrappers},
                            {w.dropout.backend for w in wrappers if hasattr(w.dropout, "backend")})
    assert kinds["plain"] == (0, set(), set(), set())
    assert kinds["fused-1x1"] == (3, {"InformationDropout"}, {(1, 1)}, {"auto"})
    assert kinds["fused-conv"] == (3, {"InformationDropout"}, {(3, 3)}, {"auto"})
    assert kinds["reference-conv"] == (3, {"InformationDropout"}, {(3, 3)}, {"reference"})
    assert kinds["heads-1x1"][:3] == (3, {"_NoDropout"}, {(1, 1)})
    dropout = bench_network.build("resnet18", "dropout", 32)
    assert isinstance(dropout.layer3[1], torch.nn.Dropout) and dropout.layer3[1].p == 0.5


def _convs_channels_last(model):
    # 1x1 kernels are both layouts at once: the wider ones tell
    convs = [m.weight for m in model.modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    return {w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
            for w in convs}


def test_channels_last_twins_are_their_contender_in_channels_last():
    twins = [c for c in bench_network.CONTENDERS if c.endswith("-cl")]
    assert twins == ["plain-cl", "dropout-cl", "heads-conv-cl", "heads-1x1-cl", "fused-conv-cl",
                     "fused-1x1-cl"]
    contiguous = bench_network.build("resnet18", "fused-conv", 32)
    twin = bench_network.build("resnet18", "fused-conv-cl", 32)
    assert _convs_channels_last(contiguous) == {False}
    assert _convs_channels_last(twin) == {True}  # the 3x3 alpha heads among them
    # the same network, weights and all: only the layout differs
    for (name, a), (_, b) in zip(contiguous.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), name


def test_build_and_step_take_the_backend_and_autocast():
    model = bench_network.build("resnet18", "fused-1x1", 32, backend="reference")
    assert {w.dropout.backend for w in model.modules() if isinstance(w, InfoDropWrapper)} == \
        {"reference"}
    assert bench_network.build("resnet18", "reference-conv", 32, backend="cpu").layer2.dropout.backend \
        == "reference"  # the reference contender stays what it says
    seen = {}

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear):
            seen["fc"] = output.dtype
        if isinstance(module, InfoDropWrapper):
            seen.setdefault("wrapper", []).append(output.is_contiguous(memory_format=torch.channels_last))

    step = bench_network.make_step("resnet18", "fused-1x1-cl", 2, 32, autocast=torch.bfloat16)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        step()
    finally:
        handle.remove()
    assert seen == {"fc": torch.bfloat16, "wrapper": [True, True, True]}


def test_a_compiled_step_runs_the_compiled_model_and_trains():
    """make_step(compile_backend=...): every step runs the graph torch.compile made of the model
    (one graph: no graph break, and no recompile on later steps, which kl_divergence of the
    compiled model caused before it read the compiled module's layers), the KL term's gradient
    reaches the alpha heads and the optimizer moves every parameter."""
    from torch._dynamo.backends.registry import lookup_backend

    graphs, runs = [], []

    def counting_aot_eager(gm, example_inputs):  # aot_eager, counting its graphs and their runs
        compiled = lookup_backend("aot_eager")(gm, example_inputs)
        graphs.append(gm)

        def run(*args):
            runs.append(len(graphs))
            return compiled(*args)
        return run

    torch._dynamo.reset()
    step = bench_network.make_step("resnet18", "fused-1x1-cl", 2, 32, compile_backend=counting_aot_eager)
    forward = inspect.getclosurevars(step).nonlocals["forward"]  # what the step calls
    assert isinstance(forward, torch._dynamo.eval_frame.OptimizedModule)
    model = forward._orig_mod
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    kls = []
    for _ in range(3):
        step()
        kls.append(infodrop.kl_divergence(model))
    assert len(graphs) == 1 and runs == [1, 1, 1]
    assert not torch.equal(kls[0], kls[1])  # each step's KL, not the traced one
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []
    assert "layer2.alpha_head.weight" in before  # the heads are among what moved
    eager = inspect.getclosurevars(bench_network.make_step("resnet18", "plain", 2, 32)).nonlocals
    assert isinstance(eager["forward"], torchvision.models.ResNet)


def test_heads_alone_pass_x_through_and_run_the_heads_backward():
    x = torch.rand(2, 3, requires_grad=True)
    logit = torch.randn(2, 3, requires_grad=True)
    z = bench_network._NoDropout()(x, logit)
    assert torch.equal(z, x)
    z.sum().backward()
    assert torch.equal(x.grad, torch.ones(2, 3)) and torch.equal(logit.grad, torch.zeros(2, 3))
    # the head's bias, where the wrapper hands it to the op (CUDA): a zero gradient too
    bias = torch.randn(3, requires_grad=True)
    bench_network._NoDropout()(x, logit, bias).sum().backward()
    assert torch.equal(bias.grad, torch.zeros(3))


def test_bench_network_writes_every_record(tmp_path, capsys):
    path = tmp_path / "network.json"
    assert bench.main(["--network", "resnet18", "--quick", "--batch", "2", "--image-size", "32",
                       "--threads", "1", "--no-memory", "--no-progress", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert (data["warmup"], data["repeats"], data["blocks"]) == (0, 1, 1)
    assert all(len(r["pass_medians_s"]) == 1 for r in data["results"])
    assert [r["contender"] for r in data["results"]] == list(bench_network.CONTENDERS)
    for r in data["results"]:
        assert r["network"] == "resnet18" and r["batch"] == 2 and r["image_size"] == 32
        assert len(r["times_s"]) == 1 and r["median_s"] > 0 and r["peak_bytes"] is None
    out = capsys.readouterr().out
    assert "resnet18, batch 2, 32x32, targets layer2, layer3, layer4" in out
    assert "the step with the 1x1 head is" in out
    assert "the step with the 1x1 head in channels_last is" in out


def test_peak_memory_counts_what_a_step_keeps():
    small = bench_network.peak_bytes(bench_network.make_step("resnet18", "plain", 2, 32))
    large = bench_network.peak_bytes(bench_network.make_step("resnet18", "plain", 8, 32))
    if small is None:
        pytest.skip("the profiler's memory timeline is not available in this torch")
    parameters = 11_689_512 * 4  # resnet18's weights, and as much again for gradients, momentum
    assert 2 * parameters < small < large


def test_targets_verdicts():
    def record(contender, ms, layer_ms=None):  # two passes, the second under load
        return {"network": "resnet18", "contender": contender, "layer_s": layer_ms and layer_ms / 1e3,
                "pass_medians_s": [ms / 1e3, 2 * ms / 1e3]}

    records = [record("plain", 100), record("dropout", 105, 5), record("heads-conv", 113),
               record("fused-conv", 114, 1), record("heads-1x1", 102), record("fused-1x1", 104, 2)]
    verdicts = dict((text.split(":")[1].split("(")[0].strip(), ok)
                    for text, ok in bench_network.targets_met(records))
    assert verdicts == {"the fused layer's own time with the conv head": True,
                        "the fused layer's own time with the 1x1 head": True,
                        "the step with the 1x1 head is 1.040x plain's": True}
    records[-1] = record("fused-1x1", 108, 6)  # 6 ms of its own, dropout's 5; 1.08x plain
    assert [ok for _, ok in bench_network.targets_met(records)] == [True, False, False]

    # channels_last twins are compared with plain-cl and with the heads in channels_last
    records += [record("plain-cl", 50), record("dropout-cl", 51, 3), record("heads-1x1-cl", 52),
                record("fused-1x1-cl", 54, 2)]
    assert bench_network.ratio_to_plain(records, "resnet18", "fused-1x1-cl") == pytest.approx(1.08)
    assert bench_network.own_share(records, "resnet18", "fused-1x1-cl") == pytest.approx(3e-3)
    assert bench_network.own_share(records, "resnet18", "dropout-cl") == pytest.approx(1.5e-3)
    assert bench_network.targets_met(records)[3:] == [
        ("resnet18: the fused layer's own time with the 1x1 head in channels_last (2.0 ms) <= "
         "nn.Dropout's (3.0 ms)", True),
        ("resnet18: the step with the 1x1 head in channels_last is 1.080x plain's (target <= 1.05x)",
         False)]


def test_layer_time_is_the_layers_own():
    times = {c: bench_network.layer_seconds(bench_network.make_step("resnet18", c, 2, 32), c)
             for c in ("plain", "dropout", "fused-1x1", "reference-conv")}
    assert times["plain"] is None and times["reference-conv"] is None
    assert times["dropout"] > 0 and times["fused-1x1"] > 0  # the events are named as expected


@pytest.mark.parametrize("args, says", [
    (["--network", "alexnet"], "--network: unknown"),
    (["--network", "--image-size", "8"], "--image-size >= 32"),
])
def test_bad_network_arguments(args, says, capsys):
    with pytest.raises(SystemExit):
        bench.main(args)
    assert says in capsys.readouterr().err
