"""The quality scores of a clip: their names, meanings and threshold rules.

Shared by the filter stage (which computes them) and the manifest schema (``score_<name>`` columns),
so the schema never imports a stage.
"""

from __future__ import annotations

#: Score names in the order :func:`shv_toolkit.stages.filters.decide` checks them; ``score_<name>`` columns in the manifests.
SCORE_NAMES: tuple[str, ...] = (
    "face_presence",
    "other_face_ratio",
    "face_size_px",
    "luminance",
    "border_fraction",
    "sharpness",
    "motion",
    "static_frame_share",
    "yaw_deg",
    "pitch_deg",
    "loudness_db",
    "vocal_activity",
)

#: One-line meaning of each score (used by the schema documentation).
SCORE_DESCRIPTIONS: dict[str, str] = {
    "face_presence": "share of frames in which the tracked face was detected (0..1; a frame the detector "
                     "skipped (faces.detect_stride, keyframes) counts when the analysed frames on both sides "
                     "detected it)",
    "other_face_ratio": "95th percentile over frames of second-largest face area / tracked face area",
    "face_size_px": "median tracked face box side in source pixels over frames with a detection",
    "luminance": "mean grey level (0..255) of the central face region, black borders excluded",
    "border_fraction": "share of the crop area covered by black bars (letterbox, pillarbox, padding)",
    "sharpness": "variance of the Laplacian of the grey central face region at its source resolution",
    "motion": "mean absolute difference of consecutive grey frames (0..255, 128x128 analysis size)",
    "static_frame_share": "share of consecutive frame pairs that are nearly identical (frozen/slideshow)",
    "yaw_deg": "median absolute head yaw in degrees over frames 0, `filters.pose_stride`, ... "
               "(face-mesh landmarks + solvePnP)",
    "pitch_deg": "median absolute head pitch in degrees over frames 0, `filters.pose_stride`, ... "
                 "(face-mesh landmarks + solvePnP)",
    "loudness_db": "RMS level in dBFS of the vocals stem when present, else of the mix (floor -120)",
    "vocal_activity": "share of 20 ms frames whose 80-4000 Hz energy exceeds the activity threshold",
}

# (score, comparison, FilterConfig field); checked in this order, the first failure is the drop reason.
RULES: tuple[tuple[str, str, str], ...] = (
    ("face_presence", ">=", "min_face_presence"),
    ("other_face_ratio", "<=", "max_other_face_ratio"),
    ("face_size_px", ">=", "min_face_size_px"),
    ("luminance", ">=", "min_luminance"),
    ("luminance", "<=", "max_luminance"),
    ("border_fraction", "<=", "max_border_fraction"),
    ("sharpness", ">=", "min_sharpness"),
    ("motion", ">=", "min_motion"),
    ("static_frame_share", "<=", "max_static_frame_share"),
    ("yaw_deg", "<=", "max_abs_yaw_deg"),
    ("pitch_deg", "<=", "max_abs_pitch_deg"),
    ("loudness_db", ">=", "min_loudness_db"),
    ("vocal_activity", ">=", "min_vocal_activity"),
)

#: ``drop_reason`` of a clip whose crop leaves the source frame by more than ``faces.max_pad_fraction``
#: (decided by the crop stage; its ``drop_value`` is the clip's ``pad_fraction``)
CROP_OUT_OF_FRAME = "crop_out_of_frame"

#: ``drop_reason`` of a clip overlapping a damaged packet of its source (its ``drop_value`` is the seconds
#: of the clip affected, its ``drop_threshold`` 0)
DAMAGED_STREAM = "damaged_stream"

#: Every value ``drop_reason`` takes: the filter that dropped the clip (a score name, the crop stage's
#: out-of-frame check, or damage). A score that could not be measured fails under its own name with
#: ``drop_value`` NaN.
DROP_REASONS: tuple[str, ...] = (DAMAGED_STREAM, CROP_OUT_OF_FRAME, *SCORE_NAMES)
