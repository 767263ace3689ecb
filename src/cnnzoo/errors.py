"""Errors the user can fix: their message names the bad value and what to do instead."""


class UserError(Exception):
    """A problem with the user's input (config value, data folder, file); no traceback needed."""


class DataError(UserError):
    """The data on disk is missing, incomplete or not in the expected layout."""


class ConfigError(UserError):
    """A config value that cannot work."""
