"""The nine SINGER metrics. ``METRICS`` maps a CLI name to ``module:Class`` (imported lazily,
so a metric whose optional dependencies are missing does not break the others)."""

from __future__ import annotations

import importlib

from benchmark.metrics.base import Clip, Metric, MetricResult, PerClipMeanMetric, align

METRICS: dict[str, str] = {
    "ssim": "benchmark.metrics.ssim:SSIM",
    "psnr": "benchmark.metrics.psnr:PSNR",
    "cpbd": "benchmark.metrics.cpbd:CPBD",
    "fvd": "benchmark.metrics.fvd:FVD",
    "lmd": "benchmark.metrics.lmd:LMD",
    "lse": "benchmark.metrics.lse:LSE",  # reports LSE-D and LSE-C
    "diversity": "benchmark.metrics.diversity:Diversity",
    "bas": "benchmark.metrics.bas:BAS",
}


def metric_class(name: str) -> type[Metric]:
    try:
        target = METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["METRICS", "Clip", "Metric", "MetricResult", "PerClipMeanMetric", "align", "metric_class"]
