"""Errors a user can cause (bad names, bad configs, bad files).

The CLI turns every ``UserError`` into one line on stderr and exit status 2; anything else is
a programming error and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a name, a value, a file. Its message is one clear line."""


class ConfigError(UserError):
    """A decoupling, backbone or head configuration that cannot exist."""
