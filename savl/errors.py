"""Error types with one-line messages; the CLI prints them and exits 2 without a traceback."""


class SavlError(Exception):
    """A user-facing error: one line naming the file (if any) and the problem."""


class ImageError(SavlError):
    """An image file that cannot be read or written."""


class ConfigError(SavlError):
    """A configuration that does not validate."""


class DataError(SavlError):
    """A dataset, download or archive problem."""


class ModelFileError(SavlError):
    """A model file that is missing, corrupt or does not match the architecture."""
