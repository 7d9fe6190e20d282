"""Fig. 2: KL-divergence maps of the Information Dropout layers of All-CNN-96 (ReLU,
max_alpha 1.0 as in the authors' cluttered.py) trained on Cluttered Fashion-MNIST with three
values of beta; the same test images in every map.

    python -m experiments.fig2_kl_maps           # 2,000 train images, 25% filters: ~15 min
    python -m experiments.fig2_kl_maps --full    # 50,000/10,000 images, full width, 80 epochs
"""

import argparse
import sys
from pathlib import Path

from infodrop.paper import analysis, train
from infodrop.paper.report import markdown_table, run_training, save_report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    p.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.5, 5.0])
    p.add_argument("--out", default="runs/experiments/fig2")
    args = p.parse_args(argv)
    size = (["--train-size", "50000", "--test-size", "10000"] if args.full else
            ["--train-size", "2000", "--test-size", "500", "--width", "0.25", "--epochs", "6",
             "--lr", "0.05"])
    rows = []
    for beta in args.betas:
        metrics, checkpoint = run_training(f"{args.out}/beta{beta:g}", [
            "--model", "allcnn96", "--data", "cluttered-fashion-mnist", "--max-alpha", "1.0",
            "--batch-size", "128", "--beta", str(beta), *size])
        model, run_args = train.load_checkpoint(checkpoint)
        _, test_set = train.load_data(run_args)
        images = test_set.images[:4]
        maps = analysis.kl_maps(model, images)
        path = analysis.save_kl_maps(images, maps, Path(args.out) / f"kl_maps_beta{beta:g}.png")
        print(f"written: {path}")
        rows.append([f"{beta:g}", f"{metrics['error_D']:.2f}", f"{metrics['error_N']:.2f}"]
                    + [f"{kl:.0f}" for kl in metrics["kl_per_layer"].values()])
    save_report(args.out, "Fig. 2 on Cluttered Fashion-MNIST, All-CNN-96 "
                f"({'full' if args.full else '2,000 train / 500 test, 25% filters, 6 epochs'})"
                "\n\n" + markdown_table(["beta", "error D %", "error N %", "KL 48x48",
                                         "KL 24x24", "KL 12x12", "KL 6x6"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
