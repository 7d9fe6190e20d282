"""The nn.Modules: train/eval like nn.Dropout, state_dict, learnable prior, Table 2 blocks."""

import pytest
import torch

import infodrop


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
    text = repr(infodrop.InformationDropout(prior="log_normal", max_alpha=1.0, unit_mean=True))
    assert "prior='log_normal'" in text and "max_alpha=1.0" in text and "unit_mean=True" in text


def test_log_normal_prior_is_learned_and_saved():
    layer = infodrop.InformationDropout(prior="log_normal", mu=0.5, sigma=2.0)
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"mu", "sigma"}
    x, logit = torch.rand(3, 7) + 0.1, torch.randn(3, 7)
    layer(x, logit)
    layer.kl.sum().backward()
    assert layer.mu.grad != 0 and layer.sigma.grad != 0
    clone = infodrop.InformationDropout(prior="log_normal")
    clone.load_state_dict(layer.state_dict())
    assert clone.mu.item() == 0.5 and clone.sigma.item() == 2.0
    fixed = infodrop.InformationDropout(prior="log_normal", learn_prior=False)
    assert not list(fixed.parameters()) and set(fixed.state_dict()) == {"mu", "sigma"}


def test_log_uniform_layer_has_no_parameters():
    assert not list(infodrop.InformationDropout().parameters())


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(prior="x"), "prior"), (dict(max_alpha=-1), "max_alpha"), (dict(backend="gpu"), "backend"),
])
def test_module_checks_its_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        infodrop.InformationDropout(**kwargs)


@pytest.mark.parametrize("activation, prior", [("relu", "log_uniform"), ("softplus", "log_normal")])
def test_conv_block_shapes_and_prior(activation, prior):
    block = infodrop.InfoDropConv2d(3, 16, 3, stride=2, padding=1, activation=activation)
    assert block.dropout.prior == prior
    assert block.alpha_branch.bias is not None and block.main.bias is None
    z = block(torch.randn(5, 3, 32, 32))
    assert z.shape == (5, 16, 16, 16) and block.kl.shape == (5,)
    assert (z >= 0).all()


def test_linear_block_and_kl_divergence_sums_layers():
    model = torch.nn.Sequential(infodrop.InfoDropLinear(8, 16), infodrop.InfoDropLinear(16, 4))
    with pytest.raises(RuntimeError, match="has run a forward"):
        infodrop.kl_divergence(model)
    out = model(torch.randn(6, 8))
    assert out.shape == (6, 4)
    total = infodrop.kl_divergence(model)
    torch.testing.assert_close(total, model[0].kl + model[1].kl)


def test_block_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        infodrop.InfoDropConv2d(3, 4, 3, activation="tanh")


def test_alpha_branch_learns_through_the_noise():
    """Reparameterised sampling: the task loss alone moves the alpha branch."""
    block = infodrop.InfoDropLinear(8, 8)
    z = block(torch.randn(16, 8))
    z.square().sum().backward()
    assert block.alpha_branch.weight.grad.abs().sum() > 0
