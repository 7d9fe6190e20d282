"""Training options Fig. 2 needed at CPU scale: a linear warm-up of beta and the KL on active
units only (--mask-inactive), both carried into the checkpoint."""

import pytest
import torch

from infodrop.paper import train
from infodrop.paper.models import information_dropout_layers

from .test_train import run_cli


def parsed(*argv):
    return train.resolve_defaults(train.parse_args(["--model", "mlp", *argv]))


def test_beta_is_constant_without_warmup():
    args = parsed("--beta", "2")
    assert [train.beta_at(args, e) for e in (0, 0.5, 10)] == [2, 2, 2]


def test_beta_grows_linearly_over_the_warmup_then_stays():
    args = parsed("--beta", "2", "--beta-warmup", "4")
    assert [train.beta_at(args, e) for e in (0, 1, 2, 4, 9)] == pytest.approx([0, 0.5, 1, 2, 2])


def test_negative_warmup_is_named():
    with pytest.raises(SystemExit):
        parsed("--beta-warmup", "-1")


def test_warmup_lowers_the_kl_weight_of_the_first_epoch(tmp_path):
    # with beta large the KL dominates the loss; during the warm-up epoch it weighs half on
    # average, so the first epoch's loss is lower than with constant beta
    common = ("--model", "mlp", "--width", "32", "--epochs", "1", "--lr", "0.01", "--beta", "50")
    constant, _ = run_cli(tmp_path / "c", *common)
    warm, _ = run_cli(tmp_path / "w", *common, "--beta-warmup", "1")
    assert warm["epochs"][0]["train_loss"] < constant["epochs"][0]["train_loss"]


def test_mask_inactive_reaches_every_layer_and_the_checkpoint(tmp_path):
    _, out = run_cli(tmp_path, "--model", "mlp", "--width", "16", "--epochs", "1",
                     "--mask-inactive")
    model, args = train.load_checkpoint(out / "checkpoint.pt")
    layers = information_dropout_layers(model)
    assert args.mask_inactive and layers and all(layer.mask_inactive for _, layer in layers)
    _, plain = run_cli(tmp_path / "plain", "--model", "mlp", "--width", "16", "--epochs", "1")
    model, _ = train.load_checkpoint(plain / "checkpoint.pt")
    assert not any(layer.mask_inactive for _, layer in information_dropout_layers(model))
    assert isinstance(model(torch.rand(2, 1, 8, 8)), torch.Tensor)
