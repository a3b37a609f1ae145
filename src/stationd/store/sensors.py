"""Sensor readings: raw for a horizon, then downsampled, then dropped.

Raw rows have step 0.  compact() folds raw rows older than the horizon
into one row a field and bucket of ``step`` seconds (mean, min, max), and
drops everything older than the retention: a sensor polled every second
for years stays a bounded table.
"""

from collections.abc import Iterable
from typing import TypeAlias

from sqlalchemy import and_, func, insert, literal, select
from sqlalchemy.engine import Connection

from stationd.store.schema import sensor_readings as readings_table

# (time_ns, {field: value}, {field: min}, {field: max}): what readings() answers, in time order.
Reading: TypeAlias = tuple[int, dict[str, float], dict[str, float], dict[str, float]]

MAX_ROWS = 100_000  # a query answers at most this many rows (ask for a step beyond)


class TooManyReadings(ValueError):
    pass


def add_readings(conn: Connection, rows: Iterable[tuple[str, str, int, float]]) -> None:
    """rows: (sensor, field, time_ns, value) tuples, stored raw."""
    conn.execute(insert(readings_table), [{"sensor": sensor, "field": field, "time_ns": time_ns, "step": 0,
                                           "value": value} for sensor, field, time_ns, value in rows])


def compact(conn: Connection, sensor: str, now_ns: int, horizon_s: float, step_s: float, retention_s: float) -> None:
    """Downsample the raw rows past the horizon; drop rows past the retention."""
    t = readings_table
    step_ns = int(step_s * 1e9)
    cutoff = (now_ns - int(horizon_s * 1e9)) // step_ns * step_ns  # whole buckets only
    old_raw = and_(t.c.sensor == sensor, t.c.step == 0, t.c.time_ns < cutoff)
    bucket = (t.c.time_ns // step_ns) * step_ns
    conn.execute(insert(t).from_select(
        ["sensor", "field", "time_ns", "step", "value", "min", "max"],
        select(t.c.sensor, t.c.field, bucket, literal(int(step_s)), func.avg(t.c.value), func.min(t.c.value),
               func.max(t.c.value)).where(old_raw).group_by(t.c.sensor, t.c.field, bucket)))
    conn.execute(t.delete().where(old_raw))
    conn.execute(t.delete().where(and_(t.c.sensor == sensor, t.c.time_ns < now_ns - int(retention_s * 1e9))))


def readings(conn: Connection, sensor: str, since_ns: int, until_ns: int, step_s: float | None = None
             ) -> list[Reading]:
    """[(time_ns, {field: value}, {field: min}, {field: max})] in time order, since <= time < until.

    With ``step_s`` rows are averaged into buckets of that many seconds.
    Raw rows have no min or max (empty dicts).
    """
    t = readings_table
    where = and_(t.c.sensor == sensor, t.c.time_ns >= since_ns, t.c.time_ns < until_ns)
    if step_s:
        step_ns = int(step_s * 1e9)
        bucket = ((t.c.time_ns // step_ns) * step_ns).label("bucket")
        query = (select(bucket, t.c.field, func.avg(t.c.value), func.min(func.coalesce(t.c.min, t.c.value)),
                        func.max(func.coalesce(t.c.max, t.c.value)))
                 .where(where).group_by(bucket, t.c.field).order_by(bucket))
    else:
        query = select(t.c.time_ns, t.c.field, t.c.value, t.c.min, t.c.max).where(where).order_by(t.c.time_ns)
    rows = conn.execute(query.limit(MAX_ROWS + 1)).all()
    if len(rows) > MAX_ROWS:
        raise TooManyReadings(f"more than {MAX_ROWS} readings: ask for a shorter time or a larger step")
    out: list[Reading] = []
    for time_ns, field, value, low, high in rows:
        if not out or out[-1][0] != time_ns:
            out.append((time_ns, {}, {}, {}))
        out[-1][1][field] = value
        if low is not None:
            out[-1][2][field], out[-1][3][field] = low, high
    return out
