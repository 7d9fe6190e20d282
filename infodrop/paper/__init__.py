"""The paper's application, built on the infodrop library: its networks (models/), the real
data sets (data.py), the training command (train.py, `python -m infodrop train`), the
diagnostics of Figs. 2, 4, 5 and 6 (analysis.py) and the helpers of the experiment scripts
(report.py, used by experiments/).

Not imported by `import infodrop`; needs the `paper` extra (`pip install -e .[paper]`:
matplotlib, scikit-learn, tqdm, numpy)."""
