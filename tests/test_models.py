"""Shapes and structure of the paper's networks (Table 2, Fig. 3a, Table 1)."""

import pytest
import torch
from torch import nn

import infodrop
from infodrop.paper.models import (
    DROPOUT_KINDS,
    ConstantLogNormalDropout,
    build_model,
    information_dropout_layers,
    negative_elbo,
    set_noise,
)


@pytest.mark.parametrize("dropout", DROPOUT_KINDS)
@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_all_cnn_32_logits_and_slots(dropout, activation):
    model = build_model("allcnn32", image_shape=(1, 32, 32), dropout=dropout,
                        activation=activation, width=0.1)
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 10)
    slots = information_dropout_layers(model)
    assert len(slots) == (2 if dropout == "info" else 0)


def test_all_cnn_96_slot_resolutions_match_fig_2():
    model = build_model("allcnn96", image_shape=(1, 96, 96), width=0.1)
    sizes = []
    hooks = [layer.register_forward_hook(lambda m, args, out: sizes.append(out.shape[-1]))
             for _, layer in information_dropout_layers(model)]
    assert model(torch.rand(2, 1, 96, 96)).shape == (2, 10)
    for hook in hooks:
        hook.remove()
    assert sizes == [48, 24, 12, 6]


def test_width_scales_filters_but_not_classes():
    full = build_model("allcnn32", image_shape=(3, 32, 32), width=1.0)
    quarter = build_model("allcnn32", image_shape=(3, 32, 32), width=0.25)
    convs = [m for m in full.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 96 and convs[0].in_channels == 3
    quarter_convs = [m for m in quarter.modules() if isinstance(m, nn.Conv2d)]
    assert quarter_convs[0].out_channels == 24
    assert quarter_convs[-1].out_channels == 10


def test_batch_norm_before_every_activation():
    model = build_model("allcnn32", image_shape=(1, 32, 32), dropout="binary", width=0.1)
    # one BN per conv of Table 2 (8 convs + the class maps); the binary slots add no conv
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9


def test_wrong_input_size_is_rejected():
    with pytest.raises(ValueError, match="allcnn96 takes 96x96"):
        build_model("allcnn96", image_shape=(1, 32, 32))
    with pytest.raises(ValueError, match="dropout must be one of"):
        build_model("allcnn32", image_shape=(1, 32, 32), dropout="gaussian")


@pytest.mark.parametrize("dropout", DROPOUT_KINDS)
def test_mlp_has_three_hidden_layers_of_width(dropout):
    model = build_model("mlp", image_shape=(1, 28, 28), width=20, dropout=dropout)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if dropout == "info":  # each info layer has a main and an alpha branch
        linears = [m for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and "alpha" not in name]
    assert [m.out_features for m in linears] == [20, 20, 20, 10]
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)


def test_noise_switch_changes_output_only_when_on():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    for dropout in ("info", "binary", "lognormal"):
        model = build_model("mlp", image_shape=(1, 28, 28), width=16, dropout=dropout).eval()
        assert torch.equal(model(x), model(x))
        set_noise(model, True)
        assert not torch.equal(model(x), model(x)), dropout


def test_constant_log_normal_noise_has_the_requested_log_std():
    torch.manual_seed(0)
    layer = ConstantLogNormalDropout(0.5)
    z = layer(torch.ones(200_000))
    assert abs(torch.log(z).std().item() - 0.5) < 0.01
    assert torch.equal(layer.eval()(torch.ones(3)), torch.ones(3))


@pytest.mark.parametrize("latent", ["gaussian", "info"])
def test_vae_shapes_and_kl(latent):
    model = build_model("vae", image_shape=(1, 8, 8), width=1 / 32, latent=latent)
    x = torch.rand(5, 1, 8, 8)
    reconstruction, kl = negative_elbo(model, x)
    assert reconstruction.shape == kl.shape == (5,)
    assert (kl >= 0).all() and (reconstruction > 0).all()
    if latent == "info":
        assert torch.equal(infodrop.kl_divergence(model), kl)
