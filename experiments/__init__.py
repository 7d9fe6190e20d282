"""One script per figure or table of the paper: `python -m experiments.<name> [--full]` from the
repository root (they share infodrop/paper/report.py)."""
