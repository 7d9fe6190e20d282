"""The training CLI: loss goes down, metrics/checkpoints written, argument errors, batch-norm
re-estimation, and a 2-process DistributedDataParallel run on the CPU."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from infodrop.paper import train
from infodrop.paper.models.slots import conv_layer, set_noise

TINY = ["--data", "digits", "--train-size", "200", "--test-size", "60", "--batch-size", "50",
        "--no-progress"]


def run_cli(tmp_path, *extra):
    out = tmp_path / "run"
    assert train.main([*TINY, "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text()), out


@pytest.mark.parametrize("dropout", ["info", "binary"])
def test_mlp_training_reduces_the_loss(tmp_path, dropout):
    metrics, out = run_cli(tmp_path, "--model", "mlp", "--width", "64", "--epochs", "4",
                           "--lr", "0.05", "--dropout", dropout)
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert losses[-1] < losses[0]
    last = metrics["epochs"][-1]
    assert 0 <= last["error_D"] <= 100 and 0 <= last["error_N"] <= 100
    assert len(last["kl_per_layer"]) == (3 if dropout == "info" else 0)
    model, args = train.load_checkpoint(out / "checkpoint.pt")
    assert args.dropout == dropout and isinstance(model, nn.Module)


def test_all_cnn_run_writes_kl_maps(tmp_path):
    metrics, out = run_cli(tmp_path, "--model", "allcnn32", "--activation", "softplus",
                           "--width", "0.05", "--epochs", "1", "--beta", "0.01",
                           "--kl-maps", "2")
    assert set(metrics["epochs"][0]["kl_per_layer"]) == {"features.2.dropout",
                                                          "features.5.dropout"}
    assert (out / "kl_maps.png").stat().st_size > 0


@pytest.mark.parametrize("latent", ["gaussian", "info"])
def test_vae_elbo_improves(tmp_path, latent):
    metrics, _ = run_cli(tmp_path, "--model", "vae", "--latent", latent, "--width", "0.0625",
                         "--epochs", "3", "--lr", "0.01")
    elbos = [e["elbo"] for e in metrics["epochs"]]
    assert elbos[-1] > elbos[0]


def test_paper_schedule_is_scaled_to_the_epochs():
    args = train.resolve_defaults(train.parse_args(["--model", "mlp", "--epochs", "8"]))
    assert args.lr == 0.07 and args.milestones == [3, 7]  # 30 and 70 of 80
    args = train.resolve_defaults(train.parse_args(["--model", "allcnn32"]))
    assert args.epochs == 160 and args.milestones == [80, 120]


@pytest.mark.parametrize("argv, named", [
    (["--model", "resnet"], "--model"),
    (["--model", "mlp", "--dropout", "gaussian"], "--dropout"),
    (["--model", "mlp", "--data", "cifar10"], "--data"),
    (["--model", "mlp", "--beta", "-1"], "--beta"),
    (["--model", "mlp", "--epochs", "0"], "--epochs"),
])
def test_bad_arguments_are_named(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_batch_norm_is_re_estimated_without_noise():
    torch.manual_seed(0)
    layer = conv_layer(1, 4, 3, activation="relu", dropout="lognormal")
    model = nn.Sequential(layer, conv_layer(4, 3, 3, activation="relu"))
    images = torch.rand(40, 1, 8, 8)
    loader = [(images[:20], None), (images[20:], None)]
    train.recalibrate_batch_norm(model, loader, torch.device("cpu"))
    assert not model.training
    # What the second BN saw: the first block's noise-free output under batch statistics;
    # the cumulative average of two equal batches is the mean of their means.
    layer.train()
    set_noise(layer, False)
    with torch.no_grad():
        means = [model[1][0](layer(batch)).mean(dim=(0, 2, 3)) for batch, _ in loader]
    expected = (means[0] + means[1]) / 2
    model.eval()
    torch.testing.assert_close(model[1][1].running_mean, expected, rtol=1e-4, atol=1e-6)


def test_two_process_ddp_run_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--standalone", "-m", "infodrop", "train", "--model", "mlp", "--width", "32",
         "--epochs", "2", "--device", "cpu", "--out", str(out), *TINY],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2


def test_checkpoint_with_a_pickled_callable_is_refused(tmp_path):
    """torch.load(weights_only=False) would call os.system while unpickling this file."""
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-not-run > " + str(tmp_path / "ran"),))

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "args": {"model": "mlp"}, "image_shape": [1, 8, 8],
                "payload": Payload()}, path)
    with pytest.raises(ValueError, match="refusing to load checkpoint"):
        train.load_checkpoint(path)
    assert not (tmp_path / "ran").exists()
