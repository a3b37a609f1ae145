"""Times as integer nanoseconds since the epoch (UTC), to and from text.

Events carry nanosecond times; datetime stops at microseconds, so the
fraction is handled as digits.
"""

import datetime
import decimal
import functools
import re
import time

_ISO = re.compile(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)$")
_EPOCH_TEXT = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MIN_NS, MAX_NS = -(2**63), 2**63 - 1
_MIN_SECONDS, _MAX_SECONDS = decimal.Decimal(MIN_NS - 10**9) / 10**9, decimal.Decimal(MAX_NS + 10**9) / 10**9


def parse_time(value):
    """Epoch nanoseconds from an ISO 8601 string with zone, or epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("time must be a string or a number")
    if isinstance(value, (int, float)):
        # Via the decimal text: 1714564800.25 is ...250000000 ns, not ...249999872.
        try:
            return int(decimal.Decimal(repr(value)) * 10**9)
        except (ValueError, ArithmeticError):  # inf, nan
            raise ValueError(f"time {value!r} is not a finite number") from None
    if not isinstance(value, str):
        raise ValueError("time must be a string or a number")
    match = _ISO.match(value.strip())
    if not match:
        raise ValueError(f"time {value!r} is not ISO 8601 with a zone (e.g. 2024-05-01T12:00:00.123456789Z)")
    base, fraction, zone = match.groups()
    try:
        when = datetime.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError as e:
        raise ValueError(f"time {value!r}: {e}") from None
    return int(when.timestamp()) * 10**9 + int((fraction or "0").ljust(9, "0"))


def parse_valid_from(value):
    """A ``valid_from`` as parse_time reads it, within what the store holds (years 1678 to 2262)."""
    ns = parse_time(value)
    if not MIN_NS <= ns <= MAX_NS:  # (-3.8e16 seconds was an OverflowError in the store: a 500)
        raise ValueError(f"time {str(value)[:40]!r} is out of range: times are from years 1678 to 2262")
    return ns


def parse_query_time(text):
    """A time from a query string: ISO 8601 with zone, or epoch seconds with fraction."""
    text = text.strip()
    if _EPOCH_TEXT.match(text):
        try:
            seconds = decimal.Decimal(text)
            # Compared before scaling: 1e999999999 overflowed the decimal context (decimal.Overflow, a
            # 500) and 1e99999 made an integer of 100,000 digits.
            in_range = not seconds or _MIN_SECONDS <= seconds <= _MAX_SECONDS
            ns = int(seconds * 10**9) if seconds and in_range else 0
        except ArithmeticError:  # an exponent beyond the decimal context
            raise ValueError(f"time {text[:40]!r} is not a number this node reads") from None
        if not in_range:
            raise ValueError(f"time {text[:40]!r} is out of range: times are from years 1678 to 2262")
    else:
        try:
            ns = parse_time(text)
        except ValueError as e:
            raise ValueError(f"{e}; or give epoch seconds such as 1714564800.5") from None
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(f"time {text!r} is out of range: times are from years 1678 to 2262")
    return ns


@functools.lru_cache(maxsize=1024)
def _minute(minutes):
    days, minute = divmod(minutes, 1440)
    return f"{_EPOCH + datetime.timedelta(days=days):%Y-%m-%d}T{minute // 60:02d}:{minute % 60:02d}:"


def format_qiot(ns: int) -> str:
    """The QIoT sensor app's time, to the second: ``2024-05-01 22:13:05GMT``
    (its ``time.strftime("%Y-%m-%d %H:%M:%S%Z", time.gmtime())``)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 10**9)) + "GMT"


def format_ns(ns):
    """ISO 8601 UTC with all nine fraction digits: 2024-05-01T12:00:00.123456789Z.

    All but the seconds are remembered per minute: a 1000-event page formats
    a time an event, and datetime arithmetic made that a third of the page's
    cost.
    """
    seconds, fraction = divmod(ns, 10**9)
    minutes, second = divmod(seconds, 60)
    return f"{_minute(minutes)}{second:02d}.{fraction:09d}Z"


_NIGHT = re.compile(r"^(\d{4})(\d\d)(\d\d)$")
_FITS = re.compile(r"^(\d{4})(\d\d)(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?$")
DATESTR_FORMATS = ("YYYYMMDD (the night starting that date: midnight at its end, site time), "
                   "YYYYMMDDTHH:MM:SS (FITS DATE-OBS, UTC), ISO 8601 with or without zone "
                   "(without: UTC), or empty, latest, current (now)")


def parse_datestr(text, zone):
    """An FPlaneServer date string: epoch nanoseconds (from MIN_NS to MAX_NS), or "current"/"latest".

    ValueError (naming the accepted formats) for anything else.
    """
    when = _datestr(text, zone)
    if isinstance(when, int) and not MIN_NS <= when <= MAX_NS:  # (0001-01-01T00:00:00+23:59: a 500 before)
        raise ValueError(f"date {text.strip()[:40]!r} is out of range: dates are from years 1678 to 2262")
    return when


def _datestr(text, zone):
    text = text.strip()
    if text.lower() in ("", "current", "latest"):
        return text.lower() or "current"
    try:
        night = _NIGHT.match(text)
        if night:
            # Observing nights span midnight: a night is named by the date it
            # starts on, and it is the configuration at its end that counts.
            day = datetime.date(*map(int, night.groups())) + datetime.timedelta(days=1)
            return int(datetime.datetime.combine(day, datetime.time(0), tzinfo=zone).timestamp()) * 10**9
        fits = _FITS.match(text)
        if fits:
            *parts, fraction = fits.groups()
            when = datetime.datetime(*map(int, parts), tzinfo=datetime.timezone.utc)
            return int(when.timestamp()) * 10**9 + int((fraction or "0").ljust(9, "0"))
        if _ISO.match(text):
            return parse_time(text)
        when = datetime.datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ValueError(f"cannot read date {text!r}; use {DATESTR_FORMATS}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
