"""Feature networks the metrics run: I3D (FVD, :mod:`benchmark.extractors.i3d`) and SyncNet (LSE,
:mod:`benchmark.extractors.syncnet`). Each loads its weights through :mod:`benchmark.weights`
(SHA-256 recorded); the metrics in :mod:`benchmark.metrics` only use their features."""
