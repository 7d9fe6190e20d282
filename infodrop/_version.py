"""The package version, read by setup.py and infodrop.__init__: written here only."""

__version__ = "0.2.0"
