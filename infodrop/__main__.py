"""python -m infodrop <command> [options]: check, bench, train."""

import importlib
import sys

# command -> (module with main(argv), one-line help)
COMMANDS = {
    "check": ("infodrop.check", "max error of every backend against the reference, and gradcheck"),
    "bench": ("infodrop.bench", "throughput of the fused op against the reference, compile and dropout"),
    "train": ("infodrop.train", "train a model of the paper on real data"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m infodrop <command> [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<7} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
