"""Errors about the user's input. Their messages name what is wrong and how to fix it."""

from tl.masking import text


class TLError(Exception):
    """A problem with the user's config or data, not a bug in tl. Its message never shows a
    password: a URI's login is masked (tl.masking)."""

    def __init__(self, *args):
        super().__init__(*(text(a) if isinstance(a, str) else a for a in args))


class ConfigError(TLError, ValueError):
    """A config value that cannot work."""


class DataError(TLError):
    """A dataset that is missing, empty or malformed."""


def not_one_of(key: str, value, choices) -> ConfigError:
    """The one message for a name outside its choices: `raise not_one_of("strategy.name", ...)`."""
    return ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, choices))}")
