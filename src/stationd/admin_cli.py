"""stationd-admin: configuration, schema, users, certificates and backups, on the store directly.

Works whether or not the node runs: the node reads users from the store on
every request, so changes here count from its next request.
"""

import argparse
import getpass
import json
import mimetypes
import os
import sys
import time

from stationd import __version__
from stationd import config as configuration
from stationd import reload as reloading
from stationd import tls
from stationd.instrument_configs import NAME
from stationd.filestore import FileStore
from stationd.store import Store, StoreError, files, identity, migrations, stations, users
from stationd.times import format_ns, parse_time


class CommandError(Exception):
    """A user error: printed as one line, exit 1."""


def _config(args):
    return configuration.load(args.config)


def _store(args, config=None):
    config = config or _config(args)
    store = Store(config["database"]["url"])
    store.migrate(config.own_origin_names())
    return store


def echo_config(args):
    sys.stdout.write(configuration.default_text())


def check_config(args):
    from twisted.internet import reactor

    config = _config(args)
    configuration.check_endpoints(config, reactor, inherited=False)  # (ExecStartPre gets no sockets)
    web = config["web"]
    if web["https"] and web["tls_cert"]:
        try:
            tls.server_options(web["tls_cert"], web["tls_key"], web["tls_min_version"], web["client_ca"])
        except ValueError as e:
            raise config.error("web", "tls_cert", str(e)) from None
    print(f"{config.path or configuration.DEFAULTS_NAME}: OK")


def reload_node(args):
    """SIGHUP to the node running on this configuration's data_dir; its outcome."""
    config = _config(args)
    try:
        result = reloading.request(config["node"]["data_dir"], args.timeout)
    except (reloading.NotRunning, TimeoutError) as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps(result, indent=1))
    elif result["result"] == "applied":
        changes = result["changes"]
        for what, label in (("sensors", "sensors"), ("exports", "export targets")):
            said = [f"{kind} {', '.join(names)}" for kind, names in changes[what].items() if names]
            print(f"{label}: {'; '.join(said) or 'unchanged'}")
        if changes["log"]:
            print("log settings: changed")
        for key in result["restart_needed"]:
            print(f"{key}: changed; takes effect at the next restart")
        print(f"reloaded (pid {result['pid']})")
    if result["result"] != "applied":
        if not args.json:
            for error in result["errors"]:
                sys.stderr.write(f"{error}\n")
        raise CommandError(f"reload {result['result']}; the node runs on with its configuration as it was")


def init(args):
    config = _config(args)
    os.makedirs(config["node"]["data_dir"], exist_ok=True)
    store = Store(config["database"]["url"])
    before, after = store.migrate(config.own_origin_names())
    node_id = store.call_read(identity.get_node_id)
    store.close()
    state = "created" if before is None else "up to date" if before == after else f"upgraded from {before}"
    print(f"data directory {config['node']['data_dir']}")
    print(f"database {store.url.render_as_string()}: schema version {after} ({state})")
    print(f"node {config['node']['name']!r}, node id {node_id}")


def status(args):
    """What identifies this node, and where its data is: for the operator, with the node running or not."""
    config = _config(args)
    store = _store(args, config)
    node_id = store.call_read(identity.get_node_id)
    version = store.call_read(migrations.current_version)
    store.close()
    print(f"name       {config['node']['name']}")
    print(f"node id    {node_id}")
    print(f"data dir   {config['node']['data_dir']}")
    print(f"database   {store.url.render_as_string()} (schema version {version})")


def new_node_id(args):
    """A fresh node id, for a store copied from another node (an imaged SD card)."""
    store = _store(args)
    before, after = store.call(identity.new_node_id)
    store.close()
    print(f"node id {before} -> {after}")
    print("restart the node for it to take effect; records stored so far keep the origin they have")


def add_user(args):
    store = _store(args)
    user, key = store.call(
        users.add_user, args.name, args.role, email=args.email,
        first_name=" ".join(args.full_name[:1]) or None,
        last_name=" ".join(args.full_name[1:]) or None, station=args.station,
    )
    print(f"user {user['name']} (role {user['role']}) created; its API key, shown only this once:")
    print(key)


def rotate_key(args):
    key = _store(args).call(users.rotate_key, args.name)
    print(f"new API key for {args.name} (the old one no longer works), shown only this once:")
    print(key)


def list_users(args):
    rows = _store(args).call(users.list_users)
    print(f"{'NAME':20} {'ROLE':9} {'EMAIL':28} {'KEY SINCE':25} {'PASSWORD':8} NAME")
    for u in rows:
        full = " ".join(filter(None, (u["first_name"], u["last_name"])))
        print(f"{u['name']:20} {u['role']:9} {u['email'] or '-':28} {u['key_rotated_at']:25} "
              f"{'yes' if u['has_password'] else 'no':8} {full}")


def set_password(args):
    if args.remove:
        password = None
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise users.UserError("the two passwords differ; nothing changed")
    else:  # (a script: the first line of standard input)
        password = sys.stdin.readline().rstrip("\r\n")
    _store(args).call(users.set_password, args.name, password)
    print(f"user {args.name}: password {'removed' if password is None else 'set'} (HTTP Basic auth, "
          "where the MeteorPi routes ask for it)")


def remove_user(args):
    _store(args).call(users.remove_user, args.name)
    print(f"user {args.name} removed")


def add_station(args):
    hashed = stations.hash_password(args.password) if args.password else None
    station = _store(args).call(stations.add_station, args.id, hashed, cluster=args.cluster, name=args.name)
    print(f"station {station['id']} added")


def _meters(args):
    """Progress meters on stderr for long work (silent off a terminal, and with --quiet)."""
    from stationd.progress import Progress

    return lambda total, unit, label: Progress(total, unit, label, quiet=args.quiet)


def import_stations(args):
    rows = stations.read_station_list(args.file)
    store = _store(args)
    stored = store.call(stations.password_hashes)
    hashed = []
    with _meters(args)(len(rows), "stations", "hashing passwords") as meter:  # (scrypt: the slow part)
        for row in rows:
            hashed += stations.hashed_rows(stored, [row])
            meter.update(1)
    counts = store.call(stations.put_stations, hashed)
    print(f"{len(rows)} stations read: {counts['added']} added, {counts['updated']} updated")


def list_stations(args):
    print(f"{'ID':12} {'CLUSTER':16} {'PASSWORD':8}  NAME")
    for s in _store(args).call(stations.list_stations):
        print(f"{s['id']:12} {s['cluster'] or '-':16} {'yes' if s['has_password'] else 'no':8}  {s['name'] or ''}")


def _json_object(text, what):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise CommandError(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise CommandError(f"{what} must be a JSON object")
    return value


def _time(text, what):
    try:
        return parse_time(text)
    except ValueError as e:
        raise CommandError(f"{what}: {e}") from None


def attach_file(args):
    config = _config(args)
    store = _store(args, config)
    meta = _json_object(args.meta, "--meta")
    content = FileStore(config["files"]["dir"] or os.path.join(config["node"]["data_dir"], "files"))
    with open(args.path, "rb") as source:  # copied in 1 MiB chunks, fsynced
        sha256, size = content.put(source)
    name = args.name or os.path.basename(args.path)
    mime_type = args.mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    try:
        record = store.call(files.attach_file, args.event_id, name=name, mime_type=mime_type,
                            semantic_type=args.semantic_type, meta=meta, sha256=sha256, size=size,
                            now_ns=time.time_ns(), origin=store.call_read(identity.get_node_id))
    except files.NoSuchEvent as e:
        raise CommandError(str(e)) from None
    print(f"file {record['id']} ({size} bytes, sha256 {sha256}) attached to event {args.event_id}")


def add_status(args):
    location = {key: value for key, value in (("lat", args.lat), ("lon", args.lon), ("alt", args.alt))
                if value is not None}
    valid_from = _time(args.valid_from, "--valid-from") if args.valid_from else time.time_ns()
    orientation = _json_object(args.orientation, "--orientation") if args.orientation else None
    history = _store(args).call(stations.add_status, args.id, valid_from, time.time_ns(),
                                instrument=args.instrument, location=location, orientation=orientation)
    print(f"station {args.id}: status from {format_ns(valid_from)} added; {len(history)} in its history")


def _fplane_content(text):
    """An fplane text file (FPlaneServer's, or ours), or the structured JSON form: a version as
    GET /api/v1/configs/fplane answers it, or only its content ({"units": [...]})."""
    from stationd import fplane

    if not text.lstrip().startswith("{"):
        return fplane.parse(text, fplane.default_slots())
    content = json.loads(text)
    if isinstance(content, dict) and "units" not in content and isinstance(content.get("content"), dict):
        content = content["content"]
    return fplane.validate(content, fplane.default_slots())


def import_config(args):
    """fplane: a text file or its JSON form; any other name: a JSON object."""
    from stationd import fplane
    from stationd.store import configs

    if not NAME.match(args.name):
        raise CommandError(f"bad configuration name {args.name!r}: letters, digits, _ and -")
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
        content = _fplane_content(text) if args.name == "fplane" else json.loads(text)
        if not isinstance(content, dict):
            raise ValueError("the configuration must be a JSON object")
    except (fplane.ConfigInvalid, ValueError) as e:
        raise CommandError(f"{args.file}: {e}") from None
    author = args.author or os.environ.get("USER") or "stationd-admin"
    try:
        version = _store(args).call(configs.add_version, args.name, content, _time(args.valid_from, "--valid-from"),
                                    author, time.time_ns())
    except configs.VersionExists as e:
        raise CommandError(str(e)) from None
    print(f"{args.name} version {version['version']} valid from {version['valid_from']} stored")


def backup(args):
    """A consistent copy of the node, running or not (stationd.backup)."""
    from stationd import backup as backups

    node = backups.Node.from_config(_config(args))
    try:
        manifest = backups.backup(node, args.dir, _meters(args))
    except backups.BackupError as e:
        raise CommandError(str(e)) from None
    summary = {"backup": os.path.abspath(args.dir), "node_id": manifest["node_id"],
               "database": manifest["database"]["dialect"], "counts": manifest["counts"],
               "files": len(manifest["files"]), "file_bytes": sum(f["size"] for f in manifest["files"]),
               "missing_files": len(manifest["missing_files"]), "spool_segments": len(manifest["spool"]),
               "config": bool(manifest["config"]), "tls": len(manifest["tls"])}
    if args.json:
        print(json.dumps(summary))
        return
    counts = manifest["counts"]
    print(f"backup of node {manifest['node_id']} in {summary['backup']}: {counts['events']} events, "
          f"{summary['files']} file contents ({summary['file_bytes']} bytes), {summary['spool_segments']} spool "
          f"segments, {counts['stations']} stations, {counts['users']} users"
          + (", the configuration" if manifest["config"] else "") + (", the TLS pair" if manifest["tls"] else ""))
    if manifest["missing_files"]:
        print(f"{summary['missing_files']} file contents the node has not received yet (announced by an "
              "upstream import) are not in it: listed in manifest.json")


def restore(args):
    """Put a backup back into a stopped node (stationd.backup)."""
    from stationd import backup as backups

    node = backups.Node.from_config(_config(args))
    try:
        result = backups.restore(args.dir, node, force=args.force, meters=_meters(args))
    except backups.BackupError as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps(result))
        return
    counts = result["counts"]
    print(f"node {result['node_id']} restored from {result['backup']}: {counts['events']} events, "
          f"{result['files']} file contents written, {result['spool_segments']} spool segments (stored at "
          f"the node's start), {counts['stations']} stations, {counts['users']} users")
    if result["config"]:
        print(f"its configuration is {result['config']}: not installed, copy it where the node reads it if it "
              "should replace the one in use")


def make_cert(args):
    os.makedirs(args.out, exist_ok=True)
    cert_path, key_path = os.path.join(args.out, "cert.pem"), os.path.join(args.out, "key.pem")
    if not args.force and (os.path.exists(cert_path) or os.path.exists(key_path)):
        raise CommandError(f"{cert_path} or {key_path} exists; use --force to replace them")
    issuer = None
    if args.issuer:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            with open(os.path.join(args.issuer, "key.pem"), "rb") as f:
                issuer_key = serialization.load_pem_private_key(f.read(), None)
            with open(os.path.join(args.issuer, "cert.pem"), "rb") as f:
                issuer = (issuer_key, x509.load_pem_x509_certificate(f.read()))
        except (OSError, ValueError) as e:
            raise CommandError(f"cannot load the issuer from {args.issuer}: {e}") from None
    key, cert = tls.make_certificate(args.host, issuer=issuer, is_ca=args.ca)
    tls.write_pair(key, cert, cert_path, key_path)
    kind = "CA certificate" if args.ca else "certificate"
    print(f"{kind} {cert_path} and key {key_path} for {', '.join(args.host)}")
    print(f"SHA-256 fingerprint {tls.fingerprint(cert)}")


def parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="configuration file (default: $STATIOND_CONFIG, else the embedded defaults)")
    top = argparse.ArgumentParser(
        prog="stationd-admin", parents=[common],
        description="Administer a stationd node: configuration, schema, users, certificates, backups.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, function, help):
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(function=function)
        return p

    command("echo-config", echo_config, "print the embedded default configuration")
    command("check-config", check_config, "validate a configuration")
    command("init", init, "create the data directory and the database schema")
    p = command("reload", reload_node, "make the running node read its configuration again (as SIGHUP does) "
                "and tell what changed, what waits for a restart, or why it refused")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the outcome (default: 60)")
    p.add_argument("--json", action="store_true", help="the outcome as one JSON object")
    command("status", status, "show the node's name, node id, data directory and database")
    command("new-node-id", new_node_id,
            "give this node a new random node id (for a store copied from another node)")
    p = command("add-user", add_user, "create a user and print its API key")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=users.ROLES)
    p.add_argument("--email")
    p.add_argument("--station", metavar="ID", help="for role station: the station it may ingest for")
    p.add_argument("full_name", nargs="*", metavar="FIRST LAST", help="the person's first and last name")
    p = command("rotate-key", rotate_key, "give a user a new API key (the old one stops working)")
    p.add_argument("name")
    p = command("set-password", set_password, "give a user a password for HTTP Basic auth (MeteorPi clients and "
                "camera exporters); read from the terminal, or standard input, unless --password")
    p.add_argument("name")
    p.add_argument("--password", help="the password (it shows in the process list: prefer standard input)")
    p.add_argument("--remove", action="store_true", help="take the user's password away")
    command("list-users", list_users, "list users and their roles")
    p = command("remove-user", remove_user, "remove a user (its key stops working)")
    p.add_argument("name")
    p = command("add-station", add_station, "register a station (HiSPARC number or a name)")
    p.add_argument("id")
    p.add_argument("--password", help="upload password (HiSPARC /upload); stored hashed")
    p.add_argument("--cluster")
    p.add_argument("--name")
    p = command("import-stations", import_stations,
                "add or update stations from a CSV of number,cluster,password (no header)")
    p.add_argument("file")
    p.add_argument("--quiet", action="store_true", help="no progress line, only the result")
    command("list-stations", list_stations, "list registered stations")
    p = command("add-status", add_status,
                "add to a station's status history (closes the previous status; nothing is deleted)")
    p.add_argument("id")
    p.add_argument("--valid-from", metavar="TIME", help="ISO 8601 with zone (default: now)")
    p.add_argument("--instrument")
    p.add_argument("--lat", type=float)
    p.add_argument("--lon", type=float)
    p.add_argument("--alt", type=float, help="metres")
    p.add_argument("--orientation", metavar="JSON", help='e.g. {"azimuth": 90, "altitude": 45}')
    p = command("attach-file", attach_file,
                "store a file's content (any size, streamed) and attach it to an event")
    p.add_argument("event_id")
    p.add_argument("path")
    p.add_argument("--name", help="file name (default: that of PATH)")
    p.add_argument("--mime-type", help="default: guessed from the name")
    p.add_argument("--semantic-type", help="e.g. meteor_image")
    p.add_argument("--meta", default="{}", metavar="JSON", help="metadata object")
    p = command("import-config", import_config,
                "store a configuration version from a file (fplane: FPlaneServer's text format)")
    p.add_argument("name", help="configuration name, e.g. fplane")
    p.add_argument("file")
    p.add_argument("--valid-from", required=True, metavar="TIME", help="ISO 8601 with zone")
    p.add_argument("--author", help="default: $USER")
    p = command("backup", backup, "copy the node's database, files, spool and configuration into a new "
                "directory (consistent while the node runs)")
    p.add_argument("dir", help="a new or empty directory")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the result")
    p.add_argument("--json", action="store_true", help="the result as one JSON object")
    p = command("restore", restore, "put a backup back into this configuration's node (stopped; its store "
                "empty unless --force); the configuration stays in DIR")
    p.add_argument("dir", help="a directory made by backup")
    p.add_argument("--force", action="store_true",
                   help="replace a database that holds data (file contents and spool segments are added)")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the result")
    p.add_argument("--json", action="store_true", help="the result as one JSON object")
    p = command("make-cert", make_cert, "make a key and certificate (self-signed, CA, or signed by a CA)")
    p.add_argument("--host", action="append", required=True,
                   help="a DNS name or IP address the certificate is for (repeatable; "
                        "the first is its common name)")
    p.add_argument("--out", default=".", help="directory for cert.pem and key.pem (default: .)")
    p.add_argument("--ca", action="store_true", help="make a CA certificate, to sign others with")
    p.add_argument("--issuer", metavar="DIR",
                   help="sign with the CA in DIR (cert.pem, key.pem) instead of self-signing")
    p.add_argument("--force", action="store_true", help="replace existing files")
    return top


def main(argv=None):
    top = parser()
    # argparse cannot take "add-user NAME --role R FIRST LAST" (positionals on
    # both sides of an option) in one pass; the names after it come back here.
    args, rest = top.parse_known_args(argv)
    if rest and args.command == "add-user" and not any(r.startswith("-") for r in rest):
        args.full_name += rest
    elif rest:
        top.error(f"unrecognized arguments: {' '.join(rest)}")
    args.config = getattr(args, "config", None)
    try:
        args.function(args)
    except configuration.ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    except (CommandError, StoreError, users.UserError, stations.StationError, OSError) as e:
        sys.stderr.write(f"stationd-admin: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
