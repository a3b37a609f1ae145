import socket

import pytest

from stationd import config as configuration
from stationd.config import ConfigError, load

from conftest import write_config


def errors_of(tmp_path, body):
    path = write_config(tmp_path, body)
    with pytest.raises(ConfigError) as raised:
        load(str(path))
    return str(path), raised.value.errors


def test_defaults_load_and_match_the_design(monkeypatch):
    monkeypatch.delenv("STATIOND_CONFIG", raising=False)
    config = load()
    assert config.path is None
    assert config["web"]["http"] == ["tcp:8080:interface=127.0.0.1"]
    assert config["web"]["https"] == ["tcp:8443:interface=127.0.0.1"]
    assert config["web"]["tls_min_version"] == "TLSv1.2"
    assert config["web"]["public_read"] is True
    # Every component but meteorpi, which is off until named ("all meteorpi").
    assert config["web"]["components"] == [c for c in configuration.COMPONENTS if c != "meteorpi"]
    assert config["meteorpi"]["path"] == "/api"
    assert config["database"]["url"] == f"sqlite:///{config['node']['data_dir']}/stationd.sqlite"


def test_every_default_key_is_documented_and_declared():
    lines = configuration.default_text().splitlines()
    seen = set()
    section = None
    for number, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith((" ", "#")) and "=" in line:
            key = line.split("=")[0].strip()
            seen.add((section, key))
            above = lines[number - 1]
            # a comment sits above each key, or above the pair it belongs to
            assert above.startswith("#") or "=" in above, f"{section}.{key} has no comment"
    declared = {(s, k) for s, keys in configuration.SCHEMA.items() for k in keys}
    assert {(s, k) for s, k in seen if not s.startswith("sensor:")} == declared
    assert {(s, k) for s, k in seen if s.startswith("sensor:")} <= {
        ("sensor:system", k) for k in configuration.SENSOR}


def test_user_file_overrides_only_what_it_names(tmp_path):
    config = load(str(write_config(tmp_path, "[node]\nname = north-1\n")))
    assert config["node"]["name"] == "north-1"
    assert config["node"]["timezone"].key == "UTC"
    assert config["web"]["max_body_size"] == 16 * 1024 * 1024


def test_environment_names_the_file(tmp_path):
    path = write_config(tmp_path, "[node]\nname = from-env\n")
    assert load(environ={"STATIOND_CONFIG": str(path)})["node"]["name"] == "from-env"
    assert load(environ={})["node"]["name"] == socket.gethostname()  # the default: the host name


def test_data_dir_is_substituted(tmp_path):
    config = load(str(write_config(tmp_path, "[log]\npath = {data_dir}/log/node.log\n")))
    assert config["log"]["path"] == f"{tmp_path}/var/log/node.log"


@pytest.mark.parametrize(
    "body, where, message",
    [
        ("[nodes]\nname = x\n", "nodes:", "unknown section"),
        ("[web]\nhtps = tcp:1\n", "web:htps", "unknown key"),
        ("[web]\nmax_body_size = lots\n", "web:max_body_size", "expected a size"),
        ("[web]\nmax_body_size = 2 TiB\n", "web:max_body_size", "expected a size"),
        ("[web]\npublic_read = perhaps\n", "web:public_read", "expected true or false"),
        ("[web]\ntls_min_version = TLSv1.1\n", "web:tls_min_version", "expected one of TLSv1.2, TLSv1.3"),
        ("[web]\ncomponents = core spaceship\n", "web:components", "unknown component 'spaceship'"),
        ("[web]\nrequest_path = api\n", "web:request_path", "must start with '/'"),
        ("[node]\ntimezone = Mars/Olympus\n", "node:timezone", "unknown timezone"),
        ("[log]\nlevel = loud\n", "log:level", "expected one of"),
        ("[log]\nrotate_keep = many\n", "log:rotate_keep", "expected an integer"),
        ("[web]\ntls_cert = /x/cert.pem\n", "web:tls_key", "must be set together"),
    ],
)
def test_each_error_names_file_section_and_key(tmp_path, body, where, message):
    path, errors = errors_of(tmp_path, body)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}:{where}")
    assert message in errors[0]


def test_all_errors_are_reported_at_once(tmp_path):
    _, errors = errors_of(tmp_path, "[web]\nfoo = 1\nmax_body_size = x\n")
    assert len(errors) == 2


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load(str(tmp_path / "missing.ini"))
    bad = tmp_path / "bad.ini"
    bad.write_text("no section header\n")
    with pytest.raises(ConfigError, match=f"^{bad}::: cannot parse"):
        load(str(bad))


@pytest.mark.parametrize("value, seconds", [("30", 30), ("500ms", 0.5), ("5m", 300), ("2h", 7200), ("1d", 86400)])
def test_durations(value, seconds):
    assert configuration.duration(value) == seconds


@pytest.mark.parametrize("value, size", [("1024", 1024), ("64KiB", 65536), ("16 MiB", 16 << 20), ("1GiB", 1 << 30)])
def test_sizes(value, size):
    assert configuration.size(value) == size


def test_bad_endpoint_strings_are_found_before_listening(tmp_path):
    from twisted.internet import reactor

    config = load(str(write_config(tmp_path, "[web]\nhttp =\n  tcp:8080\n  tcpp:99\n")))
    with pytest.raises(ConfigError) as raised:
        configuration.check_endpoints(config, reactor)
    [error] = raised.value.errors
    assert error.startswith(f"{config.path}:web:http: bad endpoint 'tcpp:99'")


def test_systemd_endpoints_are_checked_for_their_form_without_the_sockets(tmp_path):
    """stationd-admin check-config runs as ExecStartPre, which systemd hands no sockets."""
    from twisted.internet import reactor

    good = "systemd:domain=INET:index=0\n  systemd:domain=INET6:name=stationd-https"
    config = load(str(write_config(tmp_path, f"[web]\nhttp =\n  {good}\n")))
    configuration.check_endpoints(config, reactor, inherited=False)
    with pytest.raises(ConfigError):  # (in the service itself, the sockets must be there)
        configuration.check_endpoints(config, reactor)
    bad = "systemd:domain=INET\n  systemd:domain=IPX:index=0\n  systemd:domain=UNIX:index=x"
    config = load(str(write_config(tmp_path, f"[web]\nhttp =\n  {bad}\n")))
    with pytest.raises(ConfigError) as raised:
        configuration.check_endpoints(config, reactor, inherited=False)
    assert [e.split(": ", 2)[2] for e in raised.value.errors] == [
        "give one of index= (a number from 0) or name= (the socket unit's FileDescriptorName)",
        "domain= must be INET, INET6 or UNIX", "index= must be a number from 0, not 'x'"]


def test_workers_need_postgresql_and_auto_is_the_cores(tmp_path):
    import os

    assert load(str(write_config(tmp_path, "")))["node"]["workers"] == 1
    with pytest.raises(ConfigError, match=r":node:workers: more than one worker needs PostgreSQL"):
        load(str(write_config(tmp_path, "[node]\nworkers = 2\n")))
    central = "[database]\nurl = postgresql+psycopg://db/stationd\n[node]\nworkers = "
    assert load(str(write_config(tmp_path, central + "auto\n")))["node"]["workers"] == len(os.sched_getaffinity(0))
    assert load(str(write_config(tmp_path, central + "3\n")))["node"]["workers"] == 3
    with pytest.raises(ConfigError, match=r":node:workers: expected 1 to 64 or auto"):
        load(str(write_config(tmp_path, central + "0\n")))
    deep = f"data_dir = /{'d' * 100}\n"  # (worker 0's socket for the others would not fit)
    assert load(str(write_config(tmp_path, central + "1\n" + deep)))["node"]["workers"] == 1
    with pytest.raises(ConfigError, match=r":node:workers: more than one worker needs a shorter \[node\] data_dir"):
        load(str(write_config(tmp_path, central + "2\n" + deep)))
