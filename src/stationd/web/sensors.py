"""Sensor routes: QIoT-compatible (/api/sensors, /api/lcd) and the node's own
(/api/v1/sensors...): current values, history, the display."""

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from stationd.display import Display, MessageTooLong
from stationd.sensors import Sensors
from stationd.store.sensors import TooManyReadings
from stationd.config import duration
from stationd.times import format_ns, format_qiot, parse_query_time
from stationd.web.auth import Authenticator, require
from stationd.web.http import HTTPError, json_body, read_json, route

MAX_SPAN_STEP = 1.0  # seconds: the smallest step a readings query may ask for
MAX_STEP = 366 * 86400.0


class SensorRoutes:
    def __init__(self, auth: Authenticator, sensors: Sensors, display: Display, prefix: str, clock: IReactorTime):
        self.auth, self.sensors, self.display = auth, sensors, display
        self.prefix = prefix  # [web] request_path: QIoT's sensor list gives paths
        self.clock = clock

    def _sensor(self, name):
        if name not in self.sensors.sensors:
            raise HTTPError(404, f"no sensor {name!r}; GET /api/v1/sensors lists them", code="no_such_sensor")
        return self.sensors.describe(name)

    # ---- QIoT-compatible

    @route("GET", "/api/sensors")
    @require(read=True)
    def qiot_list(self, request):
        return json_body(request, {"result": [f"{self.prefix}api/sensors/{name}" for name in self.sensors.names()]})

    @route("GET", "/api/sensors/<name>")
    @require(read=True)
    def qiot_sensor(self, request, name):
        sensor = self._sensor(name)
        if sensor["time_ns"] is None:
            raise HTTPError(503, f"sensor {name!r} has no reading yet", code="no_reading",
                            headers={"Retry-After": str(max(1, round(sensor["interval"])))})
        values = {field: reading["value"] for field, reading in sensor["fields"].items()}
        return json_body(request, {"result": {"instant": format_qiot(sensor["time_ns"]), **values}})

    @route("POST", "/api/lcd")
    @require("editor")
    async def qiot_lcd(self, request):
        message = read_json(request).get("message")
        if not isinstance(message, str):
            raise HTTPError(400, "message: required, a string", code="bad_message")
        try:
            shown = await self.display.show(message)
        except MessageTooLong as e:
            raise HTTPError(413, str(e), code="message_too_long") from None
        return json_body(request, {"result": {"message posted": shown}})

    # ---- stationd's own

    @route("GET", "/api/v1/sensors")
    @require(read=True)
    def list_sensors(self, request):
        return json_body(request, {"sensors": [_public(self.sensors.describe(n)) for n in self.sensors.names()]})

    @route("GET", "/api/v1/sensors/<name>")
    @require(read=True)
    def sensor(self, request, name):
        return json_body(request, _public(self._sensor(name)))

    @route("GET", "/api/v1/sensors/<name>/readings")
    @require(read=True)
    async def readings(self, request, name):
        """since (default an hour before until), until (default now), step (a duration; averages)."""
        self._sensor(name)
        until = _time_arg(request, "until", int(self.clock.seconds() * 1e9) + 1)
        since = _time_arg(request, "since", until - 3600 * 10**9)
        if since > until:
            raise HTTPError(400, "since: after until", code="bad_parameter")
        step = _step_arg(request)
        try:
            rows = await self.sensors.readings(name, since, until, step)
        except TooManyReadings as e:
            raise HTTPError(400, f"step: {e}", code="bad_parameter") from None
        readings = []
        for time_ns, values, low, high in rows:
            reading = {"time": format_ns(time_ns), "values": values}
            if low:
                reading["min"], reading["max"] = low, high
            readings.append(reading)
        return json_body(request, {"sensor": name, "since": format_ns(since), "until": format_ns(until),
                                   "step": step, "readings": readings})


def _public(sensor):
    time_ns = sensor.pop("time_ns")
    return dict(sensor, time=None if time_ns is None else format_ns(time_ns))


def _step_arg(request):
    """Seconds, from a duration as the configuration writes them (60, 60s, 5m, 1h, 1d); None if not given."""
    text = request.args.get(b"step", [None])[0]
    if text is None:
        return None
    try:
        step = duration(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        step = None
    if step is None or not MAX_SPAN_STEP <= step <= MAX_STEP:
        raise HTTPError(400, f"step: a duration from {MAX_SPAN_STEP:g} s to 366 d (60, 60s, 5m, 1h, 1d), "
                        f"not {text.decode('utf-8', 'replace')!r}", code="bad_parameter")
    return step


def _time_arg(request, name, default):
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        return parse_query_time(values[0].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"{name}: {e}", code="bad_parameter") from None


def states_from_worker_0(forward: Any, request_path: str, names: list[str]) -> Callable[[Any], Awaitable[dict]]:
    """/api/v1/status's sensor states in a worker other than 0: worker 0's, asked through
    ``forward`` (a web.forward.Forward), as it alone polls them; "unknown" if it cannot answer."""
    async def states(request: Any) -> dict:
        listed = await forward.get_json(f"{request_path}api/v1/sensors".encode(), request)
        if listed is None:
            return {name: {"state": "unknown", "last_error": "worker 0 did not answer"} for name in names}
        return {s["name"]: {"state": s["state"], "last_error": s["last_error"]} for s in listed["sensors"]}

    return states

