"""Lightning callbacks of cnnzoo's own."""

from cnnzoo.callbacks.ema import EMA

__all__ = ["EMA"]
