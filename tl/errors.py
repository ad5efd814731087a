"""Errors about the user's input. Their messages name what is wrong and how to fix it."""


class TLError(Exception):
    """A problem with the user's config or data, not a bug in tl."""


class ConfigError(TLError, ValueError):
    """A config value that cannot work."""


class DataError(TLError):
    """A dataset that is missing, empty or malformed."""
