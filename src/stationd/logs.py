"""The node's log observer, built from [log]: level, file (rotated) and format."""

import os
import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile


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
        observer = textFileLogObserver(out)
    level = LogLevel.levelWithName(log_config["level"])
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])
