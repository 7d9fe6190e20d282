"""The nn.Modules: train/eval like nn.Dropout, the prior that follows the data, errors that name
the module, reset_parameters and meta-device init, and the blocks' nn.Conv2d/nn.Linear
arguments and activations."""

import pytest
import torch
from torch import nn

import infodrop
from infodrop._spec import PRIOR_SIGMA_FLOOR, X_FLOOR


def test_information_dropout_train_and_eval():
    layer = infodrop.InformationDropout()
    x, logit = torch.rand(4, 10) + 0.1, torch.randn(4, 10)
    z = layer(x, logit)
    assert not torch.equal(z, x) and layer.kl.shape == (4,)
    layer.eval()
    assert torch.equal(layer(x, logit), x)
    eval_kl = layer.kl
    layer.train()
    layer(x, logit)
    torch.testing.assert_close(layer.kl, eval_kl)  # the KL does not depend on the noise
    noisy = infodrop.InformationDropout(noise_in_eval=True).eval()
    assert not torch.equal(noisy(x, logit), x)


def test_repr_names_the_options():
    text = repr(infodrop.InformationDropout(prior="log_normal", max_alpha=1.0, unit_mean=True,
                                            kl_weight=1e-4))
    assert "prior='log_normal'" in text and "max_alpha=1.0" in text and "unit_mean=True" in text
    assert "kl_weight=0.0001" in text


def test_log_uniform_layer_has_no_parameters_or_state():
    layer = infodrop.InformationDropout()
    assert not list(layer.parameters()) and not layer.state_dict()


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(prior="x"), "prior"), (dict(max_alpha=-1), "max_alpha"), (dict(backend="gpu"), "backend"),
    (dict(prior_momentum=0), "prior_momentum"),
])
def test_module_checks_its_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        infodrop.InformationDropout(**kwargs)


def test_errors_inside_a_model_name_the_module():
    """Before: "alpha_logit must have the shape of x", with no word of which layer."""
    model = nn.Sequential(nn.Identity(), infodrop.InformationDropout(prior="log_normal", max_alpha=0.5))
    with pytest.raises(ValueError, match=r"InformationDropout\(prior='log_normal', max_alpha=0.5.*"
                                         r"alpha_logit must have the shape"):
        model[1](torch.rand(2, 3), torch.rand(2, 4))


# The log-normal prior follows the data -----------------------------------------------------

def moment_match(x, logit, max_alpha=0.7, alpha_min=1e-3):
    """The (mu, sigma) that minimise the summed log-normal KL of one call (docs/spec.md)."""
    log_x = x.double().clamp_min(X_FLOOR).log()
    alpha = alpha_min + max_alpha * torch.sigmoid(logit.double())
    mu = log_x.mean()
    return mu, ((log_x - mu).square() + alpha.square()).mean().sqrt()


def test_prior_moves_to_the_minimiser_of_the_kl():
    g = torch.Generator().manual_seed(0)
    x, logit = torch.rand(6, 50, generator=g) * 3, torch.randn(6, 50, generator=g)
    layer = infodrop.InformationDropout(prior="log_normal", prior_momentum=1.0)
    layer(x, logit)
    mu, sigma = moment_match(x, logit)
    torch.testing.assert_close(layer.mu.double(), mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.sigma.double(), sigma, rtol=1e-5, atol=1e-6)
    # it is the minimiser: the KL's gradient in mu and sigma vanishes there
    m, s = (t.detach().double().requires_grad_() for t in (mu, sigma))
    _, kl = infodrop.information_dropout(x.double(), logit.double(), prior="log_normal", mu=m,
                                         sigma=s, training=False)
    grads = torch.autograd.grad(kl.sum(), [m, s])
    assert all(abs(g.item()) < 1e-8 * x.numel() for g in grads)
    # with momentum 0.1 a step goes a tenth of the way; eval calls do not move it
    slow = infodrop.InformationDropout(prior="log_normal")
    slow(x, logit)
    torch.testing.assert_close(slow.mu.double(), 0.1 * mu, rtol=1e-5, atol=1e-6)
    slow.eval()(x * 5, logit)
    torch.testing.assert_close(slow.mu.double(), 0.1 * mu, rtol=1e-5, atol=1e-6)


def test_prior_follows_the_logits_with_their_bias():
    """A layer called with logit_bias is the layer called on alpha_logit + bias: its output and
    the prior it moves to (whose sigma reads alpha)."""
    g = torch.Generator().manual_seed(0)
    x, logit = torch.rand(6, 5, 10, generator=g) * 3, torch.randn(6, 5, 10, generator=g)
    bias = torch.randn(5, generator=g) * 2
    with_bias, summed = (infodrop.InformationDropout(prior="log_normal", prior_momentum=1.0)
                         for _ in range(2))
    torch.manual_seed(3)
    z = with_bias(x, logit, bias)
    torch.manual_seed(3)
    z2 = summed(x, logit + bias.view(1, -1, 1))
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    mu, sigma = moment_match(x, logit + bias.view(1, -1, 1))
    torch.testing.assert_close(with_bias.sigma.double(), sigma, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_bias.mu, summed.mu, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"InformationDropout\(prior='log_normal'.*logit_bias "
                                         r"must have shape \(5,\)"):
        with_bias(x, logit, bias[:4])


def test_prior_reads_a_bounded_number_of_units():
    """The moment match reads the first samples of a call, at most 2**16 units."""
    g = torch.Generator().manual_seed(0)
    x, logit = torch.rand(40, 4000, generator=g) + 0.1, torch.randn(40, 4000, generator=g)
    x[16:] = 100.0  # beyond the first 16 samples (16 x 4000 <= 2**16 < 17 x 4000)
    layer = infodrop.InformationDropout(prior="log_normal", prior_momentum=1.0)
    layer(x, logit)
    mu, sigma = moment_match(x[:16], logit[:16])
    torch.testing.assert_close(layer.mu.double(), mu, rtol=1e-5, atol=1e-6)


def test_a_layer_with_a_learned_prior_called_twice_trains():
    """The prior moves between the calls: the first call's backward still has its values."""
    layer = infodrop.InformationDropout(prior="log_normal")
    x, logit = (torch.rand(3, 5) + 0.1).requires_grad_(), torch.randn(3, 5, requires_grad=True)
    (layer(layer(x, logit), logit).sum() + layer.kl.sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(logit.grad).all()


def test_learned_prior_cannot_break_under_an_optimiser():
    """Issue 13: x = 1, alpha near its floor, 8 x 4096 units, loss = kl.mean(), SGD lr 0.1.
    Before: sigma was -408.6 after one step and the next forward raised."""
    layer = infodrop.InformationDropout(prior="log_normal")
    x = torch.ones(8, 4096)
    logit = torch.full((8, 4096), -20.0, requires_grad=True)
    opt = torch.optim.SGD([logit, *layer.parameters()], lr=0.1)
    for _ in range(5):
        z = layer(x, logit)
        opt.zero_grad()
        layer.kl.mean().backward()
        opt.step()
        assert torch.isfinite(z).all() and torch.isfinite(layer.kl).all()
    assert layer.sigma.item() >= PRIOR_SIGMA_FLOOR and torch.isfinite(layer.mu)
    # a batch with an inf or nothing in it leaves the prior where it was
    before = layer.mu.clone(), layer.sigma.clone()
    layer(torch.full((2, 3), float("inf")), torch.zeros(2, 3))
    layer(torch.ones(0, 3), torch.zeros(0, 3))
    assert torch.equal(layer.mu, before[0]) and torch.equal(layer.sigma, before[1])


def test_checkpoints_of_the_earlier_module_load():
    """The earlier module held mu and sigma as parameters (learned) or buffers (fixed)."""
    old = {"mu": nn.Parameter(torch.tensor(0.3)), "sigma": nn.Parameter(torch.tensor(2.5))}
    x, logit = torch.rand(3, 7) + 0.1, torch.randn(3, 7)
    for learn in (True, False):
        layer = infodrop.InformationDropout(prior="log_normal", learn_prior=learn)
        layer.load_state_dict(old)
        assert (layer.mu.item(), layer.sigma.item()) == pytest.approx((0.3, 2.5))
        layer.eval()(x, logit)
        _, want = infodrop.information_dropout(x, logit, prior="log_normal", mu=0.3, sigma=2.5,
                                               training=False)
        torch.testing.assert_close(layer.kl, want)


def test_fixed_prior_stays():
    layer = infodrop.InformationDropout(prior="log_normal", mu=0.5, sigma=2.0, learn_prior=False)
    layer(torch.rand(3, 7) + 0.1, torch.randn(3, 7))
    assert (layer.mu.item(), layer.sigma.item()) == (0.5, 2.0)
    assert not list(layer.parameters()) and set(layer.state_dict()) == {"mu", "sigma"}


# reset_parameters, meta-device init, factory kwargs ----------------------------------------

BUILDERS = {
    "layer": lambda **f: infodrop.InformationDropout(prior="log_normal", mu=0.5, sigma=2.0, **f),
    "conv": lambda **f: infodrop.InfoDropConv2d(3, 4, 3, activation="softplus", **f),
    "linear": lambda **f: infodrop.InfoDropLinear(5, 6, batch_norm=True, **f),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_meta_init_then_reset_parameters_equals_a_fresh_module(name):
    """Before: no reset_parameters, and to_empty left sigma as uninitialised memory."""
    torch.manual_seed(0)
    fresh = BUILDERS[name]()
    with torch.device("meta"):
        lazy = BUILDERS[name]()
    lazy.to_empty(device="cpu")
    torch.manual_seed(0)
    lazy.reset_parameters()
    want = fresh.state_dict()
    assert set(lazy.state_dict()) == set(want)
    for key, value in lazy.state_dict().items():
        assert torch.equal(value, want[key]), key


@pytest.mark.parametrize("name", BUILDERS)
def test_factory_kwargs(name):
    module = BUILDERS[name](device="cpu", dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in module.state_dict().values() if t.is_floating_point())


# The blocks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("activation, prior", [("relu", "log_uniform"), ("softplus", "log_normal")])
def test_conv_block_shapes_and_prior(activation, prior):
    block = infodrop.InfoDropConv2d(3, 16, 3, stride=2, padding=1, activation=activation)
    assert block.dropout.prior == prior
    assert block.alpha_branch.bias is not None and block.main.bias is None
    z = block(torch.randn(5, 3, 32, 32))
    assert z.shape == (5, 16, 16, 16) and block.kl.shape == (5,)
    assert (z >= 0).all()


def test_conv_block_takes_the_nn_conv2d_arguments():
    """Before: dilation=2 gave "InformationDropout.__init__() got an unexpected keyword argument"."""
    block = infodrop.InfoDropConv2d(4, 6, 3, 1, 2, dilation=2, groups=2, bias=True,
                                    padding_mode="reflect", dtype=torch.float64)
    for conv in (block.main, block.alpha_branch):
        assert (conv.dilation, conv.groups, conv.padding_mode) == ((2, 2), 2, "reflect")
        assert conv.weight.dtype == torch.float64 and conv.bias is not None
    assert block(torch.randn(2, 4, 9, 9, dtype=torch.float64)).shape == (2, 6, 9, 9)


def test_linear_block_takes_the_nn_linear_arguments():
    block = infodrop.InfoDropLinear(8, 4, True, dtype=torch.float64, batch_norm=True)
    assert block.main.bias is not None and block.main.weight.dtype == torch.float64
    assert block(torch.randn(3, 8, dtype=torch.float64)).shape == (3, 4)


@pytest.mark.parametrize("activation, prior", [
    ("gelu", "log_uniform"), ("relu6", "log_uniform"), ("sigmoid", "log_normal"),
    (nn.ReLU(), "log_uniform"), (nn.Softplus(beta=2.0), "log_normal"), (nn.SiLU(), "log_uniform"),
])
def test_any_activation_gets_the_prior_that_fits(activation, prior):
    block = infodrop.InfoDropLinear(5, 3, activation=activation)
    assert block.dropout.prior == prior
    if isinstance(activation, nn.Module):
        assert block.activation is activation
    assert block(torch.randn(2, 5)).shape == (2, 3)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(activation="relu", prior="log_normal"), ValueError, "log_normal.*does not fit.*relu"),
    (dict(activation="gelu", prior="log_normal"), ValueError, "log_normal.*does not fit.*gelu"),
    (dict(activation=nn.PReLU()), ValueError, "cannot tell which prior fits"),
    (dict(activation="tanhh"), ValueError, "activation must be"),
    (dict(activation=torch.relu), TypeError, "activation must be a name or an nn.Module"),
    (dict(max_alpha=-1.0), ValueError, "max_alpha must be > 0"),
    (dict(dilations=2), TypeError, r"unexpected keyword arguments \['dilations'\]"),
])
def test_block_errors_name_the_block(kwargs, error, pattern):
    """Before: prior='log_normal' with ReLU was accepted, and option errors named
    InformationDropout."""
    with pytest.raises(error, match="^InfoDropConv2d.*" + pattern):
        infodrop.InfoDropConv2d(3, 4, 3, **kwargs)


def test_unknown_activation_module_with_an_explicit_prior():
    block = infodrop.InfoDropConv2d(3, 4, 3, activation=nn.PReLU(), prior="log_uniform")
    assert block(torch.randn(2, 3, 5, 5)).shape == (2, 4, 3, 3)


def test_linear_block_and_kl_divergence_sums_layers():
    model = nn.Sequential(infodrop.InfoDropLinear(8, 16), infodrop.InfoDropLinear(16, 4))
    with pytest.raises(RuntimeError, match="no InformationDropout layer"):
        infodrop.kl_divergence(model)
    out = model(torch.randn(6, 8))
    assert out.shape == (6, 4)
    total = infodrop.kl_divergence(model)
    torch.testing.assert_close(total, model[0].kl + model[1].kl)


def test_alpha_branch_learns_through_the_noise():
    """Reparameterised sampling: the task loss alone moves the alpha branch."""
    block = infodrop.InfoDropLinear(8, 8)
    z = block(torch.randn(16, 8))
    z.square().sum().backward()
    assert block.alpha_branch.weight.grad.abs().sum() > 0
