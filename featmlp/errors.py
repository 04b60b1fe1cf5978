"""Errors a user can act on.

Anything raised as a :class:`FeatmlpError` is shown by the CLI as one line
(``error: <message>``) with a non-zero exit and no traceback, so its message
must say what is wrong and what to do.
"""


class FeatmlpError(Exception):
    """Base class of errors caused by the user's input, not by a bug."""


class DataError(FeatmlpError):
    """A data source or file cannot be read as what it claims to be."""


class ConfigError(FeatmlpError, ValueError):
    """A setting has a value outside what is accepted."""
