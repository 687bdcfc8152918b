"""What shv_toolkit, benchmark and singer_model share: errors, media I/O, engines, helper threads,
atomic writes, the JSON codec of dataclasses and arrays, and the mediapipe import.

Nothing here knows of a build, a metric or a model.
"""
