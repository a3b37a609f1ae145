"""The real daemon: `twistd -n stationd` as a subprocess, over real sockets and TLS."""

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.client import Agent
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from stationd.client import Client, ClientError
from stationd.tls import make_certificate, write_pair

from conftest import write_config

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out

BIN = os.path.dirname(sys.executable)


_HANDED_OUT: set[int] = set()


def free_port():
    """A loopback port nobody listens on, and not one handed out before: the kernel may give a
    closed port again at once, and two nodes made before either starts would share it (the
    second's heartbeat check then answered by the first)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Node:
    """A stationd process on free loopback ports, with its own data_dir."""

    def __init__(self, tmp_path, body=""):
        self.tmp_path = tmp_path
        self.http, self.https = free_port(), free_port()
        self.config = write_config(
            tmp_path, body,
            http=f"tcp:{self.http}:interface=127.0.0.1",
            https=f"tcp:{self.https}:interface=127.0.0.1",
        )
        self.cert = str(tmp_path / "var" / "tls" / "cert.pem")
        self.log = tmp_path / "node.log"

    started = []  # every process, so a failing test leaves none running

    def start(self, **popen):
        """Start it (``popen``: more Popen arguments); once it answers /heartbeat."""
        self.proc = launch(self.tmp_path, self.config, stdout=open(self.log, "wb"), **popen)
        Node.started.append(self.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/heartbeat", timeout=1) as r:
                    if r.read() == b"OK":
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("node did not answer within 30 s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


@pytest.fixture(autouse=True)
def no_node_left_running():
    yield
    while Node.started:
        proc = Node.started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def launch(cwd, config, **kwargs):
    command = [os.path.join(BIN, "twistd"), "--pidfile=", "-n", "stationd", "--config", str(config)]
    return subprocess.Popen(command, cwd=cwd, stderr=subprocess.STDOUT, **kwargs)


@pytest.fixture
def node_factory(tmp_path):
    nodes = []

    def make(body="", subdir="node"):
        path = tmp_path / subdir
        path.mkdir()
        nodes.append(Node(path, body).start())
        return nodes[-1]

    yield make
    for node in nodes:
        node.stop()


def handshake(port, cafile, maximum=None, client=None):
    """A raw TLS handshake and one request with Python's ssl module; returns the reply."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        if maximum:
            context.maximum_version = maximum
    if client:
        context.load_cert_chain(*client)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"GET /heartbeat HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return conn.recv(4096)


@implementer(IPolicyForHTTPS)
class ExpectName:
    """Verify the node's certificate as if we had dialled ``name``."""

    def __init__(self, name, cafile):
        self.name = name
        self.trust = Certificate.loadPEM(open(cafile, "rb").read())

    def creatorForNetloc(self, hostname, port):
        return optionsForClientTLS(self.name, trustRoot=self.trust)


@pytest_twisted.ensureDeferred
async def test_https_with_the_generated_certificate(node_factory):
    node = node_factory()
    client = Client(f"https://127.0.0.1:{node.https}", ca=node.cert)
    try:
        assert await client.heartbeat() == "OK"
        components = (await client.status())["components"]
        assert components == {"core": "enabled", "admin": "enabled", "upload": "enabled",
                              "ingest": "enabled", "query": "enabled", "configs": "enabled",
                              "import": "enabled", "sensors": "enabled", "metrics": "enabled",
                              "docs": "enabled", "dashboard": "enabled", "meteorpi": "disabled"}
    finally:
        await client.close()

    for name, works in (("localhost", True), ("wrong.example.org", False)):
        http = treq.client.HTTPClient(Agent(reactor, contextFactory=ExpectName(name, node.cert)))
        client = Client(f"https://127.0.0.1:{node.https}", http_client=http)
        if works:
            assert await client.heartbeat() == "OK"
        else:
            with pytest.raises(ClientError, match="cannot reach"):
                await client.heartbeat()


def test_stationd_client_cli_over_https(node_factory):
    node = node_factory()
    out = subprocess.run(
        [os.path.join(BIN, "stationd-client"), "--url", f"https://localhost:{node.https}",
         "--ca", node.cert, "heartbeat"], capture_output=True, text=True, timeout=60,
    )
    assert (out.returncode, out.stdout) == (0, "OK\n")
    out = subprocess.run(
        [os.path.join(BIN, "stationd-client"), "--url", f"https://localhost:{node.https}", "heartbeat"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("stationd-client: cannot reach") and "certificate verify failed" in out.stderr


def test_old_tls_versions_are_refused(node_factory):
    node = node_factory()
    assert handshake(node.https, node.cert).startswith(b"HTTP/1.0 200 OK")
    assert handshake(node.https, node.cert, maximum=ssl.TLSVersion.TLSv1_2).startswith(b"HTTP/1.0 200 OK")
    with pytest.raises(ssl.SSLError, match="(?i)alert protocol version"):
        handshake(node.https, node.cert, maximum=ssl.TLSVersion.TLSv1_1)

    strict = node_factory("[web]\ntls_min_version = TLSv1.3\n", subdir="strict")
    assert handshake(strict.https, strict.cert).startswith(b"HTTP/1.0 200 OK")
    with pytest.raises(ssl.SSLError, match="(?i)alert protocol version"):
        handshake(strict.https, strict.cert, maximum=ssl.TLSVersion.TLSv1_2)


def test_client_certificates_when_client_ca_is_set(node_factory, tmp_path):
    ca_key, ca_cert = make_certificate(["Field CA"], is_ca=True)
    write_pair(ca_key, ca_cert, str(tmp_path / "ca.pem"), str(tmp_path / "ca-key.pem"))
    key, cert = make_certificate(["station-7"], issuer=(ca_key, ca_cert))
    write_pair(key, cert, str(tmp_path / "client.pem"), str(tmp_path / "client-key.pem"))
    rogue_key, rogue_cert = make_certificate(["rogue"])
    write_pair(rogue_key, rogue_cert, str(tmp_path / "rogue.pem"), str(tmp_path / "rogue-key.pem"))

    node = node_factory(f"[web]\nclient_ca = {tmp_path}/ca.pem\n")
    signed = (str(tmp_path / "client.pem"), str(tmp_path / "client-key.pem"))
    assert handshake(node.https, node.cert, client=signed).startswith(b"HTTP/1.0 200 OK")
    for client in (None, (str(tmp_path / "rogue.pem"), str(tmp_path / "rogue-key.pem"))):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            handshake(node.https, node.cert, client=client)


@pytest_twisted.ensureDeferred
async def test_a_20mb_body_gets_413_and_memory_stays_flat(node_factory):
    node = node_factory("[web]\nmax_body_size = 1MiB\n")
    client = Client(f"https://127.0.0.1:{node.https}", ca=node.cert)
    try:
        await client.heartbeat()
        before = node.rss_kib()
        for _ in range(3):
            with pytest.raises(ClientError) as raised:
                await client.request("POST", "/api/v1/admin/users", data=b"x" * 20_000_000)
            assert (raised.value.status, raised.value.code) == (413, "payload_too_large")
        growth = node.rss_kib() - before
    finally:
        await client.close()
    assert growth < 4096, f"RSS grew by {growth} KiB while refusing 60 MB"


def test_sigterm_stops_the_node_with_exit_0(tmp_path):
    node = Node(tmp_path).start()
    assert node.stop() == 0
    assert "Server Shut Down" in node.log.read_text()


def test_users_added_by_the_admin_command_work_on_the_next_request(node_factory):
    node = node_factory()
    admin = os.path.join(BIN, "stationd-admin")
    out = subprocess.run([admin, "add-user", "ops", "--role", "admin", "--config", str(node.config)],
                         capture_output=True, text=True, timeout=60, check=True)
    key = out.stdout.splitlines()[-1]
    request = urllib.request.Request(f"http://127.0.0.1:{node.http}/api/v1/admin/users",
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert b'"name":"ops"' in r.read()
    subprocess.run([admin, "remove-user", "ops", "--config", str(node.config)], check=True,
                   capture_output=True, timeout=60)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 401


def test_native_ingest_takes_gzip_and_refuses_a_key_rotated_by_the_admin_command(node_factory):
    """Through the real daemon's ingest route (served without Klein's routing, keys cached)."""
    import gzip

    node = node_factory()
    admin_cli(node.config, "add-station", "501")
    key = admin_cli(node.config, "add-user", "box", "--role", "station", "--station", "501").strip().splitlines()[-1]
    context = ssl.create_default_context(cafile=node.cert)

    def ingest(body, secret, encoding=None):
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        if encoding:
            headers["Content-Encoding"] = encoding
        request = urllib.request.Request(f"https://localhost:{node.https}/api/v1/stations/501/events", data=body,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return json.loads(response.read())

    batch = json.dumps({"events": [{"type": "WTR", "time": 1714564800 + i, "data": {"i": i}} for i in range(50)]})
    assert ingest(gzip.compress(batch.encode()), key, "gzip") == {"accepted": 50, "duplicates": 0, "quarantined": 0}
    assert ingest(batch.encode(), key)["duplicates"] == 50  # the same events, plain: stored once
    new_key = admin_cli(node.config, "rotate-key", "box").strip().splitlines()[-1]
    with pytest.raises(urllib.error.HTTPError) as refused:
        ingest(batch.encode(), key)
    assert refused.value.code == 401
    assert ingest(batch.encode(), new_key)["duplicates"] == 50
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/api/v1/events?limit=100", timeout=30) as response:
        assert sorted(e["data"]["i"] for e in json.loads(response.read())["events"]) == list(range(50))


# -- start-up errors: exit code and one line on stderr --

def start_fails(tmp_path, body):
    config = write_config(tmp_path, body)
    proc = launch(tmp_path, config, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, config, out.decode()


@pytest.mark.parametrize("body, code, message", [
    ("[web]\nhtps = tcp:1\n", 2, "{config}:web:htps: unknown key"),
    ("[web]\nmax_body_size = big\n", 2, "{config}:web:max_body_size: expected a size"),
    ("[web]\nhttp = tcp:notaport\n", 2, "{config}:web:http: bad endpoint 'tcp:notaport'"),
    ("[web]\ntls_cert = /nonexistent/cert.pem\ntls_key = /nonexistent/key.pem\nhttps = tcp:0\n",
     2, "{config}:web:tls_cert: cannot load certificate /nonexistent/cert.pem"),
])
def test_config_errors_stop_the_start(tmp_path, body, code, message):
    returncode, config, out = start_fails(tmp_path, body)
    assert returncode == code
    assert len(out.splitlines()) == 1, out
    assert out.startswith(message.format(config=config))


def test_port_in_use_stops_the_start_with_exit_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        returncode, _, out = start_fails(tmp_path, f"[web]\nhttp = tcp:{port}:interface=127.0.0.1\n")
    assert returncode == 1
    assert out.splitlines()[-1] == f"stationd: cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use"
    assert "Traceback" not in out


def test_json_log_file_has_one_line_per_request(tmp_path):
    node = Node(tmp_path, f"[log]\npath = {tmp_path}/log/node.json\nformat = json\nlevel = info\n").start()
    urllib.request.urlopen(f"http://127.0.0.1:{node.http}/version?x=1", timeout=10).read()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{node.http}/nope", timeout=10)
    assert node.stop() == 0
    with open(tmp_path / "log" / "node.json") as f:
        events = [json.loads(line) for line in f]  # one object a line, as a log shipper reads them
    access = [e for e in events if e["namespace"] == "stationd.access"]
    # the start-up probe's heartbeats come first
    assert [(e["method"], e["uri"], e["status"]) for e in access][-2:] == [
        ("GET", "/version?x=1", 200), ("GET", "/nope", 404)]
    assert all(e["client"] == "127.0.0.1" and e["duration_ms"] >= 0 and e["size"] > 0 for e in access)
    last = access[-1]
    assert last["message"] == f'127.0.0.1 - "GET /nope" 404 {last["size"]} {last["duration_ms"]:.1f}ms'
    assert all(e["level"] in ("debug", "info", "warn", "error", "critical") and e["time"].endswith("Z")
               for e in events)
    assert any(" started; components: " in e["message"] for e in events)
    assert node.log.read_text().strip() == ""  # nothing on stderr/stdout


def peer_certificate(port):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as conn:
            return conn.getpeercert(binary_form=True)


def test_sighup_reloads_the_certificate_without_dropping_connections(tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding

    tls_dir = tmp_path / "certs"
    tls_dir.mkdir()
    first = make_certificate(["localhost"])
    write_pair(*first, str(tls_dir / "cert.pem"), str(tls_dir / "key.pem"))
    node = Node(tmp_path, f"[web]\ntls_cert = {tls_dir}/cert.pem\ntls_key = {tls_dir}/key.pem\n").start()
    try:
        assert peer_certificate(node.https) == first[1].public_bytes(Encoding.DER)
        context = ssl.create_default_context(cafile=str(tls_dir / "cert.pem"))
        held = context.wrap_socket(socket.create_connection(("127.0.0.1", node.https), timeout=10),
                                   server_hostname="localhost")  # a TLS connection across the reload
        second = make_certificate(["localhost"])
        write_pair(*second, str(tls_dir / "cert.pem"), str(tls_dir / "key.pem"))
        node.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while peer_certificate(node.https) != second[1].public_bytes(Encoding.DER):
            assert time.monotonic() < deadline, "certificate not reloaded"
            time.sleep(0.05)
        held.sendall(b"GET /heartbeat HTTP/1.0\r\n\r\n")
        assert held.recv(4096).startswith(b"HTTP/1.0 200 OK")
        held.close()
    finally:
        assert node.stop() == 0


def test_a_certificate_chain_is_served_whole(node_factory, tmp_path):
    from cryptography.hazmat.primitives.serialization import Encoding

    root = make_certificate(["Root CA"], is_ca=True)
    intermediate = make_certificate(["Intermediate CA"], issuer=root, is_ca=True)
    leaf_key, leaf = make_certificate(["localhost"], issuer=intermediate)
    write_pair(*root, str(tmp_path / "root.pem"), str(tmp_path / "root-key.pem"))
    write_pair(leaf_key, leaf, str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"))
    with open(tmp_path / "chain.pem", "ab") as f:
        f.write(intermediate[1].public_bytes(Encoding.PEM))

    node = node_factory(f"[web]\ntls_cert = {tmp_path}/chain.pem\ntls_key = {tmp_path}/key.pem\n")
    # The client trusts only the root: it needs the intermediate from the node.
    assert handshake(node.https, str(tmp_path / "root.pem")).startswith(b"HTTP/1.0 200 OK")


def admin_cli(config, *argv):
    out = subprocess.run([os.path.join(BIN, "stationd-admin"), *argv, "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest_twisted.ensureDeferred
async def test_hisparc_upload_over_https_lands_every_event(tmp_path):
    import datetime
    import hashlib
    import pickle
    import sqlite3
    import urllib.parse

    import numpy

    node = Node(tmp_path)
    admin_cli(node.config, "add-station", "501", "--password", "s3cret", "--cluster", "ams")
    node.start()
    start = datetime.datetime(2024, 5, 1, 22, 0, 0)
    batch = [{"header": {"eventtype_uploadcode": "CIC" if i % 2 else "WTR",
                         "datetime": start + datetime.timedelta(seconds=i),
                         "nanoseconds": numpy.int64(100_000_000 + i), "date": start.date(),
                         "time": start.time()},
              "datalist": [{"data_uploadcode": "PH1", "data": numpy.int32(1000 + i)},
                           {"data_uploadcode": "TEMP", "data": numpy.float32(20.5)},
                           {"data_uploadcode": "TR1", "data": "QUJD" * 150},
                           {"data_uploadcode": "TR1", "data": "REVG" * 150}]}
             for i in range(100)]
    text = pickle.dumps(batch, protocol=2).decode("latin-1")
    # What requests.post(url, data={...}) sends: urlencoded UTF-8 of the str fields.
    body = urllib.parse.urlencode({"station_id": "501", "password": "s3cret", "data": text,
                                   "checksum": hashlib.md5(text.encode("latin-1")).hexdigest()})
    client = Client(f"https://localhost:{node.https}", ca=node.cert)
    try:
        _, answer = await client.request(
            "POST", "/upload", data=body.encode("ascii"),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
    finally:
        await client.close()
        assert node.stop() == 0  # a clean stop drains the writer first
    assert answer == b"100"

    db = sqlite3.connect(tmp_path / "var" / "stationd.sqlite")
    rows = db.execute("SELECT type, time_ns, data, quarantined FROM events ORDER BY time_ns").fetchall()
    assert len(rows) == 100
    for i, (kind, time_ns, data, quarantined) in enumerate(rows):
        assert kind == ("CIC" if i % 2 else "WTR")
        assert time_ns == 1714600800_000000000 + i * 10**9 + 100_000_000 + i
        assert json.loads(data) == {"PH1": 1000 + i, "TEMP": 20.5, "TR1": ["QUJD" * 150, "REVG" * 150]}
        assert not quarantined


def test_station_list_is_loaded_and_reloaded_on_sighup(tmp_path):
    import hashlib
    import json as jsonlib
    import urllib.parse

    csv = tmp_path / "stations.csv"
    csv.write_text("501,amsterdam,first\n")
    node = Node(tmp_path, f"[ingest]\nstation_list = {csv}\n").start()

    def upload(station, password):
        text = jsonlib.dumps([])
        body = urllib.parse.urlencode({"station_id": station, "password": password, "data": text,
                                       "format": "json", "checksum": hashlib.md5(text.encode()).hexdigest()})
        request = urllib.request.Request(f"http://127.0.0.1:{node.http}/upload", data=body.encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.read().decode()

    try:
        deadline = time.monotonic() + 20
        while upload("501", "first") != "100":  # loaded at start, in the background
            assert time.monotonic() < deadline
            time.sleep(0.1)
        csv.write_text("501,amsterdam,second\n502,utrecht,other\n")
        node.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while upload("501", "second") != "100":
            assert time.monotonic() < deadline, "station list not reloaded"
            time.sleep(0.1)
        assert upload("501", "first") == "203"
        assert upload("502", "other") == "100"
    finally:
        assert node.stop() == 0


@pytest_twisted.ensureDeferred
async def test_events_and_files_are_queried_back_over_https(tmp_path):
    import datetime
    import hashlib
    import pickle
    import urllib.parse

    node = Node(tmp_path)
    admin_cli(node.config, "add-station", "501", "--password", "s3cret")
    key = admin_cli(node.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    node.start()
    url = f"https://localhost:{node.https}"
    client = Client(url, api_key=key, ca=node.cert)
    start = datetime.datetime(2024, 5, 1, 22, 0, 0)
    batch = [{"header": {"eventtype_uploadcode": "CIC", "datetime": start + datetime.timedelta(seconds=i),
                         "nanoseconds": 7 + i, "date": None, "time": None},
              "datalist": [{"data_uploadcode": "PH1", "data": 100 * i}]} for i in range(40)]
    text = pickle.dumps(batch, protocol=0).decode("latin-1")
    body = urllib.parse.urlencode({"station_id": "501", "password": "s3cret", "data": text,
                                   "checksum": hashlib.md5(text.encode("latin-1")).hexdigest()})
    native = {"events": [{"type": "WTR", "time": f"2024-05-01T22:00:{i:02d}.123456789Z", "data": {"temp": i}}
                         for i in range(20)]}
    try:
        _, answer = await client.request("POST", "/upload", data=body.encode("ascii"),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer == b"100"
        _, answer = await client.request("POST", "/api/v1/stations/501/events", json=native)
        assert json.loads(answer)["accepted"] == 20

        async def events(query):
            _, answer = await client.request("GET", "/api/v1/events?" + query)
            return json.loads(answer)

        deadline = time.monotonic() + 30
        while len((await events("limit=100"))["events"]) < 60:  # the writer drains within moments
            assert time.monotonic() < deadline, "events did not reach the store"
            time.sleep(0.05)

        walked, cursor = [], ""
        while True:  # keyset paging, 7 at a time
            page = await events("station=501&limit=7" + (f"&cursor={cursor}" if cursor else ""))
            walked += page["events"]
            cursor = page["next"]
            if not cursor:
                break
        assert len(walked) == len({e["id"] for e in walked}) == 60
        assert [e["time_ns"] for e in walked] == sorted((e["time_ns"] for e in walked), reverse=True)
        cic = await events("type=CIC&order=asc&limit=100")
        assert [e["time"] for e in cic["events"]][:2] == ["2024-05-01T22:00:00.000000007Z",
                                                         "2024-05-01T22:00:01.000000008Z"]
        assert [e["data"]["PH1"] for e in (await events("field.PH1.ge=3700"))["events"]] == [3900, 3800, 3700]
        window = await events("after=2024-05-01T22:00:10Z&before=1714600812&type=WTR")
        assert [e["data"] for e in window["events"]] == [{"temp": 11}, {"temp": 10}]
        with pytest.raises(ClientError, match="limit: use an integer"):
            await client.request("GET", "/api/v1/events?limit=0")
        _, answer = await client.request("GET", "/api/v1/stations/501")
        counts = {"events": 60, "quarantined": 0, "first_event_time": "2024-05-01T22:00:00.000000007Z",
                  "last_event_time": "2024-05-01T22:00:39.000000046Z"}
        assert json.loads(answer)["counts"] == counts
        # An event from a clock days ahead is quarantined: counted apart, it is no "last event".
        ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)
        _, answer = await client.request("POST", "/api/v1/stations/501/events",
                                         json={"events": [{"type": "WTR", "time": ahead.isoformat(), "data": {}}]})
        assert json.loads(answer)["quarantined"] == 1
        _, answer = await client.request("GET", "/api/v1/stations/501")
        assert json.loads(answer)["counts"] == dict(counts, quarantined=1)

        # stationd-client, as a script would use it.
        out = subprocess.run([os.path.join(BIN, "stationd-client"), "--url", url, "--ca", node.cert,
                              "query", "--type", "WTR", "--field", "temp.lt=3", "--json", "--page-size", "2"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(e["type"], e["data"]) for e in lines] == [("WTR", {"temp": 2}), ("WTR", {"temp": 1}),
                                                          ("WTR", {"temp": 0})]
        assert lines[-1]["time"] == "2024-05-01T22:00:00.123456789Z"

        # A file: attached over the admin route, read back over real sockets.
        content = os.urandom(300_000)
        _, answer = await client.request("POST", f"/api/v1/admin/events/{walked[0]['id']}/files"
                                         "?name=trace.bin&semantic_type=trace", data=content)
        file_id = json.loads(answer)["file"]["id"]
    finally:
        await client.close()
    context = ssl.create_default_context(cafile=node.cert)
    request = urllib.request.Request(f"{url}/api/v1/files/{file_id}/content")
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        assert response.headers["Content-Length"] == "300000"
        etag = response.headers["ETag"]
        assert hashlib.sha256(response.read()).hexdigest() == etag.strip('"')
    request = urllib.request.Request(f"{url}/api/v1/files/{file_id}/content", headers={"Range": "bytes=-1000"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == "bytes 299000-299999/300000"
        assert response.headers["Content-Length"] == "1000"
        assert response.read() == content[-1000:]
    request = urllib.request.Request(f"{url}/api/v1/files/{file_id}/content", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, context=context, timeout=30)
    assert not_modified.value.code == 304
    assert node.stop() == 0


def test_fplane_configs_as_fplaneserver_clients_use_them(tmp_path):
    node = Node(tmp_path, "[node]\ntimezone = America/Chicago\n")
    key = admin_cli(node.config, "add-user", "tcs", "--role", "editor").strip().splitlines()[-1]
    node.start()
    url = f"https://localhost:{node.https}"
    context = ssl.create_default_context(cafile=node.cert)
    config = {"units": [{"ifuslot": "013", "x": -350.0, "y": 250.0, "specid": 20, "specslot": 65, "ifuid": "031",
                         "ifurot": 0.0, "platesc": 1.0, "actual": {"x": -350.5, "y": 250.25}},
                        {"ifuslot": "014", "x": -250.0, "y": 250.0, "specid": 0, "specslot": 0, "ifuid": "000",
                         "ifurot": 0.0, "platesc": 1.0}]}
    # The telescope control system's POST, with FPlaneServer's header.
    request = urllib.request.Request(
        f"{url}/fplane", data=json.dumps({"config": config, "commit": "true",
                                          "valid_from": "2024-05-01T00:00:00Z"}).encode(),
        headers={"Authorization": f"FPS_API APIKEY={key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        posted = response.read().decode()
    assert "fplane version 1" in posted

    # What existing user scripts do.
    with urllib.request.urlopen(f"{url}/fplane/20240510?actual_pos=0&full_fplane=1", context=context,
                                timeout=30) as response:
        assert response.headers["Content-Disposition"] == 'attachment; filename="fplane20240510.txt"'
        served = response.read().decode()
    assert served == posted
    rows = [line.split() for line in served.splitlines() if not line.startswith("#")]
    assert rows == [["013", "-350.0", "250.0", "020", "065", "031", "0.0", "1.0"]]

    # The shell script, with get_fplane.sh's flags.
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "get_config.sh")
    env = dict(os.environ, STATIOND_URL=url, STATIOND_CA=node.cert)
    out = subprocess.run(["sh", script, "-s", "-p", "20240510"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    short = (tmp_path / "fplane20240510.txt").read_text()
    assert [line.split()[:3] for line in short.splitlines() if not line.startswith("#")] == [
        ["013", "-350.5", "250.25"]]
    out = subprocess.run(["sh", script, "-o", "-", "20230101"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "no version of fplane" in out.stderr + out.stdout

    # stationd-client.
    out = subprocess.run([os.path.join(BIN, "stationd-client"), "--url", url, "--ca", node.cert,
                          "get-config", "20240510T03:00:00", "-o", str(tmp_path / "c.txt")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "c.txt").read_text() == served
    assert node.stop() == 0


def status_of(node):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/api/v1/status", timeout=30) as response:
        return json.loads(response.read())


def test_replication_over_mutual_tls_through_outages_and_a_crash(tmp_path):
    """A station node exports to a central node that requires client certificates, both
    left at the default [node] name (as imaged Raspberry Pis are): everything ingested
    below arrives above exactly once, through an upstream outage and a SIGKILL of the
    exporting node, and the lag says how long events have waited."""
    import hashlib

    for name, args in (("ca", ["--ca", "--host", "test-ca"]), ("central", ["--issuer", str(tmp_path / "ca"),
                       "--host", "localhost"]),
                       ("station", ["--issuer", str(tmp_path / "ca"), "--host", "station-7"])):
        out = subprocess.run([os.path.join(BIN, "stationd-admin"), "make-cert", *args, "--out", str(tmp_path / name)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    (tmp_path / "up").mkdir()
    (tmp_path / "down").mkdir()
    central = Node(tmp_path / "up", f"[web]\ntls_cert = {tmp_path}/central/cert.pem\n"
                                    f"tls_key = {tmp_path}/central/key.pem\nclient_ca = {tmp_path}/ca/cert.pem\n")
    importer_key = admin_cli(central.config, "add-user", "station-7", "--role", "importer").strip().splitlines()[-1]
    station = Node(tmp_path / "down", f"""[export:central]
target_url = https://localhost:{central.https}
api_key = {importer_key}
ca = {tmp_path}/ca/cert.pem
client_cert = {tmp_path}/station/cert.pem
client_key = {tmp_path}/station/key.pem
interval = 200ms
batch_size = 100
max_backoff = 1s
timeout = 5s
""")
    admin_cli(station.config, "add-station", "501")
    key = admin_cli(station.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]

    def ingest(first, n):
        for start in range(first, first + n, 250):
            body = {"events": [{"type": "CIC", "time_ns": 1714564800 * 10**9 + i, "data": {"n": i}}
                               for i in range(start, min(start + 250, first + n))]}
            request = urllib.request.Request(f"http://127.0.0.1:{station.http}/api/v1/stations/501/events",
                                             data=json.dumps(body).encode(), headers={
                                                 "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.loads(response.read())["accepted"] == min(250, first + n - start)

    def upstream_events():
        events, cursor = [], ""
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{central.http}/api/v1/events?limit=10000&order=asc"
                                        + (f"&cursor={cursor}" if cursor else ""), timeout=30) as response:
                page = json.loads(response.read())
            events += page["events"]
            cursor = page["next"]
            if not cursor:
                return events

    def wait_for(n, limit=60):
        deadline = time.monotonic() + limit
        while len(upstream_events()) < n:
            assert time.monotonic() < deadline, f"{len(upstream_events())} of {n} events arrived"
            time.sleep(0.2)

    central.start()
    station.start()
    up, down = status_of(central), status_of(station)
    assert up["node"] == down["node"] == socket.gethostname() and up["node_id"] != down["node_id"]
    ingest(0, 300)
    deadline = time.monotonic() + 30
    while True:  # acknowledged once on the spool; in the store a moment later
        request = urllib.request.Request(f"http://127.0.0.1:{station.http}/api/v1/events?limit=1")
        with urllib.request.urlopen(request, timeout=30) as response:
            newest = json.loads(response.read())["events"]
        if newest:
            first_event = newest[0]["id"]
            break
        assert time.monotonic() < deadline, "the ingested events did not reach the store"
        time.sleep(0.05)
    content = os.urandom(200_000)
    request = urllib.request.Request(
        f"http://127.0.0.1:{station.http}/api/v1/admin/events/{first_event}/files?name=frame.png&mime_type=image/png",
        data=content, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        file_id = json.loads(response.read())["file"]["id"]
    wait_for(300)

    # The upstream goes away for a while: the exporter backs off and says so.
    assert central.stop() == 0
    ingest(300, 500)
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{station.http}/api/v1/status", timeout=30) as response:
            state = json.loads(response.read())["exports"]["central"]
        if state["state"] == "backing_off":
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert "cannot reach" in state["last_error"]
    time.sleep(1.5)
    later = status_of(station)["exports"]["central"]
    assert later["lag_seconds"] >= state["lag_seconds"] + 1.5 and later["oldest_pending"]
    central.start()
    wait_for(800)
    deadline = time.monotonic() + 30
    while (state := status_of(station)["exports"]["central"])["state"] != "ok" or state["lag_seconds"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["last_error"] is None and state["last_error_at"] and state["events"]["skipped_origin"] == 0

    # A big backlog, and the exporting node killed while it works through it.
    ingest(800, 3000)
    time.sleep(0.3)
    station.proc.kill()
    station.proc.wait()
    station.start()
    wait_for(3800, limit=120)

    events = upstream_events()
    assert len(events) == len({e["id"] for e in events}) == 3800
    assert sorted(e["data"]["n"] for e in events) == list(range(3800))
    assert {e["origin"] for e in events} == {down["node_id"]}
    with urllib.request.urlopen(f"http://127.0.0.1:{central.http}/api/v1/files/{file_id}/content",
                                timeout=30) as response:
        assert hashlib.sha256(response.read()).digest() == hashlib.sha256(content).digest()
    # Without a client certificate the central node's TLS listener refuses.
    context = ssl.create_default_context(cafile=str(tmp_path / "ca" / "cert.pem"))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(f"https://localhost:{central.https}/api/v1/import", context=context, timeout=10).read()
    assert station.stop() == 0 and central.stop() == 0


def test_a_three_node_chain_with_a_target_added_and_paused_at_run_time(tmp_path):
    """station -> regional (a config-file target) -> central (a target added with
    stationd-client while the nodes run, paused and resumed, kept across a
    restart): what is ingested at the bottom arrives at the top once.  Then
    central also exports back down to regional: regional's own events are
    passed over (counted), the rest land as duplicates, and nothing ping-pongs."""
    import hashlib

    for name in ("station", "regional", "central"):
        (tmp_path / name).mkdir()
    central = Node(tmp_path / "central", "[node]\nname = central\n")
    regional = Node(tmp_path / "regional", "[node]\nname = regional\n")
    central_key = admin_cli(central.config, "add-user", "regional", "--role", "importer").strip().splitlines()[-1]
    central_admin = admin_cli(central.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    regional_key = admin_cli(regional.config, "add-user", "station-7", "--role", "importer").strip().splitlines()[-1]
    regional_admin = admin_cli(regional.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    central.start()
    regional.start()  # its certificate exists from here on: the station's exporter trusts it
    station = Node(tmp_path / "station", f"""[node]
name = station-7
[export:regional]
target_url = https://localhost:{regional.https}
api_key = {regional_key}
ca = {regional.cert}
interval = 200ms
max_backoff = 1s
""")
    admin_cli(station.config, "add-station", "501")
    station_key = admin_cli(station.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    station.start()

    def exports_cli(*argv, node=regional, key=regional_admin):
        out = subprocess.run([os.path.join(BIN, "stationd-client"), "--url", f"https://localhost:{node.https}",
                              "--ca", node.cert, "--api-key", key, "exports", *argv],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def ingest(first, n, node=station, station_id="501", key=station_key):
        body = {"events": [{"type": "CIC", "time_ns": 1714564800 * 10**9 + i, "data": {"n": i}}
                           for i in range(first, first + n)]}
        request = urllib.request.Request(f"http://127.0.0.1:{node.http}/api/v1/stations/{station_id}/events",
                                         data=json.dumps(body).encode(), headers={
                                             "Authorization": f"Bearer {key}",
                                             "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["accepted"] == n

    def events_at(node):
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/api/v1/events?limit=10000&order=asc",
                                    timeout=30) as response:
            return json.loads(response.read())["events"]

    def wait_for(node, n, limit=60):
        deadline = time.monotonic() + limit
        while len(events_at(node)) < n:
            assert time.monotonic() < deadline, f"{len(events_at(node))} of {n} events at {node.tmp_path.name}"
            time.sleep(0.2)

    ingest(0, 200)
    wait_for(station, 200)  # acknowledged on the spool; in the store a moment later
    first_event = events_at(station)[0]["id"]
    content = os.urandom(50_000)
    request = urllib.request.Request(
        f"http://127.0.0.1:{station.http}/api/v1/admin/events/{first_event}/files?name=trace.bin",
        data=content, headers={"Authorization": f"Bearer {station_key}"})
    with urllib.request.urlopen(request, timeout=30):
        pass
    wait_for(regional, 200)
    assert events_at(central) == []

    assert exports_cli("add", "central", f"target_url=https://localhost:{central.https}", f"api_key={central_key}",
                       f"ca={central.cert}", "interval=200ms", "max_backoff=1s") == "central: starting\n"
    wait_for(central, 200)
    assert exports_cli("pause", "central") == "central: paused\n"
    ingest(200, 100)
    wait_for(regional, 300)
    time.sleep(1)  # a paused target sends nothing
    assert len(events_at(central)) == 200
    assert regional.stop() == 0  # the paused target is stored: it comes back paused
    regional.start()
    assert "central (api, paused)" in exports_cli("list")
    assert exports_cli("resume", "central") == "central: starting\n"
    wait_for(central, 300)

    events = events_at(central)
    assert len(events) == len({e["id"] for e in events}) == 300
    assert sorted(e["data"]["n"] for e in events) == list(range(300))
    assert {e["origin"] for e in events} == {status_of(station)["node_id"]}
    [with_file] = [e for e in events if e["id"] == first_event]
    with urllib.request.urlopen(f"http://127.0.0.1:{central.http}/api/v1/files/{with_file['files'][0]}"
                                "/content", timeout=30) as response:
        assert hashlib.sha256(response.read()).digest() == hashlib.sha256(content).digest()
    assert len(events_at(regional)) == 300  # and nothing came back down the chain

    # Regional's own events go up; central sends everything back down but them.
    admin_cli(regional.config, "add-station", "601")
    ingest(1000, 50, node=regional, station_id="601", key=regional_admin)
    wait_for(central, 350)
    assert exports_cli("add", "down", f"target_url=https://localhost:{regional.https}", f"api_key={regional_key}",
                       f"ca={regional.cert}", "interval=200ms", "max_backoff=1s", node=central,
                       key=central_admin) == "down: starting\n"
    deadline = time.monotonic() + 60
    while (down := status_of(central)["exports"]["down"])["events"]["skipped_origin"] < 50:
        assert time.monotonic() < deadline, down
        time.sleep(0.2)
    assert down["events"] == {"sent": 0, "duplicate": 300, "skipped_filter": 0, "skipped_origin": 50}, down
    up_counts = status_of(regional)["exports"]["central"]["events"]
    time.sleep(1)  # rounds of every target come and go: nothing new anywhere
    assert status_of(regional)["exports"]["central"]["events"] == up_counts
    assert status_of(central)["exports"]["down"]["events"] == down["events"]
    assert len(events_at(regional)) == len(events_at(central)) == 350
    with urllib.request.urlopen(f"http://127.0.0.1:{central.http}/metrics", timeout=30) as response:
        metrics = response.read().decode()
    assert 'stationd_export_events_total{result="skipped_origin",target="down"} 50.0' in metrics
    assert station.stop() == 0 and regional.stop() == 0 and central.stop() == 0


def test_a_node_exporting_to_itself_says_so_and_sends_once_the_target_is_corrected(tmp_path):
    """A target pointed at the node's own URL (verified TLS, a valid importer key): state error
    with what to do, nothing sent or passed over, the cursor unmoved; corrected with
    stationd-client, every event goes to the real upstream."""
    (tmp_path / "node").mkdir()
    (tmp_path / "central").mkdir()
    node, central = Node(tmp_path / "node"), Node(tmp_path / "central")
    own_key = admin_cli(node.config, "add-user", "self", "--role", "importer").strip().splitlines()[-1]
    admin_key = admin_cli(node.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    central_key = admin_cli(central.config, "add-user", "node", "--role", "importer").strip().splitlines()[-1]
    admin_cli(node.config, "add-station", "501")
    node.start()
    central.start()

    def client(*argv):
        out = subprocess.run([os.path.join(BIN, "stationd-client"), "--url", f"https://localhost:{node.https}",
                              "--ca", node.cert, "--api-key", admin_key, *argv],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    body = {"events": [{"type": "WTR", "time_ns": 1714564800 * 10**9 + i, "data": {"n": i}} for i in range(40)]}
    request = urllib.request.Request(f"http://127.0.0.1:{node.http}/api/v1/stations/501/events",
                                     data=json.dumps(body).encode(), headers={
                                         "Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["accepted"] == 40
    client("exports", "add", "up", f"target_url=https://localhost:{node.https}", f"api_key={own_key}",
           f"ca={node.cert}", "interval=200ms", "max_backoff=1s")
    deadline = time.monotonic() + 30
    while (state := status_of(node)["exports"]["up"])["state"] != "error":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    own_id = status_of(node)["node_id"]
    assert own_id in state["last_error"] and "new-node-id" in state["last_error"]
    assert state["cursor"] in (0, None) and state["events"] == {
        "sent": 0, "duplicate": 0, "skipped_filter": 0, "skipped_origin": 0}
    listed = client("exports")
    assert listed.startswith(f"up: error -> https://localhost:{node.https}, lag ") and own_id in listed
    assert "refusing to export" in node.log.read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/metrics", timeout=30) as response:
        assert 'stationd_export_state{state="error",target="up"} 1.0' in response.read().decode()
    time.sleep(1)  # rounds go on at the cap: still nothing moves
    assert status_of(node)["exports"]["up"]["cursor"] in (0, None)

    client("exports", "change", "up", f"target_url=https://localhost:{central.https}", f"api_key={central_key}",
           f"ca={central.cert}")
    deadline = time.monotonic() + 30
    while len(arrived := json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{central.http}/api/v1/events?limit=100", timeout=30).read())["events"]) < 40:
        assert time.monotonic() < deadline, status_of(node)["exports"]["up"]
        time.sleep(0.1)
    assert {e["origin"] for e in arrived} == {own_id} and len({e["id"] for e in arrived}) == 40
    assert node.stop() == 0 and central.stop() == 0


def test_stationd_client_sync_sends_a_directory_once_over_https(tmp_path):
    node = Node(tmp_path)
    admin_cli(node.config, "add-station", "501", "--password", "s3cret")
    key = admin_cli(node.config, "add-user", "box501", "--role", "station", "--station", "501").splitlines()[-1]
    node.start()
    box = tmp_path / "box"
    box.mkdir()

    def event(n):
        return {"type": "WTR", "time": f"2024-05-01T22:00:{n:02d}.123456789Z", "data": {"n": n}}

    for i in range(3):
        (box / f"{i}.json").write_text(json.dumps([event(4 * i + j) for j in range(4)]))

    def client(*argv):
        return subprocess.run([os.path.join(BIN, "stationd-client"), "--url", f"https://localhost:{node.https}",
                               "--ca", node.cert, f"--api-key={key}", *argv],
                              capture_output=True, text=True, timeout=60, check=False)

    try:
        out = client("sync", str(box), "--station", "501")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == ("sent 3 file(s) (12 events: 12 accepted, 0 duplicates, "
                                               "0 quarantined); skipped 0 already sent; failed 0")
        (box / "3.json").write_text(json.dumps(event(30)))
        out = client("sync", str(box), "--station", "501", "--json")
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [line.get("result") for line in lines[:4]] == ["skipped", "skipped", "skipped", "sent"]
        assert (lines[-1]["summary"]["sent"], lines[-1]["summary"]["skipped"]) == (1, 3)

        deadline = time.monotonic() + 30
        while True:  # the writer stores acknowledged batches within moments
            out = client("query", "--station", "501", "--order", "asc", "--limit", "0", "--json")
            assert out.returncode == 0, out.stderr
            events = [json.loads(line) for line in out.stdout.splitlines()]
            if len(events) >= 13 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [e["data"]["n"] for e in events] == [*range(12), 30]
        assert events[0]["time"] == "2024-05-01T22:00:00.123456789Z"
    finally:
        assert node.stop() == 0


def test_the_running_node_describes_its_routes_and_answers_each_of_them(node_factory):
    from openapi_spec_validator import validate

    node = node_factory()  # (a request_path: tests/test_openapi.py)
    context = ssl.create_default_context(cafile=node.cert)
    base = f"https://127.0.0.1:{node.https}"

    def get(path):
        try:
            with urllib.request.urlopen(base + path, context=context, timeout=10) as response:
                return response.status, response.headers.get("content-type"), response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("content-type"), e.read()

    status, content_type, body = get("/api/openapi.json")
    assert (status, content_type) == (200, "application/json")
    spec = json.loads(body)
    validate(spec)
    assert len([m for methods in spec["paths"].values() for m in methods]) == 47
    for path, methods in spec["paths"].items():
        if "get" in methods and "{" not in path:  # each one the node really answers
            status, content_type, _ = get(path)
            assert status in (200, 401, 403, 503) or str(status) in methods["get"]["responses"], (path, status)
            assert status != 405
    status, content_type, page = get("/api/docs")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert b"<code>/api/v1/events</code>" in page
