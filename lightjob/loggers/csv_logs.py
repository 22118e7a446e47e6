"""`lightning.pytorch.loggers.csv_logs` -> `lightjob.loggers.csv_logs`."""

from lightjob.runtime.loggers.csv_logs import CSVLogger, ExperimentWriter

__all__ = ["CSVLogger", "ExperimentWriter"]
