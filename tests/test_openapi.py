"""The OpenAPI description: true to the routes a node mounts, valid, and readable at /api/docs."""

import json
import re

import pytest
import pytest_twisted
from openapi_spec_validator import validate
from treq.testing import StubTreq

from conftest import call, make_node

from stationd.web import make_resource, openapi
from stationd.web.docs import ApiDocs, render
from stationd.web.http import route


def registered_routes(site):
    """(METHOD, path) of every rule on the Klein app behind ``site``: what the node answers."""
    resource = site.resource
    resource = getattr(resource, "wrapped", resource)  # (CORS)
    return {(method, re.sub(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", rule.rule))
            for rule in resource.app._app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def described_routes(spec):
    return {(method.upper(), path) for path, methods in spec["paths"].items() for method in methods}


@pytest.fixture
def node(tmp_path, database_url):
    built = make_node(tmp_path, database_url)
    yield built
    built.store.close()


def test_the_spec_describes_exactly_the_routes_the_node_registered_and_is_valid(node):
    spec = node.routes["docs"].description()
    assert described_routes(spec) == registered_routes(node.site)
    assert len(described_routes(spec)) == 47
    validate(spec)  # openapi-spec-validator: OpenAPI 3.1


def test_the_meteorpi_routes_are_described_under_their_path(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[web]\ncomponents = all meteorpi\n[meteorpi]\npath = /meteor/api\n")
    try:
        spec = node.routes["docs"].description()
        assert described_routes(spec) == registered_routes(node.site)
        assert len(described_routes(spec)) == 47 + 14
        assert ("GET", "/meteor/api/obs/{search}") in described_routes(spec)
        assert spec["paths"]["/meteor/api/importv2"]["post"]["security"] == [{"basic": []}, {"bearer": []}]
        validate(spec)
    finally:
        node.store.close()


def test_only_mounted_components_under_the_request_path(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[web]\nrequest_path = /stationd/\ncomponents = core query docs\n")
    try:
        spec = node.routes["docs"].description()
        assert described_routes(spec) == registered_routes(node.site)
        assert "/stationd/api/v1/events" in spec["paths"] and "/stationd/heartbeat" in spec["paths"]
        assert not any("admin" in path or "upload" in path for path in spec["paths"])
        assert all(path.startswith("/stationd/") for path in spec["paths"])
        validate(spec)
    finally:
        node.store.close()


def test_a_route_added_without_a_description_is_refused():
    class Telescope:
        @route("GET", "/api/v1/telescope/<mount>")
        def pointing(self, request, mount):
            return b""

    with pytest.raises(openapi.UndescribedRoute, match=r"GET /api/v1/telescope/\{mount\} \(Telescope.pointing\)"):
        openapi.spec({"telescope": Telescope()}, "/", "0", "n", public_read=True)


def test_every_operation_says_who_may_call_it_from_the_handler_itself(tmp_path, database_url):
    node = make_node(tmp_path, database_url, "[web]\npublic_read = false\n")
    try:
        paths = node.routes["docs"].description()["paths"]
        keys = [{"bearer": []}, {"fps_api": []}]
        assert paths["/api/v1/events"]["get"]["security"] == keys  # a read, not public here
        assert "401" in paths["/api/v1/events"]["get"]["responses"]
        assert paths["/heartbeat"]["get"]["security"] == []
        assert paths["/upload"]["post"]["security"] == []  # (the station's password is in the form)
        assert "role `admin`" in paths["/api/v1/admin/users"]["get"]["description"]
        assert "`editor`" in paths["/fplane"]["post"]["description"]
        assert "`station`" in paths["/api/v1/stations/{station_id}/events"]["post"]["description"]
        path_parameters = paths["/api/v1/events/{event_id}"]["get"]["parameters"]
        assert path_parameters[0] == {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
    finally:
        node.store.close()
    (tmp_path / "public").mkdir()
    public = make_node(tmp_path / "public", database_url)
    try:
        assert public.routes["docs"].description()["paths"]["/api/v1/events"]["get"]["security"] == []
    finally:
        public.store.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # (several workers need it)
def test_workers_after_the_first_describe_the_sensor_routes_they_forward(tmp_path, database_url):
    from stationd.service import wire
    from stationd import config as configuration
    from conftest import write_config
    from twisted.internet import reactor

    path = write_config(tmp_path, f"[database]\nurl = {database_url}\n[node]\nworkers = 2\n")
    worker = wire(configuration.load(str(path)), reactor, worker=1)
    try:
        spec = worker.routes["docs"].description()
        assert described_routes(spec) == registered_routes(worker.site)
        assert spec["paths"]["/api/lcd"]["post"]["security"]  # (editor: read from SensorRoutes, not Forward)
    finally:
        worker.store.close()


@pytest_twisted.ensureDeferred
async def test_the_routes_serve_the_spec_and_a_self_contained_page(node):
    stub = StubTreq(make_resource({name: node.routes[name] for name in ("core", "docs")}, "/"))
    response, body = await call(stub, "GET", "http://node/api/openapi.json")
    assert response.code == 200 and response.headers.getRawHeaders("content-type") == ["application/json"]
    assert json.loads(body) == json.loads(json.dumps(node.routes["docs"].description()))
    response, body = await call(stub, "GET", "http://node/api/docs")
    page = body.decode()
    assert response.code == 200 and page.startswith("<!doctype html>")
    assert response.headers.getRawHeaders("content-security-policy") == [
        "default-src 'none'; style-src 'unsafe-inline'"]  # (the page can load nothing, from anywhere)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for path in node.routes["docs"].description()["paths"]:
        assert f"<code>{path}</code>" in page


def test_the_page_escapes_what_it_shows():
    spec = {"info": {"title": "<b>", "version": "1", "description": "`<script>`"}, "tags": [{"name": "core"}],
            "paths": {"/x": {"get": {"operationId": "a", "tags": ["core"], "summary": "<i>", "parameters": [],
                                     "responses": {"200": {"description": "<img>"}}}}}}
    page = render(spec)
    assert "<script>" not in page and "<img>" not in page and "<i>" not in page
    assert "<code>&lt;script&gt;</code>" in page


def test_api_docs_takes_the_groups_it_describes():
    docs = ApiDocs({}, [], "/", "n", True)
    groups = {"docs": docs}
    docs.groups, docs.components = groups, ["docs"]
    assert set(docs.description()["paths"]) == {"/api/openapi.json", "/api/docs"}


def answer_schema(spec, path, method, status):
    """The spec's body schema for ``status`` of an operation, with the components its $refs point into."""
    schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return {**schema, "components": spec["components"]}


@pytest_twisted.ensureDeferred
async def test_a_config_preview_and_a_stored_version_answer_as_the_spec_says(tmp_path, database_url):
    # Found by schemathesis (tests/test_e2e_schemathesis.py): the preview (200) was described as a stored
    # ConfigVersion (valid_from required, version an integer) and the stored version's 201 not at all.
    import jsonschema

    from conftest import serve
    from stationd.store import users

    node = serve(make_node(tmp_path, database_url))
    try:
        key = node.store.call(users.add_user, "tcs", "editor")[1]
        spec = node.routes["docs"].description()
        for body, status in (({"config": {"a": 1}}, 200), ({"config": {"a": 1}, "commit": True}, 201)):
            response, text = await call(node.stub, "POST", "http://n/api/v1/configs/dome", json=body,
                                        headers={"Authorization": f"Bearer {key}"})
            assert response.code == status, text
            jsonschema.validate(json.loads(text), answer_schema(spec, "/api/v1/configs/{name}", "post", str(status)))
    finally:
        await node.service.stopService()


@pytest_twisted.ensureDeferred
async def test_file_content_and_a_station_status_answer_as_the_spec_says(tmp_path, database_url):
    # Found by schemathesis: the content route's 304 (If-None-Match) and its 206 and 416 were not described
    # (a 304 was checked against the default, a JSON error), nor its content type (the record's, not only
    # application/octet-stream); a status entry's answer names the station by its id, not an object.
    import jsonschema

    from conftest import add_events, serve
    from stationd.store import stations, users

    node = serve(make_node(tmp_path, database_url))
    try:
        key = node.store.call(users.add_user, "root", "admin")[1]
        node.store.call(stations.add_station, "501")
        event = add_events(node, "501", [("WTR", 1714564800 * 10**9, {"t": 1})])[0]
        auth = {"Authorization": f"Bearer {key}"}
        spec = node.routes["docs"].description()
        responses = spec["paths"]["/api/v1/files/{file_id}/content"]["get"]["responses"]
        response, text = await call(node.stub, "POST", f"http://n/api/v1/admin/events/{event}/files"
                                    "?name=a.png&mime_type=image/png", data=b"\x89PNG" * 10, headers=auth)
        assert response.code == 201, text
        record = json.loads(text)["file"]
        url = f"http://n/api/v1/files/{record['id']}/content"
        for headers, status in (({}, 200), ({"Range": "bytes=0-3"}, 206), ({"Range": "bytes=900-"}, 416),
                                ({"If-None-Match": f'"{record["sha256"]}"'}, 304)):
            response, text = await call(node.stub, "GET", url, headers={**auth, **headers})
            assert response.code == status and str(status) in responses, (headers, response.code)
            documented = responses[str(status)]
            if status == 416:
                documented = spec["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
            if status in (200, 206):
                assert response.headers.getRawHeaders("content-type") == ["image/png"]
                assert list(documented["content"]) == ["*/*"]
            elif status == 304:
                assert "content" not in documented and text == b""
            else:
                jsonschema.validate(json.loads(text), {**documented["content"]["application/json"]["schema"],
                                                       "components": spec["components"]})
        response, text = await call(node.stub, "POST", "http://n/api/v1/admin/stations/501/status", json={},
                                    headers=auth)
        assert response.code == 201, text
        jsonschema.validate(json.loads(text),
                            answer_schema(spec, "/api/v1/admin/stations/{station_id}/status", "post", "201"))
    finally:
        await node.service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_user_whose_fields_are_not_strings_is_a_400(tmp_path, database_url):
    # Found by the long form of schemathesis: {"name": [[...]], ...} was a TypeError in users.add_user, a 500.
    from conftest import serve
    from stationd.store import users

    node = serve(make_node(tmp_path, database_url))
    try:
        key = node.store.call(users.add_user, "root", "admin")[1]
        for body in ({"name": [[1]], "role": "reader"}, {"name": "a", "role": ["reader"]},
                     {"name": "b", "role": "reader", "email": 8.7e190},
                     {"name": "c", "role": "station", "station": []}):
            response, text = await call(node.stub, "POST", "http://n/api/v1/admin/users", json=body,
                                        headers={"Authorization": f"Bearer {key}"})
            assert (response.code, json.loads(text)["error"]["code"]) == (400, "bad_user"), (body, text)
    finally:
        await node.service.stopService()
