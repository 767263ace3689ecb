"""Errors the user can fix: their message names the bad value and what to do instead."""

_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


class UserError(Exception):
    """A problem with the user's input (config value, data folder, file); no traceback needed.

    Raised in a DataLoader worker, PyTorch raises it again in the main process as
    ``type(e)("Caught <type> in DataLoader worker process N.\\nOriginal Traceback ...")``; the
    error keeps its own one-line message instead (what the user reads, and results.json)."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and _WORKER_TRACEBACK in args[0]:
            cls = type(self)
            marker = f"{cls.__module__}.{cls.__qualname__}: "
            if marker in args[0]:
                args = (args[0].rsplit(marker, 1)[1].strip(),)
        super().__init__(*args)


class DataError(UserError):
    """The data on disk is missing, incomplete or not in the expected layout."""


class ConfigError(UserError):
    """A config value that cannot work."""


def unwrapped(error: BaseException) -> BaseException:
    """The error a constructor raised inside Hydra's ``instantiate`` (a DataModule's
    ConfigError, say), which Hydra wraps in an ``InstantiationException`` whose message adds
    the target and the config key over three lines; any other error as it is."""
    from hydra.errors import InstantiationException

    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        return error.__cause__
    return error


def is_whole(value: object, low: int = 1, high: int | None = None) -> bool:
    """Whether a config value is a whole number from ``low`` to ``high`` (``True`` is not one:
    YAML's ``true`` is a bool, and ``isinstance(True, int)``)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def is_number(value: object, low: float = 0.0) -> bool:
    """Whether a config value is a number (whole or not, not a bool) of at least ``low``."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= low


def check_switch(setting: str, value: object, null: bool = False) -> None:
    """A true/false setting (``null`` also allows None): anything else is refused naming it,
    where Python's truth would take ``maybe`` as true, silently."""
    if not (isinstance(value, bool) or (null and value is None)):
        choices = "true, false or null" if null else "true or false"
        raise ConfigError(f"{setting}={value!r}: choose {choices}.")
