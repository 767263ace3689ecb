"""Lightning callbacks of cnnzoo's own."""

from cnnzoo.callbacks.bad_files import BadFileReport
from cnnzoo.callbacks.ema import EMA
from cnnzoo.callbacks.throughput import Throughput

__all__ = ["EMA", "BadFileReport", "Throughput"]
