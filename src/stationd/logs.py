"""The node's log observer, built from [log]: level, file (rotated) and format."""

import os
import sys

import functools

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
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


def make_observer(log_config, stream=None):
    """An ILogObserver for twistd to log through (see NodeService.setServiceParent)."""
    path = log_config["path"]
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        out = LogFile.fromFullPath(
            path, rotateLength=log_config["rotate_size"], maxRotatedFiles=log_config["rotate_keep"]
        )
    else:
        out = stream or sys.stderr
    if log_config["format"] == "json":
        observer = jsonFileLogObserver(out)
    else:
        observer = FileLogObserver(out, lambda event: formatEventAsClassicLogText(event, formatTime=_second))
    level = LogLevel.levelWithName(log_config["level"])
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])
