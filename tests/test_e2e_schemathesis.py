"""API fuzzing over the node's own spec (issue 20, item 7): schemathesis against a real `twistd -n stationd`.

The node's /api/openapi.json is loaded with schemathesis from the running node, and every operation in it is
called with cases generated from the spec (positive: what it allows; negative: what it refuses), once with a key
of each role.  Every answer must be no 5xx, a documented status code, the documented content type and a body
that conforms to the documented schema (schemathesis's own checks), and a key whose role the operation does not
admit gets no 2xx.  A second test calls every operation whose spec has security with no key, with a wrong key and
with a key of each role too low: never a 2xx.

Bounded for CI: STATIOND_API_FUZZ_EXAMPLES cases per operation, role and generation mode (default 6),
derandomized, so a run is the same run each time.  The long form: scripts/fuzz-api (or
STATIOND_API_FUZZ_EXAMPLES=200 pytest tests/test_e2e_schemathesis.py).
"""

import collections
import os
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from test_e2e import Node, admin_cli

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("STATIOND_API_FUZZ_EXAMPLES", "6"))
ROLES = ("admin", "editor", "reader", "importer", "station")
STATION = "501"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The node under fuzzing: reads need a key (so every route but the open ones is protected and the key check
# covers them too), and no limit that would answer a flood of generated requests with 429 or a closed
# connection instead of what the route itself answers.
CONFIG = """
[web]
public_read = false
auth_failures = 0
max_connections_per_client = 0
"""
# Operations not fuzzed, by operation id, and why.  (Kept empty unless a route would wreck the run: the users
# and stations the fuzzer could remove or whose keys it could rotate have names it does not generate.)
EXCLUDED: dict[str, str] = {}
# The second pass fills path parameters with records that exist (the station, an event, its file, a stored
# config, the system sensor, an export target), so routes are fuzzed past their 404.  Not these, in that pass:
# they would remove or re-key what the run itself uses.
NOT_ON_KNOWN_RECORDS = {
    "AdminRoutes.remove_user": "the users are the run's own keys (user names are not filled in anyway)",
    "AdminRoutes.rotate_key": "the same: the old key stops working at once",
    "AdminRoutes.remove_station": "station 501 is the station key's station and the known event's",
}


class Live:
    def __init__(self, node, keys):
        self.node, self.keys = node, keys
        self.base_url = f"http://127.0.0.1:{node.http}"
        self.session = requests.Session()
        self.known = {}  # path parameter -> a record that exists (name: by route group, see known_records)
        self.statuses = collections.Counter()  # (status code) over the run: what the fuzzing reached

    def request(self, method, path, headers=(), **kwargs):
        headers = {"Authorization": f"Bearer {self.keys['admin']}", **dict(headers)}
        response = self.session.request(method, self.base_url + path, timeout=30, headers=headers, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response

    def known_records(self, operation):
        """Path parameters of ``operation`` filled with records that exist; None when it has none to fill."""
        if operation.definition.raw.get("operationId") in NOT_ON_KNOWN_RECORDS:
            return None
        path = operation.path
        names = {"/api/v1/configs/": "dome", "/api/v1/sensors/": "system", "/api/sensors/": "system",
                 "/api/v1/admin/exports/": "mirror"}
        filled = {}
        for parameter in re.findall(r"\{(\w+)\}", path):
            if parameter == "name":
                value = next((v for prefix, v in names.items() if path.startswith(prefix)), None)
            else:
                value = self.known.get(parameter)
            if value is not None:
                filled[parameter] = value
        return filled or None

    def operations(self):
        found = []
        for result in self.schema.get_all_operations():
            operation = result.ok()
            if operation.definition.raw.get("operationId") not in EXCLUDED:
                found.append(operation)
        return found


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz")
    node = Node(path, CONFIG).start()
    try:
        admin_cli(node.config, "add-station", STATION, "--password", "fuzz-password")
        keys = {}
        for role in ROLES:
            extra = ("--station", STATION) if role == "station" else ()
            out = admin_cli(node.config, "add-user", f"fuzz-{role}-q7", "--role", role, *extra)
            keys[role] = out.strip().splitlines()[-1]
        live = Live(node, keys)
        live.schema = schemathesis.openapi.from_url(f"{live.base_url}/api/openapi.json", timeout=30)
        live.request("POST", f"/api/v1/stations/{STATION}/events",
                     json={"events": [{"type": "WTR", "time": 1714564800, "data": {"t": 21.5}}]})
        event = live.request("GET", "/api/v1/events").json()["events"][0]["id"]
        file = live.request("POST", f"/api/v1/admin/events/{event}/files?name=a.png&mime_type=image/png",
                            data=b"\x89PNG" * 100,
                            headers={"Content-Type": "application/octet-stream"}).json()["file"]["id"]
        live.request("POST", "/api/v1/configs/dome", json={"config": {"slit": 1}, "commit": True})
        live.request("POST", "/api/v1/admin/exports",
                     json={"name": "mirror", "paused": True, "target_url": "http://127.0.0.1:9/"})
        live.known = {"station_id": STATION, "event_id": event, "file_id": file, "datestr": "latest"}
        yield live
        print(f"\nanswers over the run: {dict(sorted(live.statuses.items()))}")
    finally:
        node.stop()
        assert "Traceback" not in node.log.read_text(), node.log.read_text()[-5000:]


def roles_admitted(operation):
    """The roles the spec says may call ``operation`` (None: any valid key); its description says so."""
    description = operation.definition.raw.get("description", "")
    if "Any valid key" in description:
        return None
    match = re.search(r"A key of role ((?:`\w+`(?:, )?)+)\.", description)
    assert match, (operation.label, description)
    return set(re.findall(r"`(\w+)`", match.group(1)))


def run_cases(operation, mode, examples, body, path_parameters=None):
    """``body(case)`` for ``examples`` cases of ``operation`` in ``mode``, derandomized; a failure's text, or None."""
    @settings(max_examples=examples, derandomize=True, deadline=None, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case):
        body(case)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:  # nothing in the operation to make invalid (no parameters, no body)
            return None
        raise
    except (Exception, BaseExceptionGroup) as e:  # (a failed check or assertion, with the case that made it)
        on = f" on {path_parameters}" if path_parameters else ""
        return f"{operation.label} [{mode.value}{on}]: {type(e).__name__}: {e}"
    return None


def call(live, case, key):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if not key and case.headers:
        case.headers.pop("Authorization", None)
    response = case.call(base_url=live.base_url, session=live.session, headers=headers, timeout=30)
    live.statuses[response.status_code] += 1
    return response


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_answers_by_the_spec(live, role):
    failures = []
    for operation in live.operations():
        admitted = roles_admitted(operation) if operation.definition.raw.get("security") else None

        def check(case):
            response = call(live, case, live.keys[role])
            curl = case.as_curl_command(base_url=live.base_url)
            case.validate_response(response, checks=CHECKS)
            if admitted is not None and role not in admitted and role != "admin":
                assert not 200 <= response.status_code < 300, f"{role} got {response.status_code}: {curl}"

        passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        known = live.known_records(operation)
        if known:
            passes += [(GenerationMode.POSITIVE, known), (GenerationMode.NEGATIVE, known)]
        for mode, path_parameters in passes:
            failure = run_cases(operation, mode, EXAMPLES, check, path_parameters)
            if failure:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)


def test_no_right_key_no_2xx(live):
    failures = []
    checked = 0
    for operation in live.operations():
        if not operation.definition.raw.get("security"):
            continue
        checked += 1
        admitted = roles_admitted(operation)
        wrong = ["", "not-a-key", live.keys["admin"] + "x"]
        wrong += [live.keys[role] for role in ROLES if admitted is not None and role != "admin"
                  and role not in admitted]

        def check(case):
            for key in wrong:
                response = call(live, case, key)
                assert not 200 <= response.status_code < 300, (
                    f"{response.status_code} with key {key[:6]!r}...: {case.as_curl_command(base_url=live.base_url)}")
                assert response.status_code in (401, 403), (response.status_code, response.text[:500])
                case.validate_response(response, checks=CHECKS)

        failure = run_cases(operation, GenerationMode.POSITIVE, max(2, EXAMPLES // 2), check)
        if failure:
            failures.append(failure)
    assert checked > 30
    assert not failures, "\n\n".join(failures)
