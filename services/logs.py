"""The log's format: lines for people (``LOG_FORMAT=text``) or one JSON object per line for a
log pipeline (``LOG_FORMAT=json``), each saying which worker wrote it under ``--processes``."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")

#: The attributes every LogRecord has; anything else was passed as ``extra`` and goes into
#: the JSON object (the access log's status, method, uri, ...).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "pid", "worker"?, ...extra, "exception"?}``."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def text_formatter(worker: int | None = None) -> logging.Formatter:
    where = f" worker {worker}" if worker is not None else ""
    return logging.Formatter(f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s")


def configure(level: str, log_format: str, worker: int | None = None) -> None:
    """Log to standard error at ``level`` in ``log_format`` ("text" or "json"); ``worker``:
    the worker number that every line carries (None for a single process)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(worker) if log_format == "json" else text_formatter(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
