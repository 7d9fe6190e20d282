"""Fig. 3b: test error of All-CNN-32 (Softplus) against the percentage of Table 2's filters, for
Information Dropout, binary dropout (p = 0.5) and no dropout, on Fashion-MNIST (CIFAR-10 in the
paper).  Its Information Dropout runs are also Fig. 6's (experiments/fig6_information.py).

    python -m experiments.fig3b_filters           # 10/20/30% filters, 3,000 images, 8 epochs
    python -m experiments.fig3b_filters --full    # 10-100% filters, 60,000 images, 160 epochs

Writes fig3b.png and summary.json (test error D per dropout and width).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from infodrop.paper.report import line_plot, markdown_table, run_training, save_report

DROPOUTS = ("info", "binary", "none")
OUT = "runs/experiments/fig3b"


def widths(full):
    return [0.1, 0.25, 0.5, 0.75, 1.0] if full else [0.1, 0.2, 0.3]


def train_width(dropout, width, full, beta=0.01, out=OUT):
    """(last-epoch metrics, checkpoint) of All-CNN-32 Softplus with ``width`` of the filters."""
    size = [] if full else ["--train-size", "3000", "--test-size", "1000", "--epochs", "8",
                            "--lr", "0.05"]
    return run_training(f"{out}/{dropout}-w{width:g}", [
        "--model", "allcnn32", "--data", "fashion-mnist", "--activation", "softplus",
        "--dropout", dropout, "--width", str(width), "--beta", str(beta), *size])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    p.add_argument("--dropouts", nargs="+", choices=DROPOUTS, default=DROPOUTS,
                   help="a subset, e.g. to train the kinds in parallel processes")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    start = time.time()
    sizes = widths(args.full)
    errors = {d: [train_width(d, w, args.full, out=args.out)[0]["error_D"] for w in sizes]
              for d in args.dropouts}
    out = Path(args.out)
    percent = [100 * w for w in sizes]
    line_plot(out / "fig3b.png", percent, errors, "% of the filters", "test error D (%)",
              title="All-CNN-32 Softplus on Fashion-MNIST")
    (out / "summary.json").write_text(json.dumps(
        {"percent_filters": percent, "error_D": errors, "wall_seconds": time.time() - start},
        indent=1))
    rows = [[f"{p:g}"] + [f"{errors[d][i]:.2f}" for d in errors] for i, p in enumerate(percent)]
    save_report(args.out, "Fig. 3b on Fashion-MNIST, All-CNN-32 Softplus "
                f"({'full' if args.full else '3,000 train / 1,000 test, 8 epochs'}): test error "
                "(%), noise off\n\n" + markdown_table(["% filters", *errors], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
