"""metrics.csv that a resume continues instead of starting again (``logger=csv``)."""

import csv
import os

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from cnnzoo.files import replaced_atomically


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger (``metrics.csv`` and ``hparams.yaml`` in the run folder), except
    on a resume: Lightning's deletes the run's metrics.csv and starts a new one; this one keeps
    the rows logged before the step the run resumes from (``resume_step``, set by the train
    task) and drops only the later ones, which the interrupted process logged after its
    checkpoint and the resumed run logs again. So the file holds the whole run, once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, self.resume_step)
        return self._experiment


class _ContinuedWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = self.metrics_file_path
        if not os.path.isfile(path):  # a new run: nothing to keep or to warn about (Lightning
            return  # warns that "previous log files will be deleted" of any non-empty folder)
        if self.resume_step is None:
            super()._check_log_dir_exists()
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if float(r.get("step") or 0) < self.resume_step]
            self.metrics_keys = list(reader.fieldnames or [])
        with replaced_atomically(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
