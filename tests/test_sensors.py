"""Sensors on a task.Clock: schedule, timeouts, failures, history, alarms; and their routes."""

import json
import os
import subprocess
import sys
import threading
import types

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from stationd import config as configuration
from stationd.sensors import Alarms, Sensors, poller
from stationd.store import sensors as history
from stationd.store.query import Query, find_events

from conftest import call, make_node, serve

NO_SYSTEM = "[sensor:system]\nenabled = no\n"


def sensor(name="s", **overrides):
    values = dict(configuration.SENSOR_DEFAULTS, driver="simulated", **overrides)
    parsed = {key: configuration.SENSOR[key](value) for key, value in values.items()}
    return dict(parsed, name=name, options={}, origin={})


class Fake:
    """A driver: answers from ``values`` (a value or an exception each call); records when it was called."""

    def __init__(self, clock, *values, blocking=True):
        self.clock, self.values, self.blocking = clock, list(values), blocking
        self.calls = []

    def read(self):
        self.calls.append(self.clock.seconds())
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(value, Exception):
            raise value
        return value


@pytest.fixture
def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, NO_SYSTEM)
    yield node
    node.store.close()


def in_line(clock):
    """Blocking reads run at once, here (instead of in the sensor's thread)."""
    return lambda read, due: defer.maybeDeferred(lambda: (clock.seconds(), read()))


def sensors_of(node, clock, **kwargs):
    """Sensors on ``node``'s store and metrics, polled on ``clock`` (their threads on the reactor)."""
    from twisted.internet import reactor

    return Sensors(node.store, node.metrics, node.service.name, node.node_id, reactor, clock=clock, **kwargs)


def sensors_on(node, clock, run_blocking=None, rng=lambda: 0.5):
    return sensors_of(node, clock, rng=rng, run_blocking=run_blocking or in_line(clock))


def test_polls_keep_their_schedule_aligned_and_jittered(node):
    clock = task.Clock()
    clock.advance(1003.0)
    jitter = iter([0.0, 0.5, 1.0, 0.25, 0.0])
    aligned = Fake(clock, {"t": (20.0, "°C")})
    sensors = sensors_on(node, clock, rng=lambda: next(jitter))
    sensors.add(sensor("aligned", interval="10s", align="yes", jitter="2s"), aligned)
    free = Fake(clock, {"t": (1.0, "")})
    others = sensors_on(node, clock)
    others.add(sensor("free", interval="3s"), free)
    sensors.pollers["aligned"].start()
    others.pollers["free"].start()
    clock.pump([0.1] * 400)
    # aligned: multiples of 10 s, each plus its share of 2 s of jitter
    assert aligned.calls == pytest.approx([1010.0, 1021.0, 1032.0, 1040.5], abs=0.11)
    # not aligned: at once, then every 3 s (no jitter), never drifting
    assert free.calls == pytest.approx([1003.0 + 3 * i for i in range(14)], abs=0.11)


def test_a_hanging_driver_times_out_without_delaying_the_others(node):
    clock = task.Clock()
    hung, released = [], []

    def run_blocking(function, due):  # the stuck sensor's thread does not return (until released)
        if function.__self__.name == "stuck" and not released:
            hung.append(defer.Deferred())
            return hung[-1]
        return in_line(clock)(function, due)

    sensors = sensors_on(node, clock, run_blocking=run_blocking)
    stuck, fine = Fake(clock, {"v": (1.0, "")}), Fake(clock, {"v": (2.0, "")})
    stuck.name, fine.name = "stuck", "fine"
    sensors.add(sensor("stuck", interval="1s", timeout="500ms"), stuck)
    sensors.add(sensor("fine", interval="1s"), fine)
    for job in sensors.pollers.values():
        job.start()
    clock.advance(0)
    clock.pump([0.25] * 18)
    assert fine.calls == pytest.approx([float(i) for i in range(5)])
    assert len(hung) == 1  # later polls do not start a second read while the first hangs
    errors = node.metrics.count(node.metrics.sensor_errors)
    assert errors[("stuck",)] == 5 and ("fine",) not in errors  # 1 timeout, then 4 polls "busy"
    assert sensors.failing["stuck"] == "PollTimeout: the previous read has not returned yet"
    released.append(True)
    # the read returns late: its answer is dropped, the next poll works
    hung[0].callback((clock.seconds(), {"v": (9.0, "")}))
    clock.advance(1)
    assert sensors.latest_values("stuck") == {"v": 1.0} and "stuck" not in sensors.failing


def test_a_raising_driver_keeps_its_loop_and_logs_once_a_state_change(node, capsys):
    from twisted.logger import globalLogPublisher

    clock = task.Clock()
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        sensors = sensors_on(node, clock)
        flaky = Fake(clock, OSError("i2c bus error"), OSError("i2c bus error"), OSError("again"), {"h": (40.0, "%")})
        sensors.add(sensor("flaky", interval="1s"), flaky)
        sensors.pollers["flaky"].start()
        clock.advance(0)
        clock.pump([1] * 5)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert len(flaky.calls) == 6
    assert node.metrics.count(node.metrics.sensor_errors)[("flaky",)] == 3
    assert sensors.latest_values("flaky") == {"h": 40.0}
    lines = [e["log_format"] for e in logged if e.get("name") == "flaky"]
    assert lines == ["Sensor {name}: read failed ({reason}); polling goes on",
                     "Sensor {name}: reading again after {error}"]


def test_readings_are_downsampled_past_the_horizon_and_dropped_past_the_retention(node):
    store = node.store
    minute = 60 * 10**9
    now = 1_000_020 * minute  # on the hour
    # one reading a minute for 3 hours: values 0..179
    store.call(history.add_readings, [("t", "v", now - (180 - i) * minute, float(i)) for i in range(180)])
    store.call(history.compact, "t", now, 3600, 600, 2 * 3600)  # raw 1 h, then 10 min buckets, kept 2 h
    rows = store.call(history.readings, "t", 0, now + 1)
    times = [(now - t) // minute for t, *_ in rows]
    # 2 h back, whole 10-minute buckets up to the horizon (cut at a bucket edge), then raw minutes
    assert [t for t, _, low, _ in rows if low] == [t for t, *_ in rows[:6]]
    assert times[:6] == [120, 110, 100, 90, 80, 70] and times[6:] == list(range(60, 0, -1))
    first_bucket = rows[0]
    assert first_bucket[1] == {"v": 64.5} and first_bucket[2] == {"v": 60.0} and first_bucket[3] == {"v": 69.0}
    # a query with a step averages what is there, buckets or raw
    hourly = store.call(history.readings, "t", now - 2 * 3600 * 10**9, now, 3600)
    assert [values["v"] for _, values, _, _ in hourly] == [pytest.approx(89.5), pytest.approx(149.5)]


@pytest.mark.parametrize("values, expected", [
    ([69, 71, 70.5, 69.5, 68.9, 71], ["raised", "cleared", "raised"]),
    ([71, 71, 72], ["raised"]),
])
def test_alarms_raise_once_and_clear_past_the_hysteresis(values, expected):
    alarms = Alarms(sensor(alarm_above="t=70", hysteresis="1"))
    changes = [state for value in values for _, _, state in alarms.check("t", value)]
    assert changes == expected


def test_a_low_alarm_uses_the_mirror_hysteresis():
    alarms = Alarms(sensor(alarm_below="battery=10", hysteresis="battery=5 2"))
    assert [alarms.check("battery", v) for v in (12, 9, 14, 15.5)] == [
        [], [("below", 10.0, "raised")], [], [("below", 10.0, "cleared")]]


@pytest_twisted.ensureDeferred
async def test_an_alarm_is_stored_as_an_event_logged_and_signalled(node):
    clock = task.Clock()
    sensors = sensors_on(node, clock)
    heard = []
    sensors.alarm_listeners.append(lambda *args: heard.append(args))
    sensors.add(sensor("cpu", interval="1s", alarm_above="temperature=80"),
                Fake(clock, {"temperature": (85.0, "°C")}))
    node.store.startService()
    try:
        sensors.pollers["cpu"].start()
        clock.advance(0)
        await sensors.flush()
        for _ in range(500):  # (the alarm's insert runs on the store's pool: 4 threads on PostgreSQL)
            page = await node.store.read(find_events, Query(types=["sensor_alarm"]))
            if page[0]:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
    finally:
        node.store.stopService()
    assert heard == [("cpu", "temperature", 85.0, "above", 80.0, "raised")]
    [event], _ = page
    assert event["station"] == node.service.name


@pytest_twisted.async_yield_fixture()
async def served(tmp_path, database_url):
    node = make_node(tmp_path, database_url, NO_SYSTEM + "[display]\ndriver = file\nmax_length = 20\n")
    from twisted.internet import reactor

    # Readings of 2024 in the tests: kept raw for a century, or the compaction
    # the node starts with could thin or drop them before a test reads them.
    kept = {"interval": "1h", "horizon": "36500d", "retention": "36500d"}
    node.sensors.add(sensor("weather", **kept), Fake(reactor, {"temperature": (21.5, "°C")}, blocking=False))
    node.sensors.add(sensor("quiet", **kept), Fake(reactor, OSError("no device"), blocking=False))
    from stationd.store import users

    node.editor_key = node.store.call(users.add_user, "ed", "editor")[1]
    serve(node)
    pump = task.LoopingCall(node.stub.flush)
    pump.start(0.001)
    yield node
    pump.stop()
    await node.service.stopService()


async def get(node, path, **kwargs):
    response, body = await call(node.stub, "GET", f"http://n{path}", **kwargs)
    return response.code, json.loads(body)


@pytest_twisted.ensureDeferred
async def test_qiot_routes_answer_as_the_qiot_app_did(served):
    node = served
    node.sensors._reading("weather", 1714564800.25, {"temperature": (22.0, "°C"), "humidity": (40, "%")})
    assert await get(node, "/api/sensors") == (200, {"result": ["/api/sensors/quiet", "/api/sensors/weather"]})
    assert await get(node, "/api/sensors/weather") == (200, {"result": {
        "instant": "2024-05-01 12:00:00GMT", "temperature": 22.0, "humidity": 40.0}})  # QIoT's %Y-%m-%d %H:%M:%S%Z
    assert (await get(node, "/api/sensors/nowhere"))[0] == 404

    async def lcd(body, key=node.editor_key):
        response, answer = await call(node.stub, "POST", "http://n/api/lcd", data=body,
                                      headers={"Authorization": f"Bearer {key}",
                                               "Content-Type": "application/json"})
        return response.code, json.loads(answer)

    assert await lcd(json.dumps({"message": "Hello\tstation"}).encode()) == (
        200, {"result": {"message posted": "Hello station"}})
    assert open(node.config["display"]["path"]).read() == "Hello station"
    code, answer = await lcd(b'{"text": "hi"}')
    assert code == 400 and answer["error"]["code"] == "bad_message"
    assert (await lcd(b'{"message": 5}'))[0] == 400
    assert (await lcd(b'{"message": "' + b"x" * 21 + b'"}'))[0] == 413
    assert open(node.config["display"]["path"]).read() == "Hello station"  # nothing shown
    assert (await lcd(b'{"message": "hi"}', key="wrong"))[0] == 401


@pytest_twisted.ensureDeferred
async def test_sensor_list_detail_and_readings(served):
    node = served
    t0 = 1714564800
    for i in range(6):
        node.sensors._reading("weather", t0 + 10 * i, {"temperature": (20.0 + i, "°C")})
    node.sensors._failed("quiet", OSError("no device"))
    code, answer = await get(node, "/api/v1/sensors")
    assert code == 200 and [s["name"] for s in answer["sensors"]] == ["quiet", "weather"]
    quiet, weather = answer["sensors"]
    assert quiet["state"] == "failing" and quiet["last_error"] == "OSError: no device"
    assert weather["fields"] == {"temperature": {"value": 25.0, "unit": "°C"}}
    assert weather["time"] == "2024-05-01T12:00:50.000000000Z"
    since = "2024-05-01T12:00:00Z"
    code, answer = await get(node, f"/api/v1/sensors/weather/readings?since={since}&until={t0 + 60}")
    assert code == 200 and [r["values"]["temperature"] for r in answer["readings"]] == [20, 21, 22, 23, 24, 25]
    code, answer = await get(node, f"/api/v1/sensors/weather/readings?since={since}&until={t0 + 60}&step=30")
    assert [(r["values"]["temperature"], r["min"]["temperature"], r["max"]["temperature"])
            for r in answer["readings"]] == [(21.0, 20.0, 22.0), (24.0, 23.0, 25.0)]
    assert (await get(node, "/api/v1/sensors/weather/readings?step=0"))[0] == 400
    for step in ("30s", "0.5m"):  # durations as the configuration writes them
        assert (await get(node, f"/api/v1/sensors/weather/readings?since={since}&until={t0 + 60}&step={step}")
                ) == (code, answer)
    code, refused = await get(node, "/api/v1/sensors/weather/readings?step=500ms")
    assert code == 400 and "a duration from 1 s" in refused["error"]["message"]
    code, refused = await get(node, f"/api/v1/sensors/weather/readings?since={t0 + 60}&until={t0}")
    assert code == 400 and refused["error"]["message"] == "since: after until"
    assert (await get(node, "/api/v1/sensors/weather/readings?since=yesterday"))[0] == 400
    assert (await get(node, "/api/v1/sensors/none/readings"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_metrics_carry_sensor_values_and_errors(served):
    from prometheus_client.parser import text_string_to_metric_families

    node = served
    node.sensors._reading("weather", 1714564800, {"temperature": (22.5, "°C")})
    node.sensors._failed("quiet", OSError("no device"))
    response, body = await call(node.stub, "GET", "http://n/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    labels = (("field", "temperature"), ("sensor", "weather"), ("unit", "°C"))
    assert samples[("stationd_sensor_value", labels)] == 22.5
    assert samples[("stationd_sensor_errors_total", (("sensor", "quiet"),))] >= 1


def test_a_sensor_thread_gets_its_poll_early_and_starts_it_on_time(node):
    """With a lead, the reactor may be up to the lead late and the read still starts when due."""
    clock = task.Clock()
    clock.advance(100.0)
    handed = []

    def thread(read, due):  # what SensorThread does: wait for the wall clock to reach due, then read
        handed.append((clock.seconds(), due))
        return defer.succeed((due + 0.001, read()))

    sensors = sensors_of(node, clock, rng=lambda: 0.0, run_blocking=thread)
    sensors.add(sensor("t", interval="1s", align="yes"), Fake(clock, {"v": (1.0, "")}))
    sensors.pollers["t"].lead = 0.25
    sensors.pollers["t"].start()
    clock.pump([0.25] * 12)
    assert handed == [(100.75, 101.0), (101.75, 102.0), (102.75, 103.0)]
    assert sensors.latest["t"][0] == 103_001_000_000  # the reading carries the time the thread started it


@pytest_twisted.ensureDeferred
async def test_the_client_and_stationd_client_read_sensors_and_post_to_the_display(served, capsys):
    from twisted.internet import reactor

    from stationd import cli
    from stationd.client import Client, ClientError

    node = served
    t0 = 1714564800
    for i in range(3):
        node.sensors._reading("weather", t0 + 10 * i, {"temperature": (20.0 + i, "°C")})
    client = Client("http://n", api_key=node.editor_key, http_client=node.stub, reactor=reactor)

    async def run(*argv):
        args = cli.parser().parse_args(["--url", "http://n", *argv])
        await args.function(client, args)
        return capsys.readouterr().out

    try:
        assert [s["name"] for s in await client.sensors()] == ["quiet", "weather"]
        readings = await client.readings("weather", since=t0, until=t0 + 30, step=20)
        assert [r["values"]["temperature"] for r in readings] == [20.5, 22.0]
        assert await client.display("rain\x07") == "rain "
        lines = (await run("sensors")).splitlines()
        assert lines[0].split() == ["SENSOR", "STATE", "TIME", "VALUES"]
        assert lines[2].split() == ["weather", "ok", "2024-05-01T12:00:20.000000000Z", "temperature=22", "°C"]
        assert await run("sensors", "weather", "--since", str(t0), "--until", str(t0 + 30)) == (
            "2024-05-01T12:00:00.000000000Z temperature=20\n2024-05-01T12:00:10.000000000Z temperature=21\n"
            "2024-05-01T12:00:20.000000000Z temperature=22\n")
        assert await run("display", "hello") == "hello\n"
        with pytest.raises(ClientError, match="no sensor"):
            await client.sensor("none")
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_the_st7735_display_draws_the_message_through_pimoronis_library(monkeypatch):
    """Fake st7735 and Pillow modules, with the calls Pimoroni's examples make."""
    import sys
    import types

    from stationd.display import Display

    drawn, shown = [], []

    class LCD:
        width, height = 160, 80

        def __init__(self, **options):
            self.options = options

        def begin(self):
            pass

        def display(self, image):
            shown.append(image)

    image_module = types.SimpleNamespace(new=lambda mode, size, color: ("image", mode, size))
    draw_module = types.SimpleNamespace(Draw=lambda image: types.SimpleNamespace(
        multiline_text=lambda xy, text, fill: drawn.append((image, xy, text))))
    monkeypatch.setitem(sys.modules, "st7735", types.SimpleNamespace(ST7735=LCD))
    monkeypatch.setitem(sys.modules, "PIL", types.SimpleNamespace(Image=image_module, ImageDraw=draw_module))
    display = Display({"driver": "st7735", "path": None, "max_length": 40})
    assert await display.show("fog\nexpected") == "fog\nexpected"
    assert drawn == [(("image", "RGB", (160, 80)), (2, 2), "fog\nexpected")]
    assert shown == [("image", "RGB", (160, 80))]
    monkeypatch.delitem(sys.modules, "st7735")
    monkeypatch.setitem(sys.modules, "ST7735", None)
    with pytest.raises(ValueError, match="st7735 library"):
        Display({"driver": "st7735", "path": None, "max_length": 40})


def test_jittered_polls_handed_over_early_do_not_count_as_busy(node):
    """With jitter a poll may be handed to the thread before the one before it is due."""
    clock = task.Clock()
    jitter = iter([0.9, 0.0] * 20)

    def thread(read, due):  # starts each read when due, as SensorThread does
        return task.deferLater(clock, max(0.0, due - clock.seconds()), lambda: (clock.seconds(), read()))

    sensors = sensors_of(node, clock, rng=lambda: next(jitter), run_blocking=thread)
    driver = Fake(clock, {"v": (1.0, "")})
    sensors.add(sensor("t", interval="1s", align="yes", jitter="1s"), driver)
    sensors.pollers["t"].lead = 0.25
    sensors.pollers["t"].start()
    clock.pump([0.05] * 200)
    assert len(driver.calls) == 10 and ("t",) not in node.metrics.count(node.metrics.sensor_errors)


def test_sensor_threads_ask_for_real_time_priority_that_their_children_do_not_inherit():
    thread = poller.SensorThread("probe", reactor=None)
    try:
        if thread.realtime_error is not None:  # not allowed here: the thread still works, at normal priority
            assert os.sched_getscheduler(thread.thread.native_id) == os.SCHED_OTHER
            pytest.skip(f"real-time priority refused here ({thread.realtime_error}); root or LimitRTPRIO=1 needed")
        assert os.sched_getscheduler(thread.thread.native_id) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
        assert os.sched_getparam(thread.thread.native_id).sched_priority == 1
        done = threading.Event()
        child = []
        thread.reactor = types.SimpleNamespace(callFromThread=lambda f, *args: (f(*args), done.set()))
        thread(lambda: child.append(subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True, text=True, check=True).stdout.strip()), due=0)
        assert done.wait(30)
        assert child == [str(os.SCHED_OTHER)]  # a command driver's program runs at normal priority
    finally:
        thread.stop()


def test_a_refused_real_time_priority_is_logged_once_and_the_threads_go_on(node, monkeypatch):
    from twisted.logger import formatEvent, globalLogPublisher

    monkeypatch.setattr(poller, "realtime", lambda thread: "Operation not permitted")
    clock = task.Clock()
    sensors = sensors_of(node, clock)
    for name in ("a", "b"):
        sensors.add(sensor(name=name), Fake(clock, {"value": (1.0, "")}))
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        sensors.startService()
    finally:
        globalLogPublisher.removeObserver(logged.append)
        sensors.stopService()
    lines = [formatEvent(e) for e in logged if "priority" in e.get("log_format", "")]
    assert len(lines) == 1 and "real-time priority refused: Operation not permitted" in lines[0]
    assert set(sensors.threads) == {"a", "b"}


def test_sensor_threads_shorten_the_gil_switch_interval_while_they_run(node):
    from stationd import sensors as module

    before = sys.getswitchinterval()
    clock = task.Clock()
    threaded, in_reactor = sensors_of(node, clock), sensors_on(node, clock)
    threaded.add(sensor(name="a"), Fake(clock, {"value": (1.0, "")}))
    in_reactor.add(sensor(name="b"), Fake(clock, {"value": (1.0, "")}))
    in_reactor.startService()
    assert sys.getswitchinterval() == before  # no sensor thread: nothing to wake on time
    in_reactor.stopService()
    threaded.startService()
    try:
        assert sys.getswitchinterval() == pytest.approx(module.GIL_SWITCH_SECONDS)
    finally:
        threaded.stopService()
    assert sys.getswitchinterval() == before


class HeldInserts:
    """``store`` whose readings inserts wait for release(); reads run at once."""

    def __init__(self, store):
        self.store, self.held = store, []

    def run(self, operation, *args):
        assert operation is history.add_readings
        done = defer.Deferred()
        self.held.append((done, args))
        return done

    def release(self):
        """Commit the oldest held insert, and answer it."""
        done, args = self.held.pop(0)
        done.callback(self.store.call(history.add_readings, *args))

    def read(self, operation, *args):
        return defer.succeed(self.store.call_read(operation, *args))


def test_concurrent_readings_wait_for_the_rows_an_earlier_flush_is_still_storing(node):
    clock = task.Clock()
    store = HeldInserts(node.store)
    sensors = Sensors(store, node.metrics, node.service.name, node.node_id, reactor, clock=clock,
                      run_blocking=in_line(clock))
    sensors.add(sensor("t"), Fake(clock, {"v": (1.0, "")}))
    t0 = 1714564800
    sensors._reading("t", t0, {"v": (1.0, "")})
    first = defer.ensureDeferred(sensors.readings("t", 0, (t0 + 60) * 10**9))  # takes the row, its insert held
    second = defer.ensureDeferred(sensors.readings("t", 0, (t0 + 60) * 10**9))  # finds nothing pending
    answers = []
    for call_ in (first, second):
        call_.addCallback(lambda rows: answers.append([values["v"] for _, values, *_ in rows]))
    assert answers == []  # neither answers before the row the first took is committed
    store.release()
    assert answers == [[1.0], [1.0]]
    # one more taken while that one's insert is held: the next flush stores it after the first
    sensors._reading("t", t0 + 1, {"v": (2.0, "")})
    first = defer.ensureDeferred(sensors.readings("t", 0, (t0 + 60) * 10**9))
    sensors._reading("t", t0 + 2, {"v": (2.5, "")})
    second = defer.ensureDeferred(sensors.readings("t", 0, (t0 + 60) * 10**9))
    answers.clear()
    for call_ in (first, second):
        call_.addCallback(lambda rows: answers.append([values["v"] for _, values, *_ in rows]))
    assert len(store.held) == 1  # the second flush waits its turn
    store.release()
    assert answers == [[1.0, 2.0]] and len(store.held) == 1
    store.release()
    assert answers == [[1.0, 2.0], [1.0, 2.0, 2.5]]
    # stopService's last flush waits for one in flight too, and stores what came after
    sensors._reading("t", t0 + 3, {"v": (3.0, "")})
    flushing = defer.ensureDeferred(sensors.flush())
    sensors._reading("t", t0 + 4, {"v": (4.0, "")})
    stopped = []
    defer.ensureDeferred(sensors.stopService()).addCallback(stopped.append)
    assert stopped == [] and len(store.held) == 1
    store.release()
    assert flushing.called and len(store.held) == 1 and stopped == []
    store.release()
    assert stopped == [None] and not sensors.pending
    assert [values["v"] for _, values, *_ in node.store.call(history.readings, "t", 0, (t0 + 60) * 10**9)] == [
        1.0, 2.0, 2.5, 3.0, 4.0]


def test_a_running_sensors_service_adds_changes_and_removes_sensors(node):
    """What a reload does (stationd.reload): the added polls at once, the changed restarts
    with its new driver, the removed stops and leaves the gauges; the others go on."""
    clock = task.Clock()
    clock.advance(1000.0)
    kept, old = Fake(clock, {"t": (1.0, "")}), Fake(clock, {"t": (2.0, "")})
    sensors = sensors_on(node, clock)
    sensors.add(sensor("kept", interval="1s"), kept)
    sensors.add(sensor("changed", interval="1s"), old)
    sensors.add(sensor("gone", interval="1s"), Fake(clock, {"t": (3.0, "")}))
    sensors.startService()
    try:
        clock.pump([0.5] * 4)
        assert node.metrics.registry.get_sample_value("stationd_sensor_value",
                                                      {"sensor": "gone", "field": "t", "unit": ""}) == 3.0
        sections = {"kept": sensor("kept", interval="1s"), "changed": sensor("changed", interval="2s"),
                    "new": sensor("new", interval="1s")}
        assert sensors.changes(sections) == (["new"], ["changed"], ["gone"])
        new, replacement = Fake(clock, {"t": (4.0, "")}), Fake(clock, {"t": (5.0, "")})
        sensors.reconfigure(sections, {"new": new, "changed": replacement})
        before = len(kept.calls), len(old.calls)
        clock.pump([0.5] * 8)
        assert sensors.names() == ["changed", "kept", "new"]
        assert len(kept.calls) == before[0] + 4 and len(old.calls) == before[1]  # the old driver left alone
        assert replacement.calls[-2:] == [1004.0, 1006.0] and new.calls[0] < 1003.0  # every 2 s; at once
        assert node.metrics.registry.get_sample_value("stationd_sensor_value",
                                                      {"sensor": "gone", "field": "t", "unit": ""}) is None
        assert sensors.changes(sections) == ([], [], [])
    finally:
        sensors.stopService()


def test_a_reload_while_old_readings_are_compacted_keeps_the_compaction_going(node):
    """compact() awaits the store sensor by sensor: a reload that adds and removes sensors
    meanwhile (as 50 reloads in tests/test_e2e_reload.py did) must not break its loop."""
    clock = task.Clock()
    held = []  # (sensor name, its compaction's Deferred)

    class HeldCompactions:
        def run(self, operation, *args):
            assert operation is history.compact
            held.append((args[0], defer.Deferred()))
            return held[-1][1]

    sensors = Sensors(HeldCompactions(), node.metrics, node.service.name, node.node_id, reactor, clock=clock,
                      run_blocking=in_line(clock))
    for name in ("a", "b"):
        sensors.add(sensor(name), Fake(clock, {"v": (1.0, "")}))
    done = defer.ensureDeferred(sensors.compact())
    sensors.reconfigure({"a": sensor("a", interval="2s"), "c": sensor("c")},
                        {"a": Fake(clock, {"v": (1.0, "")}), "c": Fake(clock, {"v": (1.0, "")})})
    held[0][1].callback(None)
    held[1][1].callback(None)
    assert [name for name, _ in held] == ["a", "b"]  # the sensors of when it began
    assert done.called and done.result is None
