"""The node's log observer, built from [log]: level, file (rotated) and format."""

import datetime
import functools
import os
import sys
from typing import Any

import orjson

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
)
from twisted.python.logfile import LogFile


def _second(when):
    """formatTime, once a second: its strftime was a tenth of an access log line's cost."""
    return _formatted(int(when)) if when is not None else formatTime(when)


@functools.lru_cache(maxsize=4)
def _formatted(second):
    return formatTime(second)


WORKER = "stationd_worker"  # the event key naming the worker process that logged it


def make_observer(log_config, stream=None, workers=1):
    """An ILogObserver for twistd to log through (see NodeService.setServiceParent).  With
    several workers, each line names its worker (0: the twistd process; the others' events
    reach it through stationd.workers)."""
    path = log_config["path"]
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        out = LogFile.fromFullPath(
            path, rotateLength=log_config["rotate_size"], maxRotatedFiles=log_config["rotate_keep"]
        )
    else:
        out = stream or sys.stderr
    if log_config["format"] == "json":
        observer = FileLogObserver(out, json_line)
    else:
        observer = FileLogObserver(out, lambda event: formatEventAsClassicLogText(event, formatTime=_second))
    level = LogLevel.levelWithName(log_config["level"])
    filtered = FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])
    return filtered if workers == 1 else functools.partial(_tagged, filtered)


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


def worker_observer(log_config, stream):
    """A worker process's observer: its events as JSON lines on ``stream`` (a pipe to the twistd
    process, which logs them with its own observer)."""
    level = LogLevel.levelWithName(log_config["level"])
    return FilteringLogObserver(jsonFileLogObserver(stream), [LogLevelFilterPredicate(defaultLogLevel=level)])
