"""Exception classes shared by shv_toolkit, benchmark and singer_model.

Each carries a one-line reason that ends up in a manifest row, a leaderboard cell or the log.
"""


class ShvError(Exception):
    """Base class of every error this project raises on purpose."""


class UsageError(ShvError):
    """The command line or a config file is wrong (exit status 2)."""


class InputListError(ShvError):
    """A line of the URL/path list is not acceptable."""


class SourceError(ShvError):
    """One source (URL or file) cannot be turned into clips; the build records it and goes on."""


class MediaError(SourceError):
    """A media file cannot be probed, decoded or encoded."""


class MissingWeightsError(ShvError):
    """Model weights that must be supplied locally are missing or do not match their checksum."""
