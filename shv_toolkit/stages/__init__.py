"""Pipeline stages of shv-build."""
