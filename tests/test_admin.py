"""stationd-admin, run in-process (the same main() the console script calls)."""

import json

import pytest
from cryptography import x509

from stationd import admin_cli, config
from stationd.store import Store, users

from conftest import write_config


@pytest.fixture
def cfg(tmp_path, database_url):
    return str(write_config(tmp_path, f"[database]\nurl = {database_url}\n"))


def run(capsys, *argv):
    code = admin_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_echo_config_prints_the_embedded_defaults(capsys):
    code, out, _ = run(capsys, "echo-config")
    assert code == 0 and out == config.default_text()


def test_check_config(capsys, tmp_path):
    good = write_config(tmp_path, "[node]\nname = x\n", name="good.ini")
    assert run(capsys, "check-config", "--config", str(good)) == (0, f"{good}: OK\n", "")
    bad = write_config(tmp_path, "[web]\nmax_body_size = huge\n", name="bad.ini")
    code, _, err = run(capsys, "check-config", "--config", str(bad))
    assert code == 2
    assert err.startswith(f"{bad}:web:max_body_size: expected a size")
    assert "Traceback" not in err


def test_init_creates_data_dir_and_schema(capsys, cfg, tmp_path):
    code, out, _ = run(capsys, "init", "--config", cfg)
    assert code == 0 and "(created)" in out and (tmp_path / "var").is_dir()
    code, out, _ = run(capsys, "--config", cfg, "init")
    assert code == 0 and "(up to date)" in out


def test_status_shows_the_node_id_and_new_node_id_replaces_it(capsys, cfg, database_url):
    """An imaged SD card's copy of a store gets an id of its own, with nothing else changed."""
    import socket
    import uuid

    from stationd.store import identity

    code, out, _ = run(capsys, "init", "--config", cfg)
    store = Store(database_url)
    node_id = store.call(identity.get_node_id)
    assert code == 0 and f"node id {node_id}" in out and uuid.UUID(node_id).version == 4
    code, out, _ = run(capsys, "status", "--config", cfg)
    lines = dict(line.split(None, 1) if not line.startswith("node id") else ("node id", line[7:].strip())
                 for line in out.splitlines())
    assert code == 0 and lines["node id"] == node_id and lines["name"] == socket.gethostname()
    code, out, _ = run(capsys, "new-node-id", "--config", cfg)
    fresh = store.call(identity.get_node_id)
    assert code == 0 and fresh != node_id and uuid.UUID(fresh).version == 4
    assert out.splitlines()[0] == f"node id {node_id} -> {fresh}" and "restart" in out
    store.close()


def test_user_commands(capsys, cfg, database_url):
    code, out, _ = run(capsys, "add-user", "ada", "--role", "editor", "--email", "ada@example.org",
                       "--config", cfg, "Ada", "Lovelace")
    assert code == 0
    key = out.splitlines()[-1]
    store = Store(database_url)
    user = store.call(users.authenticate, key)
    assert (user["name"], user["first_name"], user["last_name"]) == ("ada", "Ada", "Lovelace")

    code, out, _ = run(capsys, "rotate-key", "ada", "--config", cfg)
    new_key = out.splitlines()[-1]
    assert store.call(users.authenticate, key) is None
    assert store.call(users.authenticate, new_key)["name"] == "ada"

    code, out, _ = run(capsys, "list-users", "--config", cfg)
    assert "ada" in out and "editor" in out and new_key not in out

    assert run(capsys, "add-user", "ada", "--role", "reader", "--config", cfg)[2] == \
        "stationd-admin: user 'ada' already exists\n"
    assert run(capsys, "remove-user", "ada", "--config", cfg)[0] == 0
    code, _, err = run(capsys, "remove-user", "ada", "--config", cfg)
    assert (code, err) == (1, "stationd-admin: no user 'ada'\n")
    store.close()


def test_keys_never_begin_with_a_dash(monkeypatch):
    drawn = iter(["-first", "second"])
    monkeypatch.setattr(users.secrets, "token_urlsafe", lambda n: next(drawn))
    assert users.new_key() == "second"


def test_make_cert_ca_and_signed(capsys, tmp_path):
    assert run(capsys, "make-cert", "--ca", "--host", "Field CA", "--out", str(tmp_path / "ca"))[0] == 0
    code, out, _ = run(capsys, "make-cert", "--host", "node.example", "--host", "10.0.0.5",
                       "--issuer", str(tmp_path / "ca"), "--out", str(tmp_path / "node"))
    assert code == 0 and "fingerprint" in out
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "cert.pem").read_bytes())
    node = x509.load_pem_x509_certificate((tmp_path / "node" / "cert.pem").read_bytes())
    node.verify_directly_issued_by(ca)
    code, _, err = run(capsys, "make-cert", "--host", "x", "--out", str(tmp_path / "node"))
    assert code == 1 and "--force" in err


def test_station_commands(capsys, cfg, database_url, tmp_path):
    from stationd.store import stations

    assert run(capsys, "add-station", "501", "--password", "pw", "--cluster", "ams", "--config", cfg)[0] == 0
    code, _, err = run(capsys, "add-station", "501", "--config", cfg)
    assert (code, err) == (1, "stationd-admin: station 501 already exists\n")
    csv = tmp_path / "list.csv"
    csv.write_text("501,amsterdam,newpw\n502,utrecht,pw2\n\n# a comment\n")
    code, out, _ = run(capsys, "import-stations", str(csv), "--config", cfg)
    assert (code, out) == (0, "2 stations read: 1 added, 1 updated\n")
    assert run(capsys, "import-stations", str(csv), "--config", cfg)[1] == "2 stations read: 0 added, 0 updated\n"
    code, out, _ = run(capsys, "list-stations", "--config", cfg)
    assert "501          amsterdam" in out and "502          utrecht" in out
    store = Store(database_url)
    stored = store.call(stations.get_station, "501")["password_hash"]
    assert "newpw" not in stored and stations.verify_password(stored, "newpw")
    assert not stations.verify_password(stored, "pw")
    store.close()
    csv.write_text("503,x\n")
    code, _, err = run(capsys, "import-stations", str(csv), "--config", cfg)
    assert code == 1 and f"{csv}:1: expected number,cluster,password" in err


def test_station_users_need_a_station(capsys, cfg):
    code, _, err = run(capsys, "add-user", "st", "--role", "station", "--config", cfg)
    assert code == 1 and "--station" in err
    assert run(capsys, "add-user", "st", "--role", "station", "--station", "501", "--config", cfg)[0] == 0


def test_status_and_file_commands(capsys, cfg, database_url, tmp_path):
    import hashlib
    import uuid

    from stationd.store import query, stations
    from stationd.store.events import store_batches

    assert run(capsys, "add-station", "501", "--config", cfg)[0] == 0
    code, out, err = run(capsys, "add-status", "501", "--valid-from", "2024-01-01T00:00:00Z", "--instrument",
                         "scintillators v2", "--lat", "52.35", "--lon", "4.95", "--alt", "56",
                         "--orientation", '{"azimuth": 0}', "--config", cfg)
    assert (code, out) == (0, "station 501: status from 2024-01-01T00:00:00.000000000Z added; 1 in its history\n"), err
    assert run(capsys, "add-status", "501", "--lat", "91", "--config", cfg)[:3:2] == (
        1, "stationd-admin: location.lat must be between -90 and 90\n")
    assert run(capsys, "add-status", "501", "--valid-from", "May", "--config", cfg)[0] == 1
    assert run(capsys, "add-status", "999", "--config", cfg)[2] == "stationd-admin: no station 999\n"

    store = Store(database_url)
    assert store.call(stations.status_history, "501")[0]["location"] == {"lat": 52.35, "lon": 4.95, "alt": 56.0}
    event_id = str(uuid.uuid4())
    store.call(store_batches, [{"station": "501", "received_ns": 1, "events": [
        {"id": event_id, "type": "meteor", "time_ns": 5, "data": {}, "digest": "d", "quarantine": None}]}], "n")
    image = tmp_path / "sky.png"
    image.write_bytes(b"\x89PNG" * 1000)
    code, out, err = run(capsys, "attach-file", event_id, str(image), "--semantic-type", "meteor_image",
                         "--meta", '{"exposure": 2}', "--config", cfg)
    assert code == 0 and f"attached to event {event_id}" in out, err
    (record,) = store.call(query.get_event, event_id)["files"]
    assert (record["name"], record["mime_type"], record["size"], record["meta"]) == (
        "sky.png", "image/png", 4000, {"exposure": 2})
    assert record["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    stored = tmp_path / "var" / "files" / record["sha256"][:2] / record["sha256"][2:4] / record["sha256"]
    assert stored.read_bytes() == image.read_bytes()
    assert run(capsys, "attach-file", str(uuid.uuid4()), str(image), "--config", cfg)[0] == 1
    assert run(capsys, "attach-file", event_id, str(image), "--meta", "[1]", "--config", cfg)[2] == (
        "stationd-admin: --meta must be a JSON object\n")
    store.close()


def test_import_config(capsys, cfg, database_url, tmp_path):
    from stationd.store import configs

    text = tmp_path / "fplane.txt"
    text.write_text("##IFUSLOT X_FP Y_FP SPECID SPECSLOT IFUID IFUROT PLATESC\n"
                    "013 -350.0 250.0 020 065 031 0.0 1.00\n#014 -250.0 250.0 000 000 000 0.0 1.00\n")
    code, out, err = run(capsys, "import-config", "fplane", str(text), "--valid-from", "2024-05-01T00:00:00Z",
                         "--author", "alice", "--config", cfg)
    assert (code, out) == (0, "fplane version 1 valid from 2024-05-01T00:00:00.000000000Z stored\n"), err
    store = Store(database_url)
    version = store.call(configs.version_at, "fplane", 1714521600 * 10**9)
    assert version["author"] == "alice"
    assert [(u["ifuslot"], u["ifuid"], u["specid"]) for u in version["content"]["units"]] == [
        ("013", "031", 20), ("014", "000", 0)]
    store.close()
    # The JSON form round-trips: a version as the API gives it, or only its content.
    for valid_from, exported in (("2024-05-02T00:00:00Z", version), ("2024-05-03T00:00:00Z", version["content"])):
        structured = tmp_path / "fplane.json"
        structured.write_text(json.dumps(exported))
        code, out, err = run(capsys, "import-config", "fplane", str(structured), "--valid-from", valid_from,
                             "--config", cfg)
        assert code == 0 and out.endswith(" stored\n"), err
        store = Store(database_url)
        assert store.call(configs.latest_version, "fplane")["content"] == version["content"]
        store.close()
    structured.write_text('{"units": [{"ifuslot": "013"}]}')
    code, _, err = run(capsys, "import-config", "fplane", str(structured), "--valid-from", "2024-05-04T00:00:00Z",
                       "--config", cfg)
    assert code == 1 and err.startswith(f"stationd-admin: {structured}: ")
    text.write_text("013 -350.0\n")
    code, _, err = run(capsys, "import-config", "fplane", str(text), "--valid-from", "2024-06-01T00:00:00Z",
                       "--config", cfg)
    assert code == 1 and "line 1: expected 8 columns" in err
    text.write_text("013 -350.0 250.0 020 065 031 0.0 1.00\n")
    code, _, err = run(capsys, "import-config", "fplane", str(text), "--valid-from",
                       "2024-05-01T00:00:00Z", "--config", cfg)
    assert (code, err) == (1, "stationd-admin: version 1 of fplane is already valid from "
                              "2024-05-01T00:00:00.000000000Z\n")
    settings = tmp_path / "camera.json"
    settings.write_text('{"gain": 2}')
    assert run(capsys, "import-config", "camera", str(settings), "--valid-from", "2024-05-01T00:00:00Z",
               "--config", cfg)[0] == 0
