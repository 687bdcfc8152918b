"""SHV toolkit: build singing-head video datasets (shv-build)."""

__version__ = "0.1.0"
