"""Export targets at run time: the admin API adds, changes, pauses and removes them,
the changes outlive a restart, and config-file targets stay read-only."""

import datetime
import json

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from stationd import cli
from stationd.client import Client, ClientError
from stationd.store import exports, users

from conftest import call, make_node, serve

ADMIN_KEY = {}  # database -> key
# Closed for the next 11 hours (the node's zone is UTC): no round tries to reach the upstream.
_HOUR = (datetime.datetime.now(datetime.UTC).hour + 12) % 24
WINDOW = f"{_HOUR:02d}-{(_HOUR + 1) % 24:02d}"


def opens_at():
    """When WINDOW next opens, as status shows it."""
    now = datetime.datetime.now(datetime.UTC)
    opens = now.replace(hour=_HOUR, minute=0, second=0, microsecond=0)
    return (opens if opens > now else opens + datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")


async def first_round(node, name):
    """Until the target's exporter has looked at its window (its first round, a reactor turn away)."""
    while node.exports.exporters[name].state == "starting":
        await task.deferLater(reactor, 0.001, lambda: None)


CONFIG = f"[node]\nname = station-7\n[export:central]\ntarget_url = http://127.0.0.1:9\nwindow = {WINDOW}\n"


async def start(tmp_path, database_url):
    node = serve(make_node(tmp_path, database_url, CONFIG))
    node.pump = task.LoopingCall(node.stub.flush)
    node.pump.start(0.001)
    return node


async def stop(node):
    node.pump.stop()
    await node.service.stopService()


async def admin(node, method, path, body=None, key=None):
    headers = {"Authorization": f"Bearer {key or ADMIN_KEY[node.store.url.database]}"}
    response, answer = await call(node.stub, method, f"http://n/api/v1/admin/exports{path}", headers=headers,
                                  data=None if body is None else json.dumps(body).encode())
    return response.code, json.loads(answer)


@pytest_twisted.ensureDeferred
async def test_targets_are_added_changed_paused_and_removed_and_outlive_a_restart(tmp_path, database_url):
    node = await start(tmp_path, database_url)
    ADMIN_KEY[node.store.url.database] = node.store.call(users.add_user, "root", "admin")[1]
    reader_key = node.store.call(users.add_user, "reader", "reader")[1]
    try:
        code, answer = await admin(node, "POST", "", {"name": "regional", "target_url": "http://127.0.0.1:9",
                                                      "api_key": "secret", "stations": ["501", "502"],
                                                      "batch_size": 1000, "window": WINDOW})
        assert code == 201, answer
        assert answer["target"] == {"name": "regional", "source": "api", "paused": False, "api_key_set": True,
                                    "settings": {"target_url": "http://127.0.0.1:9", "stations": "501 502",
                                                 "batch_size": "1000", "window": WINDOW},
                                    "status": answer["target"]["status"]}
        running = node.exports.exporters["regional"]
        assert running.running and running.target["batch_size"] == 1000 and running.target["api_key"] == "secret"

        assert (await admin(node, "POST", "", {"name": "regional", "target_url": "http://x"}))[0] == 409
        code, answer = await admin(node, "PATCH", "/regional", {"batch_size": 20000, "interval": "soon",
                                                              "batch_bytes": "64MiB"})
        assert code == 400 and set(answer["error"]["details"]) == {"batch_size", "interval", "batch_bytes"}
        assert node.exports.exporters["regional"] is running  # a rejected change changes nothing
        code, answer = await admin(node, "PATCH", "/central", {"paused": True})
        assert (code, answer["error"]["code"]) == (409, "read_only")
        assert (await admin(node, "PATCH", "/nowhere", {"paused": True}))[0] == 404
        assert (await admin(node, "GET", "", key=reader_key))[0] == 403

        code, answer = await admin(node, "PATCH", "/regional", {"paused": True, "stations": None})
        assert code == 200 and answer["target"]["paused"] and answer["target"]["status"]["state"] == "paused"
        assert "stations" not in answer["target"]["settings"]
        assert not running.running and "regional" not in node.exports.exporters
        assert node.service.status()["exports"]["regional"]["state"] == "paused"
    finally:
        await stop(node)

    node = await start(tmp_path, database_url)
    try:
        _, answer = await admin(node, "GET", "")
        assert [(t["name"], t["source"], t["paused"]) for t in answer["targets"]] == [
            ("central", "config", False), ("regional", "api", True)]
        code, answer = await admin(node, "PATCH", "/regional", {"paused": False})
        assert code == 200 and node.exports.exporters["regional"].running
        assert node.exports.exporters["regional"].target["stations"] == []
        code, answer = await admin(node, "DELETE", "/regional")
        assert (code, answer) == (200, {"removed": "regional"})
        assert list(node.exports.targets) == ["central"]
    finally:
        await stop(node)

    node = await start(tmp_path, database_url)
    try:
        assert list(node.service.status()["exports"]) == ["central"]
    finally:
        await stop(node)


def test_a_changed_target_keeps_its_cursor_a_new_one_starts_from_the_beginning(tmp_path, database_url):
    node = make_node(tmp_path, database_url)
    store = node.store
    store.call(exports.set_cursor, "regional", 42, 1)  # left by an earlier target of that name
    store.call(exports.put_target, "regional", {"target_url": "http://a"}, False, 2)
    assert store.call(exports.get_cursor, "regional") == 0
    store.call(exports.set_cursor, "regional", 42, 3)
    store.call(exports.put_target, "regional", {"target_url": "http://b"}, True, 4)
    assert store.call(exports.get_cursor, "regional") == 42
    assert store.call(exports.list_targets) == {"regional": ({"target_url": "http://b"}, True)}
    store.call(exports.remove_target, "regional")
    assert store.call(exports.get_cursor, "regional") == 0 and store.call(exports.list_targets) == {}
    store.close()


@pytest_twisted.ensureDeferred
async def test_stationd_client_manages_targets(tmp_path, database_url, capsys):
    node = await start(tmp_path, database_url)
    key = node.store.call(users.add_user, "root", "admin")[1]
    client = Client("http://n", api_key=key, http_client=node.stub, reactor=reactor)

    async def run(*argv):
        await cli.exports(client, cli.parser().parse_args(["--url", "http://n", "exports", *argv]))
        return capsys.readouterr().out

    try:
        # Its first round has yet to run: the target says so, not "ok".
        assert await run("add", "regional", "target_url=http://127.0.0.1:9", "stations=501 502",
                         f"window={WINDOW}") == "regional: starting\n"
        assert node.exports.exporters["regional"].target["stations"] == ["501", "502"]
        assert await run("pause", "regional") == "regional: paused\n"
        await first_round(node, "central")
        assert await run() == (f"central: waiting_window -> http://127.0.0.1:9, lag 0.0 s, opens {opens_at()}\n"
                               "regional: paused -> http://127.0.0.1:9\n")
        assert await run("resume", "regional") == "regional: starting\n"
        await run("change", "regional", "stations=", "batch_size=50")
        await first_round(node, "regional")
        assert await run("list") == (f"central (config): waiting_window; target_url=http://127.0.0.1:9 "
                                     f"window={WINDOW}\n"
                                     f"regional (api): waiting_window; target_url=http://127.0.0.1:9 "
                                     f"window={WINDOW} batch_size=50\n")
        with pytest.raises(ClientError, match="configuration file"):
            await run("change", "central", "batch_size=50")
        with pytest.raises(SystemExit):
            await run("change", "regional", "batch_size")
        assert "expected KEY=VALUE" in capsys.readouterr().err
        assert await run("remove", "regional") == "regional: removed\n"
        assert await client.export_targets() == [dict((await client.export_targets())[0], name="central")]
    finally:
        await client.close()
        await stop(node)


@pytest_twisted.ensureDeferred
async def test_targets_another_process_changes_are_taken_up(tmp_path, database_url):
    """Workers and hosts sharing a store: what one's admin API does, the others follow at their next sync."""
    import dataclasses

    from stationd.exporter import ExportTargets

    node = await start(tmp_path, database_url)
    other = ExportTargets(dataclasses.replace(node.exports.local, holder="other-process"), {}, task.Clock())
    try:
        await node.exports.add("regional", {"target_url": "http://127.0.0.1:9", "window": WINDOW})
        await other.sync()
        assert set(other.targets) == {"regional"} and set(other.exporters) == {"regional"}
        await node.exports.change("regional", {"batch_size": "10"}, paused=True)
        await other.sync()
        target, source, paused = other.targets["regional"]
        assert (target["batch_size"], source, paused) == (10, "api", True) and "regional" not in other.exporters
        await node.exports.remove("regional")
        await other.sync()
        assert other.targets == {} and other.exporters == {}
    finally:
        await stop(node)
