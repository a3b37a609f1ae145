"""Date strings of the configuration routes (FPlaneServer's), and query times."""

import datetime
import zoneinfo

import pytest

from stationd.times import format_ns, parse_datestr, parse_query_time

UTC = datetime.timezone.utc
CHICAGO = zoneinfo.ZoneInfo("America/Chicago")  # the HET's site; DST changes at 02:00


def ns(*args, tz=UTC):
    return int(datetime.datetime(*args, tzinfo=tz).timestamp()) * 10**9


@pytest.mark.parametrize("text, zone, expected", [
    ("20240501", UTC, ns(2024, 5, 2)),
    ("20240501", CHICAGO, ns(2024, 5, 2, 5)),  # CDT: UTC-5
    ("20240101", CHICAGO, ns(2024, 1, 2, 6)),  # CST: UTC-6
    ("20240309", CHICAGO, ns(2024, 3, 10, 6)),  # the night DST starts: midnight is still CST
    ("20241102", CHICAGO, ns(2024, 11, 3, 5)),  # the night DST ends: midnight is still CDT
    ("20240501T03:04:05", CHICAGO, ns(2024, 5, 1, 3, 4, 5)),  # FITS DATE-OBS is UTC
    ("20240501T03:04:05.25", UTC, ns(2024, 5, 1, 3, 4, 5) + 250_000_000),
    ("2024-05-01T03:04:05", CHICAGO, ns(2024, 5, 1, 3, 4, 5)),  # ISO without zone: UTC
    ("2024-05-01T03:04:05+02:00", UTC, ns(2024, 5, 1, 1, 4, 5)),
    ("2024-05-01T03:04:05.123456789Z", UTC, ns(2024, 5, 1, 3, 4, 5) + 123456789),
    ("2024-05-01", UTC, ns(2024, 5, 1)),
    ("", UTC, "current"), ("current", UTC, "current"), ("LATEST", UTC, "latest"),
])
def test_datestr(text, zone, expected):
    assert parse_datestr(text, zone) == expected


@pytest.mark.parametrize("text", ["tomorrow", "20241301", "2024050", "20240501T25:00:00", "1714564800"])
def test_bad_datestr_names_the_formats(text):
    with pytest.raises(ValueError, match="YYYYMMDD .*FITS DATE-OBS"):
        parse_datestr(text, UTC)


def test_query_times_and_formatting():
    assert parse_query_time("1714564800.000000002") == 1714564800_000000002
    assert parse_query_time("2024-05-01T12:00:00.5+00:00") == 1714564800_500000000
    assert format_ns(1714564800_000000002) == "2024-05-01T12:00:00.000000002Z"
    assert format_ns(-1) == "1969-12-31T23:59:59.999999999Z"
    with pytest.raises(ValueError):
        parse_query_time("2024-05-01T12:00:00")  # a query time needs its zone
    with pytest.raises(ValueError):
        parse_query_time("99999999999")


def test_format_ns_matches_datetime_on_random_times():
    import random

    rng = random.Random(3)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(20000):
        ns = rng.randrange(-(2**63), 2**63)
        seconds, fraction = divmod(ns, 10**9)
        expected = f"{epoch + datetime.timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"
        assert format_ns(ns) == expected, ns
