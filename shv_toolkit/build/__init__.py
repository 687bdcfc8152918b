"""shv-build: from a URL/path list to clips and Parquet manifests.

* :mod:`~shv_toolkit.build.driver` -- :func:`run_build`: schedules tasks on an engine, resumes from markers;
* :mod:`~shv_toolkit.build.units` -- the analyse and render tasks, their results and resources;
* :mod:`~shv_toolkit.build.processor` -- the stages applied to one source or one clip group;
* :mod:`~shv_toolkit.build.markers` -- completion markers; :mod:`~shv_toolkit.build.layout` -- paths;
* :mod:`~shv_toolkit.build.rows` -- manifest rows; :mod:`~shv_toolkit.build.summary` -- the summary.
"""

from shv_toolkit.build.driver import run_build
from shv_toolkit.build.layout import BuildLayout
from shv_toolkit.build.summary import BuildSummary
from shv_toolkit.build.units import GROUP_CLIPS

__all__ = ["GROUP_CLIPS", "BuildLayout", "BuildSummary", "run_build"]
