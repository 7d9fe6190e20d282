"""Fig. 3a: test error of the 3-hidden-layer MLP against its width, for Information Dropout,
binary dropout (p = 0.5) and constant log-normal dropout (alpha = 0.7), on MNIST-5k.

    python -m experiments.fig3a_width            # ~5 min on 2 CPU cores
    python -m experiments.fig3a_width --full     # the paper's 80 epochs, 3 seeds, wider nets
"""

import argparse
import statistics
import sys
from pathlib import Path

from infodrop.paper.report import line_plot, markdown_table, run_training, save_report

DROPOUTS = ("info", "binary", "lognormal")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    p.add_argument("--data", default="mnist5k", choices=("mnist5k", "fashion-mnist"))
    p.add_argument("--out", default="runs/experiments/fig3a")
    args = p.parse_args(argv)
    widths = [32, 64, 128, 256, 512, 1024] if args.full else [16, 32, 64, 128]
    seeds = [0, 1, 2] if args.full else [0]
    epochs = 80 if args.full else 15
    errors = {d: [] for d in DROPOUTS}
    for width in widths:
        for dropout in DROPOUTS:
            runs = [run_training(f"{args.out}/{dropout}-w{width}-s{seed}", [
                "--model", "mlp", "--data", args.data, "--dropout", dropout,
                "--width", str(width), "--epochs", str(epochs), "--seed", str(seed)])[0]
                for seed in seeds]
            errors[dropout].append(statistics.mean(r["error_D"] for r in runs))
    rows = [[w] + [f"{errors[d][i]:.2f}" for d in DROPOUTS] for i, w in enumerate(widths)]
    line_plot(Path(args.out) / "fig3a.png", widths, errors, "hidden units per layer",
              "test error (%)", logx=True, title=f"MLP on {args.data}, {epochs} epochs")
    save_report(args.out, f"Fig. 3a on {args.data}, {epochs} epochs, seeds {seeds}: "
                "test error (%), noise off\n\n"
                + markdown_table(["width", "information", "binary", "log-normal"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
