"""Lightning callbacks of cnnzoo's own."""

from cnnzoo.callbacks.bad_files import BadFileReport
from cnnzoo.callbacks.dashboard import WandbDashboard
from cnnzoo.callbacks.ema import EMA
from cnnzoo.callbacks.predictions import PredictionGrid
from cnnzoo.callbacks.record import RunRecord
from cnnzoo.callbacks.requeue import SlurmRequeue
from cnnzoo.callbacks.summary import NetworkSummary
from cnnzoo.callbacks.throughput import Throughput

__all__ = [
    "EMA",
    "BadFileReport",
    "NetworkSummary",
    "PredictionGrid",
    "RunRecord",
    "SlurmRequeue",
    "Throughput",
    "WandbDashboard",
]
