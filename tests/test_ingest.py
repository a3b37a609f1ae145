"""Ingest through the real routes of a node built as twistd builds it (minus listeners)."""

import datetime
import hashlib
import json
import os
import pickle
import time
import urllib.parse

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer

from stationd.store import stations, users
from stationd.store.schema import events as events_table

from conftest import call, drained, make_node, serve

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest_twisted.async_yield_fixture()
async def node(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[ingest]\nmax_future_skew = 1d\n")
    node.store.call(stations.add_station, "501", stations.hash_password("secret"), cluster="ams")
    node.store.call(stations.add_station, "502", None)
    yield serve(node)
    await node.service.stopService()


def hisparc_events(n=3, second=0, kind="CIC"):
    return [{"header": {"eventtype_uploadcode": kind,
                        "datetime": datetime.datetime(2024, 5, 1, 12) + datetime.timedelta(seconds=second + i),
                        "nanoseconds": 123456789 + i, "date": None, "time": None},
             "datalist": [{"data_uploadcode": "PH1", "data": 500 + i},
                          {"data_uploadcode": "TR1", "data": "QUJD" * 50}]}
            for i in range(n)]


def upload_body(payload_text, station="501", password="secret", checksum=None, **extra):
    """Exactly what requests.post(url, data={...}) sends for a str payload."""
    checksum = checksum or hashlib.md5(payload_text.encode("latin-1")).hexdigest()
    fields = {"station_id": station, "password": password, "checksum": checksum,
              "data": payload_text, **extra}
    return urllib.parse.urlencode(fields).encode("ascii")


def pickled(events, protocol=2):
    return pickle.dumps(events, protocol=protocol).decode("latin-1")


async def upload(node, body):
    response, answer = await call(node.stub, "POST", "http://n/upload", data=body, headers=FORM)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/plain"]
    return answer.decode()


def stored(node):
    query = select(events_table).order_by(events_table.c.time_ns)
    return node.store.call(lambda conn: [dict(r._mapping) for r in conn.execute(query)])


@pytest_twisted.ensureDeferred
async def test_upload_stores_a_batch_and_answers_100(node):
    assert await upload(node, upload_body(pickled(hisparc_events(3)))) == "100"
    await drained(node)
    rows = stored(node)
    assert [(r["station"], r["type"], r["time_ns"]) for r in rows] == [
        ("501", "CIC", 1714564800_123456789), ("501", "CIC", 1714564801_123456790),
        ("501", "CIC", 1714564802_123456791)]
    assert rows[0]["data"] == {"PH1": 500, "TR1": "QUJD" * 50}
    assert not any(r["quarantined"] for r in rows)


@pytest_twisted.ensureDeferred
async def test_an_empty_body_is_400(node):
    assert await upload(node, b"") == "400"


@pytest.mark.parametrize("fields, code", [
    ({"station": "abc"}, "400"),
    ({"station": "777"}, "206"),
    ({"password": "wrong"}, "203"),
    ({"station": "502"}, "203"),  # a station without an upload password
    ({"checksum": "0" * 32}, "201"),
])
@pytest_twisted.ensureDeferred
async def test_upload_codes_in_order(node, fields, code):
    assert await upload(node, upload_body(pickled(hisparc_events()), **fields)) == code


@pytest_twisted.ensureDeferred
async def test_a_password_is_derived_once_whether_right_or_wrong(node, monkeypatch):
    """A station left with an old password retries for ever: each retry must not cost a key derivation."""
    real_scrypt, derived = hashlib.scrypt, []

    def scrypt(password, **kwargs):
        derived.append(password)
        return real_scrypt(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", scrypt)
    for password, code in [("stale", "203"), ("stale", "203"), ("secret", "201"), ("secret", "201")]:
        body = upload_body(pickled(hisparc_events()), password=password, checksum="0" * 32)
        assert await upload(node, body) == code
    assert derived == [b"stale", b"secret"]  # each node's hash has its own salt: nothing from earlier tests


def test_guessed_passwords_never_push_out_the_right_ones(monkeypatch):
    monkeypatch.setattr(stations, "_scrypt_matches", lambda stored, password: password == "right")
    stored = "scrypt$a-hash-of-this-test"
    assert stations.verify_password(stored, "right")
    for guess in range(5000):
        assert not stations.verify_password(stored, f"guess-{guess}")
    assert stations.remembered(stored, "right") is True
    assert stations.remembered(stored, "guess-4999") is False


@pytest_twisted.ensureDeferred
async def test_password_checks_run_one_at_a_time(node, monkeypatch):
    """Each holds 16 MiB: a burst of uploads with new passwords must not run them side by side."""
    real_verify, running, most = stations.verify_password, [], []

    def verify(stored, password):
        running.append(password)
        most.append(len(running))
        time.sleep(0.05)
        running.remove(password)
        return real_verify(stored, password)

    monkeypatch.setattr(stations, "verify_password", verify)
    bodies = [upload_body(pickled(hisparc_events()), password=f"guess-{i}") for i in range(4)]
    codes = await defer.gatherResults([defer.ensureDeferred(upload(node, body)) for body in bodies])
    assert codes == ["203"] * 4
    assert most == [1, 1, 1, 1]


@pytest_twisted.ensureDeferred
async def test_each_missing_field_is_400(node):
    full = {"station_id": "501", "password": "secret", "checksum": "x", "data": "y"}
    for missing in full:
        fields = {k: v for k, v in full.items() if k != missing}
        assert await upload(node, urllib.parse.urlencode(fields).encode()) == "400"


@pytest_twisted.ensureDeferred
async def test_malicious_pickles_are_208_and_run_nothing(node, tmp_path):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    payloads = [f"cos\nsystem\n(S'touch {sentinel}'\ntR.", pickled([Evil()], protocol=0),
                pickled([Evil()], protocol=2), pickled(Evil(), protocol=4)]
    for payload in payloads:
        assert await upload(node, upload_body(payload)) == "208"
    assert not sentinel.exists()
    await drained(node)
    assert stored(node) == []


@pytest_twisted.ensureDeferred
async def test_json_format_and_quarantine(node):
    events = [
        {"header": {"eventtype_uploadcode": "WTR", "datetime": "2024-05-01T12:00:00",
                    "nanoseconds": 5}, "datalist": [{"data_uploadcode": "T", "data": 21.5}]},
        {"header": {"eventtype_uploadcode": "CIC", "datetime": "2004-01-01T00:00:00",
                    "nanoseconds": 0}, "datalist": []},  # GPS rollover date
        {"header": {"eventtype_uploadcode": "CIC", "datetime": "2099-01-01T00:00:00",
                    "nanoseconds": 0}, "datalist": []},
    ]
    text = json.dumps(events)
    assert await upload(node, upload_body(text, format="json")) == "100"
    await drained(node)
    rows = {r["type"] + str(r["time_ns"])[:4]: r for r in stored(node)}
    assert rows["WTR1714"]["data"] == {"T": 21.5} and not rows["WTR1714"]["quarantined"]
    assert rows["CIC1072"]["quarantine_reason"] == "before min_event_time"
    assert rows["CIC4070"]["quarantine_reason"] == "more than max_future_skew ahead"
    status = node.service.status()["ingest"]["events"]
    assert status == {"hisparc_accepted": 1, "hisparc_quarantined": 2}
    _, metrics = await call(node.stub, "GET", "http://n/metrics")
    assert b'stationd_ingest_events_total{protocol="hisparc",result="quarantined"} 2.0' in metrics


@pytest_twisted.ensureDeferred
async def test_a_retried_batch_is_stored_once(node):
    body = upload_body(pickled(hisparc_events(100)))
    assert await upload(node, body) == "100"
    assert await upload(node, body) == "100"  # the reply was lost; the station retries
    await drained(node)
    assert len(stored(node)) == 100


def store_away(node, monkeypatch, reason="database is locked"):
    """Every transaction fails as when the database is away or locked; the function that brings it back."""
    from sqlalchemy.exc import OperationalError

    real = node.store.run
    failure = OperationalError("INSERT", {}, Exception(reason))
    monkeypatch.setattr(node.store, "run", lambda *a, **k: defer.fail(failure))

    def back():
        monkeypatch.setattr(node.store, "run", real)
        node.writer._wake()  # the drain retries now, not after its backoff

    return back


@pytest_twisted.ensureDeferred
async def test_a_full_spool_refuses_with_a_retry_code(node, monkeypatch):
    """The spool takes what the store cannot; when it is full too, the station is told to retry."""
    store_away(node, monkeypatch)
    node.spool.max_bytes = 0
    response, answer = await call(node.stub, "POST", "http://n/upload", headers=FORM,
                                  data=upload_body(pickled(hisparc_events())))
    assert answer == b"400" and response.headers.getRawHeaders("retry-after") == ["30"]


@pytest_twisted.ensureDeferred
async def test_uploads_acknowledged_while_the_store_is_away_are_stored_once_it_is_back(node, keys, monkeypatch):
    back = store_away(node, monkeypatch)
    body = upload_body(pickled(hisparc_events(5)))
    assert await upload(node, body) == "100" and await upload(node, body) == "100"  # durable in the spool
    response, answer = await native(node, "501", {"events": [{"type": "WTR", "time": 1714564800 + i, "data": {"i": i}}
                                                             for i in range(3)]}, keys["station"])
    assert response.code == 200 and json.loads(answer) == {"accepted": 3, "duplicates": 0, "quarantined": 0}
    assert node.spool.batches == 3 and stored(node) == []
    back()
    await drained(node)
    assert sorted(r["type"] for r in stored(node)) == ["CIC"] * 5 + ["WTR"] * 3  # each once
    assert node.spool.batches == 0
    assert await upload(node, body) == "100"  # straight to the store again: a duplicate there
    await drained(node)
    assert len(stored(node)) == 8


@pytest_twisted.ensureDeferred
async def test_an_fsync_error_refuses_the_upload_and_acknowledges_nothing(node, keys, monkeypatch):
    """SQLite's commit fails (its fsync: a disk I/O error), then the spool's fsync too: refused."""
    back = store_away(node, monkeypatch, "disk I/O error")

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(node.spool, "fsync", broken)
    assert await upload(node, upload_body(pickled(hisparc_events(2)))) == "400"
    response, _ = await native(node, "501", {"events": [{"type": "WTR", "time": 1714564800}]}, keys["station"])
    assert response.code == 503 and response.headers.getRawHeaders("retry-after") == ["5"]
    assert (node.spool.bytes, node.spool.batches) == (0, 0)
    assert not [name for name in os.listdir(node.spool.directory) if name.endswith(".seg")]
    back()
    await drained(node)
    assert stored(node) == []  # nothing acknowledged, nothing kept


@pytest_twisted.ensureDeferred
async def test_batches_beyond_what_waits_in_memory_are_refused(node, keys):
    node.ingest.commits.max_pending_bytes = 0
    response, body = await native(node, "501", {"events": [{"type": "WTR", "time": 1714564800}]}, keys["station"])
    assert response.code == 503 and "wait for the store" in json.loads(body)["error"]["message"]


# -- native JSON ingest --

def native(node, station, body, key=None, idempotency_key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return call(node.stub, "POST", f"http://n/api/v1/stations/{station}/events",
                data=json.dumps(body).encode(), headers=headers)


@pytest.fixture
def keys(node):
    return {
        "station": node.store.call(users.add_user, "st501", "station", station="501")[1],
        "other": node.store.call(users.add_user, "st502", "station", station="502")[1],
        "reader": node.store.call(users.add_user, "rd", "reader")[1],
        "admin": node.store.call(users.add_user, "ad", "admin")[1],
    }


@pytest_twisted.ensureDeferred
async def test_native_ingest_counts_and_nanoseconds(node, keys):
    batch = {"events": [
        {"type": "meteor", "time": "2024-05-01T12:00:00.123456789Z", "data": {"mag": -2.5}},
        {"type": "WTR", "time": "2024-05-01T14:00:00.5+02:00", "data": {"t": 20}},
        {"type": "WTR", "time": 1714564800.25, "data": {}},
        {"type": "CIC", "time_ns": 1_000_000_000, "data": {}},  # 1970: quarantined
    ]}
    response, body = await native(node, "501", batch, keys["station"])
    assert response.code == 200
    assert json.loads(body) == {"accepted": 3, "duplicates": 0, "quarantined": 1}
    await drained(node)
    times = sorted(r["time_ns"] for r in stored(node))
    assert times == [1_000_000_000, 1714564800_123456789, 1714564800_250000000, 1714564800_500000000]

    response, body = await native(node, "501", batch, keys["admin"])
    assert json.loads(body) == {"accepted": 0, "duplicates": 4, "quarantined": 0}


@pytest_twisted.ensureDeferred
async def test_native_idempotency_key_replays_the_answer(node, keys):
    batch = {"events": [{"type": "CIC", "time": "2024-05-01T12:00:00Z", "data": {"a": 1}}]}
    _, first = await native(node, "501", batch, keys["station"], idempotency_key="batch-1")
    await drained(node)
    response, again = await native(node, "501", batch, keys["station"], idempotency_key="batch-1")
    assert json.loads(again) == json.loads(first) == {"accepted": 1, "duplicates": 0, "quarantined": 0}
    assert response.headers.getRawHeaders("idempotent-replayed") == ["true"]
    assert len(stored(node)) == 1


@pytest_twisted.ensureDeferred
async def test_native_invalid_events_refuse_the_whole_batch(node, keys):
    batch = {"events": [
        {"type": "CIC", "time": "2024-05-01T12:00:00Z", "data": {}},
        {"type": "", "time": "2024-05-01T12:00:00Z"},
        {"type": "CIC", "time": "yesterday"},
        {"type": "CIC", "time": "2024-05-01T12:00:00Z", "data": [1]},
    ]}
    response, body = await native(node, "501", batch, keys["station"])
    assert response.code == 422
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_events"
    assert [d["index"] for d in error["details"]] == [1, 2, 3]
    await drained(node)
    assert stored(node) == []


@pytest_twisted.ensureDeferred
async def test_native_access_rules(node, keys):
    batch = {"events": [{"type": "CIC", "time": "2024-05-01T12:00:00Z"}]}
    assert (await native(node, "501", batch))[0].code == 401
    assert (await native(node, "501", batch, keys["reader"]))[0].code == 403
    assert (await native(node, "501", batch, keys["other"]))[0].code == 403
    assert (await native(node, "999", batch, keys["admin"]))[0].code == 404
    response, body = await call(node.stub, "POST", "http://n/api/v1/stations/501/events",
                                data=b"{bad", headers={"Authorization": f"Bearer {keys['station']}"})
    assert response.code == 400
    # Who asks is answered before what is wrong with the request, as on every route.
    assert (await native(node, "501", batch, "no-such-key"))[0].code == 401
    assert (await native(node, "999", batch, "no-such-key"))[0].code == 401
    assert (await native(node, "501", {"events": []}, "no-such-key"))[0].code == 401
    assert (await native(node, "501", {"events": [{"type": ""}]}, keys["other"]))[0].code == 403
    response, _ = await call(node.stub, "POST", "http://n/api/v1/stations/501/events", data=b"{bad",
                             headers={"Authorization": "Bearer no-such-key"})
    assert response.code == 401
    await drained(node)
    assert stored(node) == []


@pytest_twisted.ensureDeferred
async def test_native_full_spool_is_503_with_retry_after(node, keys, monkeypatch):
    store_away(node, monkeypatch)
    node.spool.max_bytes = 0
    response, body = await native(node, "501", {"events": [{"type": "CIC", "time": 1714564800}]},
                                  keys["station"])
    assert response.code == 503 and response.headers.getRawHeaders("retry-after") == ["5"]
    assert json.loads(body)["error"]["code"] == "unavailable"


@pytest_twisted.ensureDeferred
async def test_admin_station_routes(node, keys):
    auth = {"Authorization": f"Bearer {keys['admin']}"}
    response, body = await call(node.stub, "POST", "http://n/api/v1/admin/stations", headers=auth,
                                json={"id": "601", "password": "pw", "cluster": "utrecht"})
    assert response.code == 201 and json.loads(body)["station"]["has_password"] is True
    assert await upload(node, upload_body(pickled(hisparc_events()), station="601", password="pw")) == "100"
    response, body = await call(node.stub, "GET", "http://n/api/v1/admin/stations", headers=auth)
    assert [s["id"] for s in json.loads(body)["stations"]] == ["501", "502", "601"]
    response, _ = await call(node.stub, "DELETE", "http://n/api/v1/admin/stations/601", headers=auth)
    assert response.code == 200
    assert await upload(node, upload_body(pickled(hisparc_events()), station="601", password="pw")) == "206"


@pytest_twisted.ensureDeferred
async def test_times_beyond_what_the_store_holds_are_refused(node, keys):
    far = [{"header": {"eventtype_uploadcode": "CIC", "datetime": datetime.datetime(2300, 1, 1),
                       "nanoseconds": 0}, "datalist": []}]
    assert await upload(node, upload_body(pickled(far))) == "208"
    response, body = await native(node, "501", {"events": [{"type": "CIC", "time_ns": 10**19}]},
                                  keys["station"])
    assert response.code == 422, body
    response, body = await call(node.stub, "POST", "http://n/api/v1/stations/501/events",
                                data=b'{"events": [{"type": "CIC", "time": 1e400}]}',
                                headers={"Authorization": f"Bearer {keys['station']}"})
    assert response.code == 422 and b"1e400 is out of range" in body


@pytest_twisted.ensureDeferred
async def test_a_nul_character_is_refused_on_every_backend_not_acknowledged_and_lost(node, keys):
    """PostgreSQL cannot keep U+0000 in jsonb: refused up front (SQLite too, so replication never jams)."""
    batch = {"events": [{"type": "CIC", "time": "2024-05-01T12:00:00Z", "data": {"note": "a\x00b"}},
                        {"type": "CIC", "time": "2024-05-01T12:00:01Z", "data": {"k\x00": 1}},
                        {"type": "CIC", "time": "2024-05-01T12:00:02Z", "data": {"path": "C:\\u0000"}}]}
    response, body = await native(node, "501", batch, keys["station"])
    assert response.code == 422
    assert [(d["index"], "NUL" in d["message"]) for d in json.loads(body)["error"]["details"]] == [
        (0, True), (1, True)]
    events = [{"header": {"eventtype_uploadcode": "WTR", "datetime": "2024-05-01T12:00:00", "nanoseconds": 5},
               "datalist": [{"data_uploadcode": "T", "data": "x\x00"}]}]
    assert await upload(node, upload_body(json.dumps(events), format="json")) == "208"
    batch["events"] = batch["events"][2:]  # a backslash and "u0000" is text like any other
    response, _ = await native(node, "501", batch, keys["station"])
    assert response.code == 200
    await drained(node)
    assert [r["data"] for r in stored(node)] == [{"path": "C:\\u0000"}]


# -- compressed bodies --

def _compressed(body, how):
    import gzip
    import zlib

    if how == "gzip":
        return gzip.compress(body)
    if how == "deflate":
        return zlib.compress(body)
    raw = zlib.compressobj(wbits=-15)  # raw deflate, as some clients send "deflate"
    return raw.compress(body) + raw.flush()


@pytest.mark.parametrize("encoding, how", [("gzip", "gzip"), ("deflate", "deflate"), ("deflate", "raw")])
@pytest_twisted.ensureDeferred
async def test_gzip_and_deflate_bodies_are_taken_on_native_ingest(node, keys, encoding, how):
    batch = {"events": [{"type": "WTR", "time": 1714564800 + i, "data": {"t": i}} for i in range(20)]}
    response, body = await call(node.stub, "POST", "http://n/api/v1/stations/501/events",
                                data=_compressed(json.dumps(batch).encode(), how),
                                headers={"Authorization": f"Bearer {keys['station']}",
                                         "Content-Type": "application/json", "Content-Encoding": encoding})
    assert response.code == 200, body
    assert json.loads(body)["accepted"] == 20
    await drained(node)
    assert sorted(r["data"]["t"] for r in stored(node)) == list(range(20))


@pytest_twisted.ensureDeferred
async def test_a_decompression_bomb_is_413_and_a_corrupt_body_400(node, keys):
    """64 MiB of zeros in 64 KiB of gzip: decompressed no further than max_body_size (16 MiB)."""
    import gzip

    headers = {"Authorization": f"Bearer {keys['station']}", "Content-Type": "application/json",
               "Content-Encoding": "gzip"}
    bomb = gzip.compress(b'{"events": [' + b" " * (64 * 2**20) + b"]}")
    assert len(bomb) < 100_000
    response, body = await call(node.stub, "POST", "http://n/api/v1/stations/501/events", data=bomb,
                                headers=headers)
    assert response.code == 413 and "decompressed body is larger" in json.loads(body)["error"]["message"]
    response, body = await call(node.stub, "POST", "http://n/api/v1/stations/501/events",
                                data=gzip.compress(b'{"events": []}')[:-6], headers=headers)
    assert response.code == 400 and json.loads(body)["error"]["code"] == "bad_encoding"
    response, body = await call(node.stub, "POST", "http://n/api/v1/stations/501/events", data=b"{}",
                                headers=dict(headers, **{"Content-Encoding": "br"}))
    assert response.code == 415
    await drained(node)
    assert stored(node) == []


@pytest_twisted.ensureDeferred
async def test_a_bug_in_the_group_commit_refuses_the_batch_instead_of_hanging(node, keys, monkeypatch):
    async def broken(group):
        raise RuntimeError("a bug")

    monkeypatch.setattr(node.ingest.commits, "_commit", broken)
    response, body = await native(node, "501", {"events": [{"type": "WTR", "time": 1714564800}]}, keys["station"])
    assert response.code == 500 and json.loads(body)["error"]["code"] == "store_refused"
    assert await upload(node, upload_body(pickled(hisparc_events(1)))) == "400"
    monkeypatch.undo()
    response, _ = await native(node, "501", {"events": [{"type": "WTR", "time": 1714564800}]}, keys["station"])
    assert response.code == 200  # the next group commits as usual
