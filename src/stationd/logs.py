"""The node's log observer, built from [log]: level, file (rotated) and format; rebuilt on reload."""

import datetime
import functools
import os
import sys
from collections.abc import Mapping
from typing import IO, Any, cast

import orjson

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer


def _second(when):
    """formatTime, once a second: its strftime was a tenth of an access log line's cost."""
    return _formatted(int(when)) if when is not None else formatTime(when)


@functools.lru_cache(maxsize=4)
def _formatted(second):
    return formatTime(second)


WORKER = "stationd_worker"  # the event key naming the worker process that logged it


@implementer(ILogObserver)
class NodeLog:
    """The node's log observer, built from [log]: level, file (rotated) and format.  A reload
    rebuilds it in place (twistd and the workers keep calling this one object), so no event
    is lost and the old log file is closed once the new one takes over.

    With several workers, each line names its worker (0: the twistd process; the others'
    events reach it through stationd.workers).  ``pipe`` makes a worker process's observer:
    its events as JSON lines on the pipe to the twistd process, which logs them with its own.
    """

    def __init__(self, log_config: Mapping[str, Any], stream: IO[str] | None = None, workers: int = 1,
                 pipe: IO[str] | None = None) -> None:
        self._stream, self._workers, self._pipe = stream, workers, pipe
        self._file: LogFile | None = None
        self.observer = self._build(log_config)

    def __call__(self, event: dict[str, Any]) -> None:
        self.observer(event)

    def configure(self, log_config: Mapping[str, Any]) -> None:
        """Log as ``log_config`` says from now on (a reload)."""
        old_file = self._file
        self.observer = self._build(log_config)
        if old_file is not None:
            old_file.close()

    def _build(self, log_config: Mapping[str, Any]) -> ILogObserver:
        level = [LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(log_config["level"]))]
        if self._pipe is not None:
            return FilteringLogObserver(jsonFileLogObserver(self._pipe), level)
        path = log_config["path"]
        out: IO[str]
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            out = self._file = LogFile.fromFullPath(
                path, rotateLength=log_config["rotate_size"], maxRotatedFiles=log_config["rotate_keep"]
            )
        else:
            self._file = None
            out = self._stream or sys.stderr
        if log_config["format"] == "json":
            observer = FileLogObserver(out, json_line)
        else:
            observer = FileLogObserver(out, lambda event: formatEventAsClassicLogText(event, formatTime=_second))
        filtered = FilteringLogObserver(observer, level)
        return filtered if self._workers == 1 else cast(ILogObserver, functools.partial(_tagged, filtered))


def json_line(event: dict[str, Any]) -> str:
    """An event as a log shipper reads it without a remap: one JSON object a line, with
    ``time`` (ISO 8601, UTC), ``level``, ``namespace``, the rendered ``message``, a failure's
    ``traceback``, and the event's own fields (those a log line's format names, and the rest
    of its keywords; a value JSON cannot carry as its text)."""
    level = event.get("log_level")
    line: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(event.get("log_time", 0), datetime.timezone.utc)
        .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in line:
            line[key] = value
    return orjson.dumps(line, default=str).decode("utf-8") + "\n"


def _tagged(observer, event):
    worker = event.get(WORKER, 0)
    level = event.get("log_level")
    system = event.get("log_system") or f"{event.get('log_namespace', '-')}#{level.name if level else '-'}"
    observer(dict(event, **{WORKER: worker, "log_system": f"worker {worker} {system}"}))
