"""The KL of a forward pass (track_kl, kl_divergence) and kl_weight: the layer applying the KL's
gradient in its own backward, also under checkpointing and torch.compile."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import infodrop


def eval_kl(x, logit, **options):
    """The per-sample KL of one call (it does not depend on the noise)."""
    return infodrop.information_dropout(x, logit, training=False, **options)[1]


class TwoLayers(nn.Module):
    """Two Information Dropout layers on fixed alpha logits; ``skip`` leaves the second out,
    ``repeat`` calls the first twice, ``split`` gives the second only the first rows."""

    def __init__(self, **options):
        super().__init__()
        self.first = infodrop.InformationDropout(**options)
        self.second = infodrop.InformationDropout(**options)
        self.logit = nn.Parameter(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)))

    def forward(self, x, skip=False, repeat=False, split=False):
        z = self.first(x, self.logit)
        if repeat:
            z = self.first(z, self.logit)
        if skip:
            return z
        if split:
            return self.second(z[:2], self.logit[:2])
        return self.second(z, self.logit)


def inputs():
    return torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) + 0.1


def warm_up(model, x):
    """A first training step of the model, tracked."""
    infodrop.track_kl(model)(x)
    infodrop.kl_divergence(model)
    return model


def test_a_skipped_layer_adds_nothing_and_backward_works():
    """Before: the skipped layer's KL of the previous step was added, and backward failed
    ("Trying to backward through the graph a second time")."""
    model, x = infodrop.track_kl(TwoLayers()), inputs()
    model(x)
    infodrop.kl_divergence(model).sum().backward()
    z = model(x, skip=True)
    kl = infodrop.kl_divergence(model)
    torch.testing.assert_close(kl, eval_kl(x, model.logit))
    assert model.second.kl is None
    (z.sum() + kl.sum()).backward()


def test_a_model_that_ran_untracked_is_an_error():
    """Issue 17: the first kl_divergence of an untracked model counted a layer that the last
    pass skipped (its KL of an earlier pass).  Which layers ran cannot be known then: an error
    that says what to do.  A layer or block alone runs its layer once per call: exact."""
    model, x = TwoLayers(), inputs()
    model(x)
    model(x, skip=True)
    with pytest.raises(RuntimeError, match=r"\['first', 'second'\].*infodrop.track_kl\(model\)"):
        infodrop.kl_divergence(model)
    infodrop.track_kl(model)(x, skip=True)
    torch.testing.assert_close(infodrop.kl_divergence(model), eval_kl(x, model.logit))
    block = infodrop.InfoDropLinear(6, 6)
    block(x)
    torch.testing.assert_close(infodrop.kl_divergence(block), block.dropout.kl)
    layer = infodrop.InformationDropout()
    layer(x, model.logit)
    torch.testing.assert_close(infodrop.kl_divergence(layer), eval_kl(x, model.logit))


def test_an_eval_forward_does_not_leak_into_the_next_sum():
    model, x = TwoLayers(), inputs()
    warm_up(model, x).eval()
    model(x)
    model.train()
    model(x, skip=True)
    torch.testing.assert_close(infodrop.kl_divergence(model), eval_kl(x, model.logit))


def test_a_layer_called_twice_counts_both_calls():
    """Before: the last call only."""
    model, x = TwoLayers(), inputs()
    warm_up(model, x).eval()
    model(x, repeat=True)
    want = 2 * eval_kl(x, model.logit) + eval_kl(x, model.logit)  # first twice, second once
    torch.testing.assert_close(infodrop.kl_divergence(model), want)
    torch.testing.assert_close(model.first.kl, 2 * eval_kl(x, model.logit))


def test_different_batch_sizes_reduce_by_mean_or_name_the_layers():
    """Before: torch.stack failed on layers last run with different batch sizes."""
    model, x = TwoLayers(), inputs()
    warm_up(model, x).eval()
    model(x, split=True)
    first, second = eval_kl(x, model.logit), eval_kl(x[:2], model.logit[:2])
    torch.testing.assert_close(infodrop.kl_divergence(model, reduction="mean"),
                               first.mean() + second.mean())
    torch.testing.assert_close(infodrop.kl_divergence(model, reduction="sum"),
                               first.sum() + second.sum())
    with pytest.raises(ValueError, match=r"\('first', 4\), \('second', 2\).*reduction='mean'"):
        infodrop.kl_divergence(model)
    with pytest.raises(ValueError, match="reduction"):
        infodrop.kl_divergence(model, reduction="avg")


def test_nested_tracked_models_share_the_outer_pass():
    """An inner tracked model (a converted submodule) does not reset what the outer pass
    recorded before it ran."""
    inner = infodrop.track_kl(nn.Sequential(infodrop.InfoDropLinear(6, 6)))
    layer = infodrop.InfoDropLinear(6, 6)
    outer = infodrop.track_kl(nn.Sequential(layer, inner, layer)).eval()
    x = torch.randn(3, 6)
    outer(x)
    assert len(layer.dropout._kl_calls) == 2
    torch.testing.assert_close(infodrop.kl_divergence(outer), layer.kl + inner[0].kl)
    torch.testing.assert_close(infodrop.kl_divergence(inner), inner[0].kl)


def test_a_pass_that_raised_leaves_the_next_one_exact():
    model, x = TwoLayers(), inputs()
    warm_up(model, x)
    with pytest.raises(ValueError, match="InformationDropout"):
        model(torch.rand(4, 5))  # the wrong shape for the alpha logits
    model.eval()
    model(x, skip=True)
    assert model.second.kl is None and len(model.first._kl_calls) == 1


def test_outside_a_tracked_pass_a_layer_keeps_its_last_call():
    layer = infodrop.InformationDropout().eval()
    x = inputs()
    layer(x, torch.zeros_like(x))
    layer(x, torch.ones_like(x))
    torch.testing.assert_close(layer.kl, eval_kl(x, torch.ones_like(x)))


def test_copy_pickle_and_state_dict_at_any_moment():
    """Before: deepcopy after a training forward raised ("Only Tensors created explicitly by the
    user ... support the deepcopy protocol"), which broke EMA and best-model copies."""
    model = nn.Sequential(infodrop.InfoDropLinear(6, 8, activation="softplus"),
                          infodrop.InfoDropLinear(8, 3))
    x = torch.randn(5, 6)
    infodrop.track_kl(model)(x)
    infodrop.kl_divergence(model)
    twin = copy.deepcopy(model)
    assert twin[0].kl is None and model[0].kl is not None  # the copy holds no graph tensor
    buffer = io.BytesIO()
    torch.save(model, buffer)
    loaded = pickle.loads(pickle.dumps(model))
    assert set(model.state_dict()) == set(twin.state_dict())
    model.eval()  # a training forward would move the learned prior of each copy on
    for other in (twin.eval(), loaded.eval()):
        torch.testing.assert_close(other(x), model(x))
        torch.testing.assert_close(infodrop.kl_divergence(other), infodrop.kl_divergence(model))


def test_no_layer_has_run():
    with pytest.raises(RuntimeError, match="no InformationDropout layer"):
        infodrop.kl_divergence(TwoLayers())


def test_a_tracked_model_compiles_to_one_graph_without_recompiling_per_pass():
    torch.manual_seed(0)
    net = infodrop.track_kl(nn.Sequential(
        infodrop.InfoDropConv2d(3, 4, 3), infodrop.InfoDropConv2d(4, 4, 3, activation="softplus")))
    x = torch.rand(2, 3, 12, 12)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(net)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            out = compiled(x)
            kl = infodrop.kl_divergence(net)
            (out.sum() + kl.sum()).backward()
    torch.testing.assert_close(kl, net[0].kl + net[1].kl)


# kl_weight ---------------------------------------------------------------------------------

WEIGHT = 0.25


class Net(nn.Module):
    """A conv block (ReLU) and a linear block (Softplus, learned prior: the KL reads x there)."""

    def __init__(self, kl_weight=None, wrap=None):
        super().__init__()
        self.conv = infodrop.InfoDropConv2d(2, 3, 3, stride=2, padding=1, kl_weight=kl_weight)
        self.linear = infodrop.InfoDropLinear(27, 4, activation="softplus", kl_weight=kl_weight)
        self.wrap = wrap
        infodrop.track_kl(self)

    def forward(self, x):
        h = self.conv(x) if self.wrap is None else self.wrap(self.conv, x)
        return self.linear(h.flatten(1))


WRAPS = {"plain": None,
         "reentrant": lambda f, x: checkpoint(f, x, use_reentrant=True),
         "non-reentrant": lambda f, x: checkpoint(f, x, use_reentrant=False)}


def gradients(model, explicit):
    torch.manual_seed(0)
    x = torch.randn(3, 2, 6, 6, requires_grad=True)
    torch.manual_seed(7)
    out = model(x)
    loss = out.square().mean()
    if explicit:
        loss = loss + WEIGHT * infodrop.kl_divergence(model, reduction="mean")
    loss.backward()
    return [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("wrap", WRAPS)
def test_kl_weight_applies_the_kl_gradient_in_backward(wrap):
    """The gradients of loss + kl_weight * kl.mean() per layer, with the loss alone: plain,
    and under reentrant (before: the KL gradient was silently dropped) and non-reentrant
    checkpointing."""
    torch.manual_seed(1)
    reference = Net()
    weighted = Net(kl_weight=WEIGHT, wrap=WRAPS[wrap])
    weighted.load_state_dict(reference.state_dict())
    want, got = gradients(reference, True), gradients(weighted, False)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # the KL stays there for logging, detached: adding it to the loss changes nothing
    kl = infodrop.kl_divergence(weighted)
    assert not kl.requires_grad and weighted.conv.kl is not None
    torch.testing.assert_close(kl, infodrop.kl_divergence(reference).detach())


def test_reentrant_checkpoint_without_kl_weight_raises():
    """Before: kl.requires_grad was False and the KL gradient silently lost."""
    model = Net(wrap=WRAPS["reentrant"])
    with pytest.raises(RuntimeError, match=r"InformationDropout\(.*use_reentrant=True.*kl_weight"):
        model(torch.randn(3, 2, 6, 6, requires_grad=True))
    with torch.no_grad():  # no checkpoint: a forward without gradients is fine
        Net()(torch.randn(3, 2, 6, 6))


def test_kl_weight_allows_in_place_ops_after_the_layer():
    layer = infodrop.InformationDropout(kl_weight=WEIGHT)
    x, logit = inputs().requires_grad_(), torch.randn(4, 6, requires_grad=True)
    torch.relu_(layer(x, logit)).sum().backward()
    assert logit.grad is not None


def test_kl_weight_compiles_with_fullgraph_and_matches_eager():
    torch.manual_seed(1)
    model = Net(kl_weight=WEIGHT)
    twin = copy.deepcopy(model)  # a training forward moves the learned prior: start both alike
    eager = gradients(model, False)
    torch._dynamo.reset()
    compiled = torch.compile(twin, fullgraph=True)
    for a, b in zip(gradients(compiled, False), eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", [-1.0, float("nan"), "0.1", True])
def test_kl_weight_is_checked(value):
    with pytest.raises(ValueError, match="kl_weight"):
        infodrop.InformationDropout(kl_weight=value)
