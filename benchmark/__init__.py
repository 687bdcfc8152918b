"""SINGER evaluation metrics (shv-metrics) and the leaderboard (shv-bench)."""

from shv_toolkit import __version__

__all__ = ["__version__"]
