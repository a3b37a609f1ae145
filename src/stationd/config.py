"""The node's configuration: the embedded defaults overlaid with one INI file.

Every key is declared in SCHEMA with the function that parses it, so a typo
or a bad value stops the start with ``file:section:key: message`` instead of
being silently ignored.
"""

import configparser
import datetime
import math
import os
import re
import socket
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any, Literal, TypedDict, cast, overload

# The values choice() allows, as types: those keys' types in the sections' TypedDicts below.
TLSVersion = Literal["TLSv1.2", "TLSv1.3"]
LogLevelName = Literal["debug", "info", "warn", "error", "critical"]
LogFormat = Literal["text", "json"]
DisplayDriver = Literal["log", "file", "dbus", "st7735"]
SensorDriver = Literal["system", "sysfs", "dbus", "command", "simulated", "enviroplus"]
Parser = Callable[[str], object]  # a key's parser: config-file text -> value; ValueError if bad

DEFAULTS_NAME = "<defaults>"
COMPONENTS = ("core", "admin", "upload", "ingest", "query", "configs", "import", "sensors", "metrics", "dashboard",
              "docs", "meteorpi")
OFF_BY_DEFAULT = ("meteorpi",)  # not in "all": named to be mounted
TLS_VERSIONS: tuple[TLSVersion, ...] = ("TLSv1.2", "TLSv1.3")
LOG_LEVELS: tuple[LogLevelName, ...] = ("debug", "info", "warn", "error", "critical")


class ConfigError(Exception):
    """One or more configuration errors, each ``file:section:key: message``."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def default_text() -> str:
    return resources.files(__package__).joinpath("default.ini").read_text("utf-8")


# -- value parsers: str -> value, raising ValueError with a readable message --

def text(value: str) -> str:
    return value.strip()


def node_name(value: str) -> str:
    """[node] name: a label for people; empty (the default) is the host name."""
    return value.strip() or socket.gethostname()


def workers(value: str) -> int:
    """[node] workers: processes serving the listeners; ``auto``: the cores this process may use."""
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = integer(value)
    if not 1 <= count <= 64:
        raise ValueError(f"expected 1 to 64 or auto, not {value!r}")
    return count


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected true or false, not {value!r}")


def integer(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"expected an integer, not {value!r}") from None


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _number_with_unit(value: str, units: Mapping[str, float], what: str) -> float:
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in units:
        names = ", ".join(u for u in units if u)
        raise ValueError(f"expected a {what}: a number, optionally with {names}; not {value!r}")
    number = float(match.group(1)) * units[unit]
    if math.isinf(number):  # digits beyond a double's range: an endless interval, a size without limit
        raise ValueError(f"expected a {what}: {value.strip()[:40]!r} is out of range")
    return number


def duration(value: str) -> float:
    """Seconds as a float: ``30``, ``500ms``, ``5m``, ``2h``, ``1d``."""
    return _number_with_unit(value, {"": 1, **_DURATION_UNITS}, "duration")


def size(value: str) -> int:
    """Bytes as an int: ``1048576``, ``64KiB``, ``16MiB``, ``1GiB``."""
    return int(_number_with_unit(value, _SIZE_UNITS, "size"))


def non_negative(value: str) -> int:
    count = integer(value)
    if count < 0:
        raise ValueError(f"expected 0 or more, not {value!r}")
    return count


def hsts(value: str) -> str:
    """A Strict-Transport-Security value (max-age=N[; includeSubDomains][; preload]); empty: none."""
    value = value.strip()
    if value and not re.match(r"^max-age=\d+(\s*;\s*(includeSubDomains|preload))*$", value, re.IGNORECASE):
        raise ValueError(f"expected max-age=SECONDS, optionally '; includeSubDomains' and '; preload', "
                         f"or nothing; not {value!r}")
    return value


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def optional_path(value: str) -> str | None:
    return os.path.abspath(value.strip()) if value.strip() else None


def choice(*allowed: str, fold_case: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip()
        for option in allowed:
            if value == option or (fold_case and value.lower() == option.lower()):
                return option
        raise ValueError(f"expected one of {', '.join(allowed)}, not {value!r}")

    return parse


def timestamp(value: str) -> int:
    """An ISO 8601 time; without a zone it is UTC. Returns epoch nanoseconds."""
    try:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2020-01-01T00:00:00Z, not {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def timezone(value: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(value.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value.strip()!r}") from None


def optional_timestamp(value: str) -> int | None:
    return timestamp(value) if value.strip() else None


def url(value: str) -> str:
    value = value.strip()
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"expected an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


_WINDOW = re.compile(r"^(\d\d?)(?::(\d\d))?\s*-\s*(\d\d?)(?::(\d\d))?$")


def window(value: str) -> tuple[int, int] | None:
    """Hours of the day, site time: ``22-06`` or ``21:30-05:45`` -> (start, end) minutes; empty: always."""
    if not value.strip():
        return None
    match = _WINDOW.match(value.strip())
    if not match:
        raise ValueError(f"expected hours such as 22-06 or 21:30-05:45, not {value!r}")
    h1, m1, h2, m2 = (int(g or 0) for g in match.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValueError(f"expected hours such as 22-06 or 21:30-05:45, not {value!r}")
    return (h1 * 60 + m1) % 1440, (h2 * 60 + m2) % 1440


def request_path(value: str) -> str:
    value = value.strip()
    if not value.startswith("/"):
        raise ValueError(f"must start with '/', not {value!r}")
    return "/" + value.strip("/") + "/" if value.strip("/") else "/"


def mount_path(value: str) -> str:
    """A path under request_path: "/api" (no trailing slash; "/" or empty: the request path itself)."""
    value = value.strip()
    if value and not value.startswith("/"):
        raise ValueError(f"must start with '/', not {value!r}")
    if not re.fullmatch(r"[A-Za-z0-9/_.~-]*", value):
        raise ValueError(f"a path of letters, digits and /_.~-, not {value!r}")
    return "/" + value.strip("/") if value.strip("/") else ""


def bus(value: str) -> str:
    """auto, session, system, none, or a D-Bus address (transport:key=value,...)."""
    value = value.strip()
    if value in ("auto", "session", "system", "none") or re.match(r"^[a-z-]+:\S*=", value):
        return value
    raise ValueError(f"expected auto, session, system, none or an address such as unix:path=/run/bus, "
                     f"not {value!r}")


def words(value: str) -> list[str]:
    return value.replace(",", " ").split()


def components(value: str) -> list[str]:
    """Component names; "all" stands for every one but those OFF_BY_DEFAULT ("all meteorpi": all of them)."""
    names = words(value)
    unknown = [n for n in names if n not in COMPONENTS and n != "all"]
    if unknown:
        raise ValueError(f"unknown component {unknown[0]!r}; known: all, {', '.join(COMPONENTS)}")
    if "all" in names:
        names = [n for n in COMPONENTS if n not in OFF_BY_DEFAULT or n in names]
    return list(dict.fromkeys(names))


SCHEMA: dict[str, dict[str, Parser]] = {
    "node": {"name": node_name, "data_dir": optional_path, "timezone": timezone, "workers": workers},
    "web": {
        "http": lines,
        "https": lines,
        "request_path": request_path,
        "components": components,
        "max_body_size": size,
        "tls_cert": optional_path,
        "tls_key": optional_path,
        "tls_min_version": choice(*TLS_VERSIONS, fold_case=True),
        "client_ca": optional_path,
        "public_read": boolean,
        "auth_failures": integer,
        "auth_window": duration,
        "password_queue": integer,
        "cors_origins": words,
        "header_timeout": duration,
        "max_connections_per_client": non_negative,
        "hsts": hsts,
    },
    "database": {"url": text},
    "writer": {"spool_dir": optional_path, "max_spool_bytes": size},
    "files": {"dir": optional_path},
    "ingest": {"station_list": optional_path, "min_event_time": timestamp, "max_future_skew": duration,
               "decoders": workers, "decode_memory": size, "decode_timeout": duration},
    "display": {"driver": choice("log", "file", "dbus", "st7735"), "path": optional_path, "max_length": integer},
    "dbus": {"bus": bus, "name": text},
    "log": {
        "level": choice(*LOG_LEVELS, fold_case=True),
        "path": optional_path,
        "format": choice("text", "json"),
        "rotate_size": size,
        "rotate_keep": integer,
    },
    "metrics": {"statsd_host": text, "statsd_port": integer, "statsd_prefix": text, "sentry_dsn": text},
    "meteorpi": {"path": mount_path},
}


# [export:NAME] sections: one upstream target each (see docs/replication.rst).
EXPORT: dict[str, Parser] = {
    "target_url": url,
    "api_key": text,
    "ca": optional_path,
    "client_cert": optional_path,
    "client_key": optional_path,
    "stations": words,
    "types": words,
    "semantic_types": words,
    "after": optional_timestamp,
    "before": optional_timestamp,
    "window": window,
    "interval": duration,
    "batch_size": integer,
    "batch_bytes": size,
    "max_backoff": duration,
    "max_retry_after": duration,
    "timeout": duration,
}
EXPORT_DEFAULTS = {"api_key": "", "ca": "", "client_cert": "", "client_key": "", "stations": "", "types": "",
                   "semantic_types": "", "after": "", "before": "", "window": "", "interval": "10s",
                   "batch_size": "5000", "batch_bytes": "1MiB", "max_backoff": "1h", "max_retry_after": "6h",
                   "timeout": "30s"}


def field_numbers(value: str) -> dict[str, float]:
    """``temperature=70 load1=4`` -> {"temperature": 70.0, "load1": 4.0}; a bare number is for every field ("*")."""
    numbers: dict[str, float] = {}
    for word in words(value):
        field, equals, number = word.rpartition("=")
        try:
            numbers[field if equals else "*"] = float(number)
        except ValueError:
            raise ValueError(f"expected FIELD=NUMBER words, not {word!r}") from None
        if not math.isfinite(numbers[field if equals else "*"]):  # nan never compares: no alarm would fire
            raise ValueError(f"expected FIELD=NUMBER words with finite numbers, not {word!r}")
    return numbers


# [sensor:NAME] sections: one polled sensor each (see docs/sensors.rst).  Keys
# not named here are the driver's own (sensors.drivers.make checks them).
SENSOR: dict[str, Parser] = {
    "driver": choice("system", "sysfs", "dbus", "command", "simulated", "enviroplus"),
    "enabled": boolean,
    "interval": duration,
    "align": boolean,
    "jitter": duration,
    "timeout": duration,
    "fields": words,
    "retention": duration,
    "horizon": duration,
    "resolution": duration,
    "alarm_above": field_numbers,
    "alarm_below": field_numbers,
    "hysteresis": field_numbers,
}
SENSOR_DEFAULTS = {"enabled": "yes", "interval": "10s", "align": "no", "jitter": "0", "timeout": "5s", "fields": "",
                   "retention": "7d", "horizon": "1d", "resolution": "5m", "alarm_above": "", "alarm_below": "",
                   "hysteresis": "0"}


# -- the parsed sections, as types: what config[section] holds once load() has
# returned (every key is set: the defaults have them all).  At run time they are
# plain dicts; these TypedDicts only tell the type checker each key's type.

class NodeSection(TypedDict):
    name: str
    data_dir: str  # optional_path, but load() refuses it empty: never None here
    timezone: zoneinfo.ZoneInfo
    workers: int


class WebSection(TypedDict):
    http: list[str]  # endpoint strings
    https: list[str]
    request_path: str
    components: list[str]  # names from COMPONENTS
    max_body_size: int
    tls_cert: str | None
    tls_key: str | None  # set exactly when tls_cert is
    tls_min_version: TLSVersion
    client_ca: str | None
    public_read: bool
    auth_failures: int  # 0: no limit
    auth_window: float  # seconds
    password_queue: int
    cors_origins: list[str]
    header_timeout: float  # seconds; 0: none
    max_connections_per_client: int  # 0: no cap
    hsts: str  # empty: no Strict-Transport-Security header


class DatabaseSection(TypedDict):
    url: str


class WriterSection(TypedDict):
    spool_dir: str | None
    max_spool_bytes: int


class FilesSection(TypedDict):
    dir: str | None


class IngestSection(TypedDict):
    station_list: str | None
    min_event_time: int  # epoch nanoseconds
    max_future_skew: float  # seconds
    decoders: int  # HiSPARC decoder processes (stationd.decoders)
    decode_memory: int  # bytes a decoder process may grow by
    decode_timeout: float  # seconds a payload


class DisplaySection(TypedDict):
    driver: DisplayDriver
    path: str | None
    max_length: int


class DbusSection(TypedDict):
    bus: str  # auto, session, system, none or a D-Bus address
    name: str


class MetricsSection(TypedDict):
    statsd_host: str  # empty: no statsd
    statsd_port: int
    statsd_prefix: str
    sentry_dsn: str  # empty: no Sentry


class MeteorPiSection(TypedDict):
    path: str  # "/api"; "" for request_path itself


class LogSection(TypedDict):
    level: LogLevelName
    path: str | None
    format: LogFormat
    rotate_size: int
    rotate_keep: int


class ExportTarget(TypedDict):
    """One [export:NAME] section (or admin API target) as parse_export() makes it."""

    name: str
    settings: dict[str, str]  # as given, config-file syntax, without the defaults
    target_url: str
    api_key: str  # empty: none
    ca: str | None
    client_cert: str | None
    client_key: str | None
    stations: list[str]
    types: list[str]
    semantic_types: list[str]
    after: int | None  # epoch nanoseconds
    before: int | None
    window: tuple[int, int] | None  # (start, end) minutes of the day; None: always
    interval: float  # seconds
    batch_size: int
    batch_bytes: int
    max_backoff: float
    max_retry_after: float  # the longest Retry-After honoured (beyond max_backoff)
    timeout: float


class SensorSection(TypedDict):
    """One enabled [sensor:NAME] section as _sensor() makes it."""

    name: str
    options: dict[str, str]  # the driver's own keys, as text
    origin: dict[str, str]  # key -> the file that set it
    driver: SensorDriver
    enabled: bool
    interval: float  # seconds, as are jitter, timeout, retention, horizon and resolution
    align: bool
    jitter: float
    timeout: float
    fields: list[str]
    retention: float
    horizon: float
    resolution: float
    alarm_above: dict[str, float]  # field (or "*") -> threshold
    alarm_below: dict[str, float]
    hysteresis: dict[str, float]


class Config:
    """Parsed configuration: ``config["web"]["http"]`` is a list of strings.

    ``path`` is the user's file (None on the embedded defaults); ``origin``
    tells which file each value came from, for error messages found later
    (an endpoint that will not parse, a certificate that will not load).
    """

    def __init__(self, values: dict[str, Any], path: str | None, origin: dict[tuple[str, str], str]) -> None:
        self.values = values
        self.path = path
        self.origin = origin

    @overload
    def __getitem__(self, section: Literal["node"]) -> NodeSection: ...
    @overload
    def __getitem__(self, section: Literal["web"]) -> WebSection: ...
    @overload
    def __getitem__(self, section: Literal["database"]) -> DatabaseSection: ...
    @overload
    def __getitem__(self, section: Literal["writer"]) -> WriterSection: ...
    @overload
    def __getitem__(self, section: Literal["files"]) -> FilesSection: ...
    @overload
    def __getitem__(self, section: Literal["ingest"]) -> IngestSection: ...
    @overload
    def __getitem__(self, section: Literal["display"]) -> DisplaySection: ...
    @overload
    def __getitem__(self, section: Literal["dbus"]) -> DbusSection: ...
    @overload
    def __getitem__(self, section: Literal["log"]) -> LogSection: ...
    @overload
    def __getitem__(self, section: Literal["metrics"]) -> MetricsSection: ...
    @overload
    def __getitem__(self, section: Literal["meteorpi"]) -> MeteorPiSection: ...
    @overload
    def __getitem__(self, section: Literal["exports"]) -> dict[str, ExportTarget]: ...
    @overload
    def __getitem__(self, section: Literal["sensors"]) -> dict[str, SensorSection]: ...

    def __getitem__(self, section: str) -> object:
        return self.values[section]

    def error(self, section: str, key: str, message: str) -> ConfigError:
        """A ConfigError pointing at where ``section.key`` was set."""
        return ConfigError([f"{self.origin[section, key]}:{section}:{key}: {message}"])

    def own_origin_names(self) -> list[str]:
        """The origins this node's own records carry from before node ids (schema 9): its name,
        and "stationd", the default name until then, when the file sets none."""
        names = {self["node"]["name"]}
        if self.origin.get(("node", "name")) == DEFAULTS_NAME:
            names.add("stationd")
        return sorted(names)


def _read(parser: configparser.ConfigParser, text_or_path: str | None, name: str, errors: list[str]) -> None:
    try:
        if text_or_path is None:
            parser.read_string(default_text(), name)
        else:
            with open(text_or_path, encoding="utf-8") as f:
                parser.read_file(f, name)
    except OSError as e:
        errors.append(f"{name}::: cannot read: {e.strerror or e}")
    except (configparser.Error, UnicodeDecodeError) as e:
        message = " ".join(str(e).split())
        errors.append(f"{name}::: cannot parse: {message}")


def _parser() -> configparser.ConfigParser:
    return configparser.ConfigParser(interpolation=None, default_section="\0")


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the config: ``path``, else $STATIOND_CONFIG, else the defaults."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("STATIOND_CONFIG") or None
    errors: list[str] = []
    defaults, user = _parser(), _parser()
    _read(defaults, None, DEFAULTS_NAME, errors)
    if path is not None:
        _read(user, path, path, errors)
    if errors:
        raise ConfigError(errors)

    raw: dict[tuple[str, str], str] = {}
    origin: dict[tuple[str, str], str] = {}
    # section -> {key: (value, file)}: the defaults' sensors, overlaid by the user's
    sensors: dict[str, dict[str, tuple[str, str]]] = {}
    for section in defaults.sections():
        for key, value in defaults.items(section):
            if section.startswith("sensor:"):
                sensors.setdefault(section, {})[key] = (value, DEFAULTS_NAME)
                continue
            raw[section, key] = value
            origin[section, key] = DEFAULTS_NAME
    exports: dict[str, ExportTarget] = {}
    user_path = cast(str, path)  # user has sections only when path was read
    for section in user.sections():
        if section.startswith("export:"):
            exports[section] = _export(section, user, path, errors)
            continue
        if section.startswith("sensor:"):
            sensors.setdefault(section, {}).update((key, (value, user_path)) for key, value in user.items(section))
            continue
        if section not in SCHEMA:
            errors.append(f"{path}:{section}:: unknown section")
            continue
        for key, value in user.items(section):
            if key not in SCHEMA[section]:
                errors.append(f"{path}:{section}:{key}: unknown key")
                continue
            raw[section, key] = value
            origin[section, key] = user_path

    data_dir = optional_path(raw["node", "data_dir"]) or ""
    values: dict[str, Any] = {section: {} for section in SCHEMA}
    for (section, key), value in raw.items():
        if key != "data_dir":
            value = value.replace("{data_dir}", data_dir)
        try:
            values[section][key] = SCHEMA[section][key](value)
        except ValueError as e:
            errors.append(f"{origin[section, key]}:{section}:{key}: {e}")
    if not values["node"].get("data_dir") and ("node", "data_dir") in raw:
        errors.append(f"{origin['node', 'data_dir']}:node:data_dir: must not be empty")
    tls = values["web"]
    if bool(tls.get("tls_cert")) != bool(tls.get("tls_key")):
        key = "tls_key" if tls.get("tls_cert") else "tls_cert"
        errors.append(f"{path}:web:{key}: tls_cert and tls_key must be set together")
    if values["node"].get("workers", 1) > 1 and str(values["database"].get("url", "")).startswith("sqlite"):
        errors.append(f"{origin['node', 'workers']}:node:workers: more than one worker needs PostgreSQL "
                      "([database] url): SQLite lets one process write at a time, so workers would only "
                      "wait for each other; run one")
    elif (values["node"].get("workers", 1) > 1
          and len(os.fsencode(socket := workers_socket(values["node"]["data_dir"]))) > 107):
        errors.append(f"{origin['node', 'workers']}:node:workers: more than one worker needs a shorter "
                      f"[node] data_dir: its socket for the workers, {socket}, is longer than the 107 bytes "
                      "a socket path may have")
    values["exports"] = {section.split(":", 1)[1]: export for section, export in exports.items()}
    values["sensors"] = {}
    for section, settings in sensors.items():
        sensor = _sensor(section, settings, data_dir, errors)
        if sensor.get("enabled"):
            values["sensors"][sensor["name"]] = sensor
    if errors:
        raise ConfigError(errors)
    return Config(values, path, origin)


def _check_systemd(description: str) -> None:
    """What twisted's systemd: endpoint asks of its string, without the descriptors it names."""
    fields = dict(part.partition("=")[::2] for part in description.split(":")[1:])
    if fields.get("domain") not in ("INET", "INET6", "UNIX"):
        raise ValueError("domain= must be INET, INET6 or UNIX")
    if ("index" in fields) == ("name" in fields):
        raise ValueError("give one of index= (a number from 0) or name= (the socket unit's FileDescriptorName)")
    if "index" in fields and not fields["index"].isdigit():
        raise ValueError(f"index= must be a number from 0, not {fields['index']!r}")
    if "name" in fields and not fields["name"]:
        raise ValueError("name= must not be empty")


def workers_socket(data_dir: str) -> str:
    """Worker 0's socket for the other workers (stationd.web.forward)."""
    return os.path.join(os.path.abspath(data_dir), "worker-0.sock")


def _export(section: str, user: configparser.ConfigParser, path: str | None, errors: list[str]) -> ExportTarget:
    """One [export:NAME] section, defaults filled in; errors appended."""
    export, problems = parse_export(section.split(":", 1)[1], dict(user.items(section)))
    errors.extend(f"{path}:{section}:{key}: {message}" for key, message in problems)
    return export


def _sensor(section: str, settings: dict[str, tuple[str, str]], data_dir: str, errors: list[str]) -> SensorSection:
    """One [sensor:NAME] section: the keys of SENSOR parsed, the driver's own kept as text in
    "options"; "origin" says which file set each key (for the driver's errors, found later)."""
    name = section.split(":", 1)[1]
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
        errors.append(f"{settings.get('driver', ('', '?'))[1]}:{section}:: sensor names are letters, digits, "
                      "_ and - (at most 64)")
    sensor: dict[str, Any] = {"name": name, "options": {},
                              "origin": {key: where for key, (_, where) in settings.items()}}
    for key, (value, where) in dict({k: (v, DEFAULTS_NAME) for k, v in SENSOR_DEFAULTS.items()}, **settings).items():
        value = value.replace("{data_dir}", data_dir)
        if key not in SENSOR:
            sensor["options"][key] = value
            continue
        try:
            sensor[key] = SENSOR[key](value)
        except ValueError as e:
            errors.append(f"{where}:{section}:{key}: {e}")
    if "driver" not in settings:
        errors.append(f"{next(iter(settings.values()))[1]}:{section}:driver: required")
    return cast(SensorSection, sensor)  # complete once load() found no errors


def parse_export(name: str, settings: Mapping[str, str]) -> tuple[ExportTarget, list[tuple[str, str]]]:
    """An export target from its settings (config-file syntax, defaults filled in):
    (target, [(key, problem), ...]); the target has every key only when there are
    no problems.  The admin API checks targets with this too."""
    problems: list[tuple[str, str]] = []
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
        problems.append(("", "target names are letters, digits, _ and - (at most 64)"))
    export: dict[str, Any] = {"name": name, "settings": dict(settings)}
    for key, value in dict(EXPORT_DEFAULTS, **settings).items():
        if key not in EXPORT:
            problems.append((key, "unknown key"))
            continue
        try:
            export[key] = EXPORT[key](value)
        except ValueError as e:
            problems.append((key, str(e)))
    if "target_url" not in settings:
        problems.append(("target_url", "required"))
    if export.get("batch_size") is not None and not 1 <= export["batch_size"] <= 10000:
        problems.append(("batch_size", "must be from 1 to 10000"))
    if export.get("batch_bytes") is not None and not 1024 <= export["batch_bytes"] <= 8 * 2**20:
        problems.append(("batch_bytes", "must be from 1KiB to 8MiB"))  # the importer takes bodies up to 16 MiB
    return cast(ExportTarget, export), problems


def check_endpoints(config: Config, reactor: object, inherited: bool = True) -> None:
    """Parse every endpoint string now, so a typo stops the start, not a listener.  With
    ``inherited`` false (``stationd-admin check-config``, a unit's ExecStartPre, which systemd
    hands no sockets) ``systemd:`` endpoints are checked for their form only."""
    from twisted.internet.endpoints import serverFromString

    errors = []
    for key in ("http", "https"):
        for description in config["web"][key]:
            try:
                if description.startswith("systemd:") and not inherited:
                    _check_systemd(description)
                else:
                    serverFromString(reactor, description)
            except Exception as e:
                origin = config.origin["web", key]
                errors.append(f"{origin}:web:{key}: bad endpoint {description!r}: {e}")
    if errors:
        raise ConfigError(errors)
