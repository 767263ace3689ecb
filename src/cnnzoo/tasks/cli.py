"""How a task meets the command line: a user's mistake is one clear line and exit status 1,
not a traceback; warnings that do not apply to a cnnzoo run stay quiet."""

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import InstantiationException
from lightning_fabric.utilities.exceptions import MisconfigurationException

from cnnzoo.errors import UserError, unwrapped

T = TypeVar("T")


def quiet_known_warnings() -> None:
    """Silence Lightning warnings that do not apply to a cnnzoo run (called as a task
    starts, not on import): accuracies and errors are computed by torchmetrics over every
    rank's images before they are logged, so the advice to add ``sync_dist=True`` does not
    apply; and each shard reader knows its exact share, so an ``IterableDataset``'s length is
    exact with several workers."""
    warnings.filterwarnings(
        "ignore", message=r"It is recommended to use `self.log\('\w+/(acc|err)_top\d'"
    )
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # Lightning 2.6's pytree helper under torch >= 2.14, printed once per run: not ours to fix
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Lightning 2.6's advertisement for its paid logger, on every Trainer
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_tips)


def _no_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def exit_on_user_error(task: Callable[..., T], in_log_file: bool = False) -> Callable[..., T]:
    """Print a ``UserError`` as one clear line and exit 1, instead of a traceback wall (also
    one raised by a constructor that Hydra's ``instantiate`` called, and Lightning's
    ``MisconfigurationException`` of a trainer setting, e.g. ``trainer.accumulate_grad_batches=0``).
    Ctrl-C outside Lightning's own handling (while the data is read, the network built, images
    scored) is one line and exit status 130, as a shell reports an interrupted command, where
    it printed the traceback of whatever was running.

    ``in_log_file``: the line goes to the job's log file too, for a task whose folder is always
    its own new one (eval: a refused command's folder said nothing of why it held nothing).
    Not train's: its log file may be a run's record (a refused ``resume=`` of it, a
    ``hydra.run.dir`` that holds a run), which no refusal may change; a new run's
    ``results.json`` records the error instead."""

    @functools.wraps(task)
    def run(*args, **kwargs) -> T:
        quiet_known_warnings()
        try:
            return task(*args, **kwargs)
        except (UserError, InstantiationException) as e:
            cause = unwrapped(e)
            if not isinstance(cause, UserError | MisconfigurationException):  # a bug's traceback
                raise
            say(f"error: {cause}", in_log_file)
            raise SystemExit(1) from None
        except KeyboardInterrupt as e:
            say(f"interrupted (Ctrl-C){f': {e}' if str(e) else ''}", in_log_file)
            raise SystemExit(130) from None

    return run


def say(line: str, in_log_file: bool) -> None:
    """Why the task stopped: on stderr, and (``in_log_file``) in the job's log file."""
    print(f"\n{line}", file=sys.stderr)
    if not in_log_file:
        return
    record = logging.LogRecord("cnnzoo", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
