"""python -m infodrop <command> [options]: check, bench, train."""

import importlib
import sys

# command -> (module with main(argv), the pip extra its imports need, one-line help)
COMMANDS = {
    "check": ("infodrop.check", None,
              "max error of every backend against the reference, and gradcheck"),
    "bench": ("infodrop.bench", None,
              "throughput of the fused op against the reference, compile and dropout"),
    "train": ("infodrop.paper.train", "paper", "train a model of the paper on real data"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m infodrop <command> [options]\n\ncommands:")
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:<7} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module_name, extra, _ = COMMANDS[argv[0]]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if extra is None or error.name is None or error.name.startswith("infodrop"):
            raise
        print(f"python -m infodrop {argv[0]} needs the '{extra}' extra (missing: {error.name}): "
              f"pip install 'infodrop[{extra}]', or pip install -e '.[{extra}]' in a checkout",
              file=sys.stderr)
        return 2
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
