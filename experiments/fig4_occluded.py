"""Fig. 4: Occluded Fashion-MNIST (each Fashion-MNIST image overlaid with an MNIST-5k digit; the
paper's Occluded CIFAR: CIFAR-10 under MNIST digits).  All-CNN-32 (ReLU, log-uniform prior) is
trained on the main task at several values of beta; then a logistic-regression nuisance
classifier learns the occluding digit's class from the frozen noisy output of the last
Information Dropout layer.  Reports the main-task test error D (noise off) and N (noise on) and
the nuisance classifier's test error.

    python -m experiments.fig4_occluded           # 3,000 train / 1,000 test, 8 epochs, 25% filters
    python -m experiments.fig4_occluded --full    # all images, full width, 160 epochs

Writes fig4.png and summary.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from experiments.fig5_beta_tc import LAST_LAYER
from infodrop.paper import analysis, train
from infodrop.paper.report import line_plot, markdown_table, run_training, save_report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    p.add_argument("--betas", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0])
    p.add_argument("--out", default="runs/experiments/fig4")
    args = p.parse_args(argv)
    start = time.time()
    size = [] if args.full else ["--train-size", "3000", "--test-size", "1000", "--epochs", "8",
                                 "--lr", "0.05", "--width", "0.25"]
    series = {"main task D": [], "main task N": [], "nuisance (noisy representation)": []}
    rows, summary = [], {"layer": LAST_LAYER, "betas": {}}
    for beta in args.betas:
        metrics, checkpoint = run_training(f"{args.out}/beta{beta:g}", [
            "--model", "allcnn32", "--data", "occluded-fashion-mnist", "--beta", str(beta),
            *size])
        model, run_args = train.load_checkpoint(checkpoint)
        train_set, test_set = train.load_data(run_args)
        nuisance_error = 100.0 - analysis.nuisance_accuracy(model, LAST_LAYER, train_set,
                                                            test_set, noisy=True)
        for label, value in zip(series, (metrics["error_D"], metrics["error_N"], nuisance_error)):
            series[label].append(value)
        summary["betas"][f"{beta:g}"] = {"error_D": metrics["error_D"],
                                         "error_N": metrics["error_N"],
                                         "nuisance_error": nuisance_error,
                                         "kl_per_layer": metrics["kl_per_layer"]}
        rows.append([f"{beta:g}", f"{metrics['error_D']:.2f}", f"{metrics['error_N']:.2f}",
                     f"{nuisance_error:.2f}"])
    out = Path(args.out)
    line_plot(out / "fig4.png", args.betas, series, "beta", "test error (%)", logx=True,
              title="Occluded Fashion-MNIST (MNIST-5k occluders), All-CNN-32 ReLU")
    summary["wall_seconds"] = time.time() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    save_report(args.out, "Fig. 4 on Occluded Fashion-MNIST, All-CNN-32 ReLU "
                f"({'full' if args.full else '3,000 train / 1,000 test, 8 epochs, 25% filters'})"
                f"; nuisance classifier: logistic regression on the noisy {LAST_LAYER} output\n\n"
                + markdown_table(["beta", "main error D %", "main error N %",
                                  "nuisance error %"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
