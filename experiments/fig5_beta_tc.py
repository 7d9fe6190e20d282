"""Fig. 5 (and Fig. 6a/b): test error and total correlation of the last Information Dropout
layer of All-CNN-32 (Softplus, 25% of the filters) against beta, on Fashion-MNIST; also the
information each layer transmits, in total and per filter.

    python -m experiments.fig5_beta_tc           # 3,000 train images, 8 epochs: ~10 min
    python -m experiments.fig5_beta_tc --full    # all 60,000 images, the paper's 160 epochs

TC is the Gaussian TC of log z between the 48 channels, every (image, location) a sample
(infodrop.paper.analysis.layer_total_correlation), in nats with the 1/2: the paper prints twice it.
"""

import argparse
import sys
from pathlib import Path

from infodrop.paper import analysis, train
from infodrop.paper.report import line_plot, markdown_table, run_training, save_report

LAST_LAYER, FIRST_LAYER = "features.5.dropout", "features.2.dropout"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    p.add_argument("--out", default="runs/experiments/fig5")
    args = p.parse_args(argv)
    betas = [0.001, 0.01, 0.1, 1.0, 10.0]
    size = [] if args.full else ["--train-size", "3000", "--test-size", "1000",
                                 "--epochs", "8", "--lr", "0.05"]
    rows, errors, tcs = [], [], []
    for beta in betas:
        metrics, checkpoint = run_training(f"{args.out}/beta{beta:g}", [
            "--model", "allcnn32", "--data", "fashion-mnist", "--activation", "softplus",
            "--width", "0.25", "--beta", str(beta), *size])
        model, run_args = train.load_checkpoint(checkpoint)
        _, test_set = train.load_data(run_args)
        images = test_set.images[:500]
        tc = analysis.layer_total_correlation(model, LAST_LAYER, images)
        info = analysis.information_per_layer(model, images)
        errors.append(metrics["error_D"])
        tcs.append(tc)
        rows.append([f"{beta:g}", f"{metrics['error_D']:.2f}", f"{metrics['error_N']:.2f}",
                     f"{tc:.3f}", f"{info[FIRST_LAYER]['total']:.0f}",
                     f"{info[LAST_LAYER]['total']:.0f}",
                     f"{info[FIRST_LAYER]['per_channel']:.1f}",
                     f"{info[LAST_LAYER]['per_channel']:.1f}"])
    line_plot(Path(args.out) / "fig5_error.png", betas, {"test error D (%)": errors}, "beta",
              "test error (%)", logx=True)
    line_plot(Path(args.out) / "fig5_tc.png", betas, {"TC of log z, last layer": tcs}, "beta",
              "total correlation (nats)", logx=True)
    save_report(args.out, "Fig. 5/6 on Fashion-MNIST, All-CNN-32 Softplus 25% filters "
                f"({'full' if args.full else '3,000 train / 1,000 test, 8 epochs'})\n\n"
                + markdown_table(["beta", "error D %", "error N %", "TC last layer (nats)",
                                  "KL layer 1 (nats/img)", "KL layer 2 (nats/img)",
                                  "KL/filter layer 1", "KL/filter layer 2"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
