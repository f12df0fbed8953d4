"""The package version, below every module that stamps it into what it writes."""

__version__ = "0.1.0"
