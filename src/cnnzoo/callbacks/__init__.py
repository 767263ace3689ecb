"""Lightning callbacks of cnnzoo's own."""

from cnnzoo.callbacks.bad_files import BadFileReport
from cnnzoo.callbacks.ema import EMA
from cnnzoo.callbacks.history import MetricHistory
from cnnzoo.callbacks.predictions import PredictionGrid
from cnnzoo.callbacks.requeue import SlurmRequeue
from cnnzoo.callbacks.throughput import Throughput

__all__ = ["EMA", "BadFileReport", "MetricHistory", "PredictionGrid", "SlurmRequeue", "Throughput"]
