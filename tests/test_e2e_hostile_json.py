"""Hostile JSON values against the real daemon (issue 20, item 5): `[` x 5000 is a 400 on every JSON
route of the node's own /api/openapi.json (a RecursionError 500 before), 1e400 in event data a 422
(stored as null before), and the node answers on."""

import json
import urllib.error
import urllib.request

import pytest

from test_e2e import admin_cli, node_factory, no_node_left_running  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def send(node, method, path, body, key):
    request = urllib.request.Request(f"http://127.0.0.1:{node.http}{path}", data=body, method=method,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_deep_json_is_400_and_1e400_is_422_on_the_real_daemon(node_factory):  # noqa: F811
    node = node_factory()
    admin_cli(node.config, "add-station", "501")
    key = admin_cli(node.config, "add-user", "root", "--role", "admin").strip().splitlines()[-1]
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/api/openapi.json", timeout=30) as response:
        spec = json.loads(response.read())
    routes = [(method, path, operation) for path, methods in spec["paths"].items()
              for method, operation in methods.items()
              if "application/json" in operation.get("requestBody", {}).get("content", {})]
    assert {"/api/v1/stations/{station_id}/events", "/api/v1/import", "/fplane"} <= {p for _, p, _ in routes}
    for method, path, operation in routes:
        filled = (path.replace("{station_id}", "501").replace("{name}", "x")
                  .replace("{event_id}", "00000000-0000-4000-8000-000000000001"))
        status, answer = send(node, method.upper(), filled, b"[" * 5000, key)
        assert (status, answer["error"]["code"]) == (400, "too_deep"), (method, path, answer)
        assert {"400", "422"} <= set(operation["responses"]), (method, path)
    status, answer = send(node, "POST", "/api/v1/stations/501/events",
                          b'{"events": [{"type": "WTR", "time": 1714564800, "data": {"t": 1e400}}]}', key)
    assert (status, answer["error"]["code"]) == (422, "number_out_of_range"), answer
    status, answer = send(node, "POST", "/api/v1/stations/501/events",
                          b'{"events": [{"type": "WTR", "time": 1714564801, "data": {"t": 1.5e308}}]}', key)
    assert status == 200, answer
    status, answer = send(node, "GET", "/api/v1/events?limit=10", None, key)
    assert [e["data"] for e in answer["events"]] == [{"t": 1.5e308}]  # the refused event is not there as null
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/heartbeat", timeout=10) as response:
        assert response.read() == b"OK"
    assert "RecursionError" not in node.log.read_text()
