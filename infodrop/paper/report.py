"""What every experiment script shares: run one training through the CLI, tabulate, plot."""

import json
from pathlib import Path

from . import train


def run_training(out, argv):
    """Train with ``python -m infodrop train`` arguments into ``out`` (reused when its metrics
    already cover the requested epochs, so an interrupted experiment resumes where it was);
    returns (metrics of the last epoch, checkpoint path)."""
    out = Path(out)
    metrics_file = out / "metrics.json"
    argv = [*argv, "--out", str(out), "--no-progress"]
    args = train.resolve_defaults(train.parse_args(argv))
    if metrics_file.is_file():
        done = json.loads(metrics_file.read_text())
        if done["args"] == vars(args) and len(done["epochs"]) == args.epochs:
            return done["epochs"][-1], out / "checkpoint.pt"
    print("python -m infodrop train " + " ".join(argv), flush=True)
    if train.main(argv) != 0:
        raise RuntimeError(f"training failed: {argv}")
    return json.loads(metrics_file.read_text())["epochs"][-1], out / "checkpoint.pt"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def save_report(out, text):
    path = Path(out) / "results.md"
    path.write_text(text + "\n")
    print(text)
    print(f"written: {path}")


def line_plot(path, x, series, xlabel, ylabel, logx=False, title=None):
    """``series``: {label: y values}, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, y in series.items():
        ax.plot(x, y, marker="o", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"written: {path}")
