"""What every sensor driver shares: its options, and the errors it raises."""

import glob
import math
import os
import re
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from stationd import config


@dataclass(frozen=True)
class DriverContext:
    """What a driver may know of the node, besides its options."""

    name: str  # the sensor's
    data_dir: str  # [node] data_dir
    reactor: IReactorTime  # its clock; the dbus driver connects through it too
    timeout: float | None = None  # the sensor's, seconds: the command driver kills its program then


class DriverError(ValueError):
    """A bad driver option: ``key`` names it (None: the driver as a whole)."""

    def __init__(self, key, message):
        super().__init__(message)
        self.key = key


class ReadError(RuntimeError):
    """A read that failed; the message says why, in one line."""


class Options:
    """A driver's options, taken one by one; ``done()`` refuses any left over.

    An empty value counts as not given.
    """

    def __init__(self, options):
        self._left = {key: text.strip() for key, text in options.items() if text.strip()}
        self._known = []

    def get(self, key, parse=None, default=None):
        self._known.append(key)
        text = self._left.pop(key, None)
        if text is None:
            return default
        try:
            return parse(text) if parse else text
        except ValueError as e:
            raise DriverError(key, str(e)) from None

    def required(self, key, parse=None):
        value = self.get(key, parse)
        if value is None:
            raise DriverError(key, "required")
        return value

    def done(self):
        for key in sorted(self._left):
            known = ", ".join(self._known) or "none"
            raise DriverError(key, f"unknown key (this driver's keys: {known})")


def number(text):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, not {text!r}")
    return value


def positive(text):
    value = number(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, not {text!r}")
    return value


def positive_duration(text):
    value = config.duration(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, not {text!r}")
    return value


FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def field_name(text):
    if not FIELD_NAME.match(text):
        raise ValueError(f"field names are letters, digits, _ . and - (at most 64), not {text!r}")
    return text


def pairs(text):
    """``a=x b=y`` (spaces or commas between) -> {"a": "x", "b": "y"}."""
    result = {}
    for word in config.words(text):
        name, equals, value = word.partition("=")
        if not equals or not name or not value:
            raise ValueError(f"expected NAME=VALUE words, not {word!r}")
        result[field_name(name)] = value
    return result


def directory(text):
    if not os.path.isdir(text):
        raise ValueError(f"not a directory: {text!r}")
    return text


def read_text(path):
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read().strip()


def numbered(pattern):
    """Paths matching ``pattern`` (ending in ``*``) in numeric order: zone2 before zone10."""
    def key(path):
        digits = re.search(r"(\d+)$", path)
        return (int(digits.group(1)) if digits else -1, path)

    return sorted(glob.glob(pattern), key=key)
