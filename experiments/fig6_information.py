"""Fig. 6: the information (KL, nats per image) each of the two Information Dropout layers of
All-CNN-32 (Softplus) transmits, in total (a) and per unit (b), against the percentage of
filters; on Fashion-MNIST (CIFAR-10 in the paper).  Trains (or reuses) Fig. 3b's Information
Dropout runs.

    python -m experiments.fig6_information          # Fig. 3b's small widths
    python -m experiments.fig6_information --full

Writes fig6a.png, fig6b.png and summary.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from experiments.fig3b_filters import OUT, train_width, widths
from experiments.fig5_beta_tc import FIRST_LAYER, LAST_LAYER
from infodrop.paper import analysis, train
from infodrop.paper.report import line_plot, markdown_table, save_report

LAYERS = {"layer 1 (16x16)": FIRST_LAYER, "layer 2 (8x8)": LAST_LAYER}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    p.add_argument("--runs", default=OUT, help="where Fig. 3b's runs are (or go)")
    p.add_argument("--out", default="runs/experiments/fig6")
    args = p.parse_args(argv)
    start = time.time()
    sizes = widths(args.full)
    total = {label: [] for label in LAYERS}
    per_unit = {label: [] for label in LAYERS}
    errors = []
    for width in sizes:
        metrics, checkpoint = train_width("info", width, args.full, out=args.runs)
        model, run_args = train.load_checkpoint(checkpoint)
        _, test_set = train.load_data(run_args)
        info = analysis.information_per_layer(model, test_set.images[:500])
        for label, layer in LAYERS.items():
            total[label].append(info[layer]["total"])
            per_unit[label].append(info[layer]["per_unit"])
        errors.append(metrics["error_D"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    percent = [100 * w for w in sizes]
    line_plot(out / "fig6a.png", percent, total, "% of the filters", "KL (nats per image)",
              title="(a) information transmitted per layer")
    line_plot(out / "fig6b.png", percent, per_unit, "% of the filters", "KL per unit (nats)",
              title="(b) information per unit")
    (out / "summary.json").write_text(json.dumps(
        {"percent_filters": percent, "error_D": errors, "kl_total": total,
         "kl_per_unit": per_unit, "wall_seconds": time.time() - start}, indent=1))
    rows = [[f"{p:g}", f"{errors[i]:.2f}"]
            + [f"{total[label][i]:.0f}" for label in LAYERS]
            + [f"{per_unit[label][i]:.3f}" for label in LAYERS] for i, p in enumerate(percent)]
    save_report(args.out, "Fig. 6 on Fashion-MNIST, All-CNN-32 Softplus, beta 0.01, 500 test "
                "images: KL per image in total and per unit\n\n" + markdown_table(
                    ["% filters", "error D %", "KL layer 1", "KL layer 2", "KL/unit layer 1",
                     "KL/unit layer 2"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
