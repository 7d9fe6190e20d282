"""Fig. 1: the empirical distribution p(z) of the post-noise activations of the last Information
Dropout layer of All-CNN-32 against the proposed prior: log-uniform for ReLU (a), log-normal for
Softplus (b).  Trained on Fashion-MNIST (CIFAR-10 in the paper), 25% of the filters.

    python -m experiments.fig1_activations           # 3,000 train images, 8 epochs: ~3 min
    python -m experiments.fig1_activations --full    # all 60,000 images, full width, 160 epochs

Writes fig1.png (histograms of log z with the priors) and summary.json (infodrop.paper.analysis
.prior_fit per activation: Kolmogorov-Smirnov distances of log z to each prior).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments.fig5_beta_tc import LAST_LAYER
from infodrop.paper import analysis, train
from infodrop.paper.report import markdown_table, run_training, save_report

PRIOR = {"relu": "log-uniform", "softplus": "log-normal"}


def plot(path, samples, fits, priors):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, (activation, z) in zip(axes, samples.items()):
        log_z = np.log(z[z > 0].numpy())
        fit = fits[activation]
        ax.hist(log_z, bins=120, density=True, color="0.6", label="p(log z), z > 0")
        grid = np.linspace(log_z.min(), log_z.max(), 400)
        if activation == "relu":
            low, high = np.quantile(log_z, [0.01, 0.99])
            ax.plot([low, high], [0.98 / (high - low)] * 2, "r-",
                    label="log-uniform prior (98% of z > 0)")
        else:
            mu, sigma = priors[activation]
            ax.plot(grid, np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)),
                    "r-", label=f"learned log-normal prior ({mu:.2f}, {sigma:.2f})")
        ax.set_xlabel("log z")
        ax.set_ylabel("density")
        ax.set_title(f"({'ab'[activation == 'softplus']}) {activation}: {PRIOR[activation]} prior; "
                     f"z = 0 in {100 * fit['zero_fraction']:.0f}%", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"written: {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--out", default="runs/experiments/fig1")
    args = p.parse_args(argv)
    start = time.time()
    size = ([] if args.full else ["--train-size", "3000", "--test-size", "1000", "--epochs", "8",
                                  "--lr", "0.05", "--width", "0.25"])
    samples, fits, priors, summary, rows = {}, {}, {}, {}, []
    for activation in PRIOR:
        metrics, checkpoint = run_training(f"{args.out}/{activation}", [
            "--model", "allcnn32", "--data", "fashion-mnist", "--activation", activation,
            "--beta", str(args.beta), *size])
        model, run_args = train.load_checkpoint(checkpoint)
        _, test_set = train.load_data(run_args)
        z = analysis.post_noise_activations(model, LAST_LAYER, test_set.images[:500])
        layer = model.get_submodule(LAST_LAYER)
        prior = None
        if layer.prior == "log_normal":
            prior = (layer.mu.item(), layer.sigma.item())
        fit = analysis.prior_fit(z, *(prior or ()))
        samples[activation], fits[activation], priors[activation] = z, fit, prior
        summary[activation] = {"prior": PRIOR[activation], "learned_prior_mu_sigma": prior,
                               "error_D": metrics["error_D"], "error_N": metrics["error_N"],
                               "values": len(z), **fit}
        rows.append([activation, PRIOR[activation], f"{metrics['error_D']:.2f}",
                     f"{100 * fit['zero_fraction']:.1f}", f"{fit['log_z_mean']:.2f}",
                     f"{fit['log_z_std']:.2f}", f"{fit['ks_log_uniform']:.3f}",
                     f"{fit['ks_log_normal_fit']:.3f}",
                     f"{fit.get('ks_log_normal_prior', float('nan')):.3f}"])
    out = Path(args.out)
    plot(out / "fig1.png", samples, fits, priors)
    summary["wall_seconds"] = time.time() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    save_report(args.out, f"Fig. 1 on Fashion-MNIST, All-CNN-32, layer {LAST_LAYER}, 500 test "
                f"images, noise on ({'full' if args.full else '3,000 train, 8 epochs, 25% filters'}"
                f", beta {args.beta:g}); KS = Kolmogorov-Smirnov distance of log z (z > 0)\n\n"
                + markdown_table(["activation", "prior", "error D %", "z = 0 %", "mean log z",
                                  "std log z", "KS log-uniform", "KS log-normal (fitted)",
                                  "KS log-normal (learned prior)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
