"""What every route group shares: JSON bodies, JSON errors, route declarations."""

import binascii
import functools
import re
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, NoReturn, TypeVar, cast
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from stationd import jsoncodec
from stationd.store import TRANSIENT, one_line

log = Logger()
F = TypeVar("F", bound=Callable[..., Any])

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class HTTPError(Exception):
    """Raise from a handler to answer ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = headers or {}
        self.details = details


def error_body(code: str, message: str, details: Any = None) -> bytes:
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return jsoncodec.dumps({"error": error})


def json_body(request: Request, value: Any, status: int = 200) -> bytes:
    """Set status and content type; return the encoded JSON for Klein to write."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return jsoncodec.dumps(value)


def _unquote_plus(value: bytes) -> bytes:
    # Quoted-printable decoding is percent-decoding with "=" for "%", in C:
    # ~30x faster than urllib on large HiSPARC bodies.  Where the two could
    # differ ("=" or line breaks in the input, or a "%" not followed by two
    # hex digits, which shortens the output by less than 2) the stdlib
    # decodes instead; tests/test_web.py compares both on random input.
    if b"=" not in value and b"\n" not in value and b"\r" not in value:
        decoded = binascii.a2b_qp(value.replace(b"%", b"=").replace(b"+", b" "))
        if len(decoded) == len(value) - 2 * value.count(b"%"):
            return decoded
    return unquote_to_bytes(value.replace(b"+", b" "))


def parse_form(body: bytes) -> dict[bytes, list[bytes]]:
    """An application/x-www-form-urlencoded body as {name: [value, ...]} (bytes)."""
    fields: dict[bytes, list[bytes]] = {}
    for pair in body.split(b"&"):
        if pair:
            name, _, value = pair.partition(b"=")
            fields.setdefault(_unquote_plus(name), []).append(_unquote_plus(value))
    return fields


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


DEFAULT_MAX_BODY = 16 * 1024 * 1024
_WBITS = {b"gzip": (31,), b"x-gzip": (31,), b"deflate": (15, -15)}  # deflate: zlib-wrapped, or raw as some send it


def read_body(request: Request) -> bytes:
    """The request body, decompressed if it is sent with Content-Encoding gzip or deflate (as
    Telegraf's and Vector's HTTP outputs can).  The decompressed size is held to the site's
    max_body_size (413) without ever holding more of it; a corrupt stream is a 400."""
    body = request.content.read() if request.content is not None else b""
    encoding = (request.getHeader(b"content-encoding") or b"identity").strip().lower()
    if encoding == b"identity":
        return body
    if encoding not in _WBITS:
        raise HTTPError(415, f"Content-Encoding {encoding.decode('latin-1')!r} is not accepted; "
                        "send identity, gzip or deflate")
    limit = getattr(getattr(request.channel, "site", None), "max_body_size", DEFAULT_MAX_BODY)
    for wbits in _WBITS[encoding]:
        stream = zlib.decompressobj(wbits)
        try:
            out = stream.decompress(body, limit + 1)
        except zlib.error as e:
            error = e
            continue
        if len(out) > limit or stream.unconsumed_tail:
            raise HTTPError(413, f"the decompressed body is larger than the limit of {limit} bytes")
        if not stream.eof:
            raise HTTPError(400, f"the {encoding.decode()} body is truncated", code="bad_encoding")
        return out
    raise HTTPError(400, f"the body is not valid {encoding.decode()}: {error}", code="bad_encoding")


def read_json(request: Request) -> dict[str, Any]:
    """The request body (decompressed: read_body) as a JSON object, or a 400/413/415 HTTPError;
    nested deeper than jsoncodec.MAX_DEPTH levels a 400 (too_deep), a number beyond a double's
    range (1e400) a 422 (number_out_of_range)."""
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type not in (b"application/json", b""):
        raise HTTPError(415, "send the body as application/json")
    raw = read_body(request)
    try:
        value = jsoncodec.loads(raw or b"null", parse_constant=_no_constants)
    except jsoncodec.NumberOutOfRange as e:  # well-formed JSON, but it could only be stored changed
        raise HTTPError(422, f"{e}; nothing was stored", code="number_out_of_range") from None
    except jsoncodec.TooDeep as e:
        raise HTTPError(400, f"{e}; send flatter data", code="too_deep") from None
    except ValueError as e:
        raise HTTPError(400, f"body is not valid JSON: {e}", code="bad_json") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "body must be a JSON object", code="bad_json")
    return value


def route(method: str, path: str) -> Callable[[F], F]:
    """Declare a component method as the handler of ``method path``."""

    def declare(handler: F) -> F:
        handler.__dict__.setdefault("stationd_routes", []).append((method, path))
        return handler

    return declare


def declared_routes(group: type) -> list[tuple[str, str, str]]:
    """(method, path, method name) of every @route method of a route group class."""
    return [(method, path, name) for name in dir(group)
            for method, path in getattr(getattr(group, name), "stationd_routes", ())]


class Route(NamedTuple):
    method: str
    path: str  # /api/v1/events/<event_id>: as declared, after the group's mount_path if it has one
    name: str  # of the method that declared it
    handler: Callable[..., Any]  # what answers it
    declared: Callable[..., Any]  # the declaring function (its auth.require access: web.openapi)
    declared_path: str  # as declared (web.openapi describes it so)


def routes_of(component: object) -> list[Route]:
    """The routes ``component`` answers: its @route methods, each under the component's ``mount_path``
    if it has one (a path the configuration chooses: stationd.web.meteorpi); or, for a
    stationd.web.forward.Forward, those of the group it forwards, each to its ``forward``."""
    group = getattr(component, "forwarded_group", None)
    if group is None:
        base = getattr(component, "mount_path", "")
        return [Route(method, base + path, name, getattr(component, name), getattr(type(component), name), path)
                for method, path, name in declared_routes(type(component))]
    forward = getattr(component, "forward")
    return [Route(method, path, name, forward, getattr(group, name), path)
            for method, path, name in declared_routes(group)]


def mount(app: Klein, component: object, prefix: str) -> None:
    """Register every route of ``component`` (routes_of) on ``app`` under ``prefix``."""
    owner = type(component).__name__
    for method, path, name, handler, _, _ in routes_of(component):
        app.route(
            prefix.rstrip("/") + path,
            methods=[method],
            endpoint=f"{owner}.{name}.{method}",
        )(_naming_route(handler, template(path)))


def template(path: str) -> str:
    """A route's path as metrics and the OpenAPI spec name it: ``/api/v1/events/{event_id}``."""
    return re.sub(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", path)


def _naming_route(handler: F, route_template: str) -> F:
    """``handler``, first setting ``request.stationd_route`` (the site's metrics label it so)."""

    @functools.wraps(handler)
    def named(request: Any, *args: Any, **kwargs: Any) -> Any:
        request.stationd_route = route_template
        return handler(request, *args, **kwargs)

    return cast(F, named)


def render_error(request: IRequest, error: HTTPError) -> bytes:
    """The JSON answer of an HTTPError: status, headers, body."""
    for name, value in error.headers.items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    request.setResponseCode(error.status)
    request.setHeader(b"content-type", b"application/json")
    return error_body(error.code, error.message, error.details)


_unavailable_logged = [0.0]  # when a database outage was last logged (one line in 10 s, not one a request)


def render_failure(request: IRequest, failure: Failure) -> bytes:
    """The JSON answer of any exception of a handler: an HTTPError as itself, the database away
    a 503 to retry, the rest a logged 500."""
    if failure.check(HTTPError):
        return render_error(request, failure.value)
    if failure.check(*TRANSIENT):
        now = time.monotonic()
        if now - _unavailable_logged[0] >= 10:
            _unavailable_logged[0] = now
            log.warn("Database unavailable ({reason}); requests that need it are answered 503 until it is back",
                     reason=one_line(failure.value))
        return render_error(request, HTTPError(503, "the database is unavailable; retry later",
                                               code="store_unavailable", headers={"Retry-After": "5"}))
    log.failure("Error handling {method} {path}", failure,
                method=request.method.decode(), path=request.path.decode("utf-8", "replace"))
    request.setResponseCode(500)
    request.setHeader(b"content-type", b"application/json")
    return error_body("internal_error", "internal error; the node's log has the details")


def make_app() -> Klein:
    """A Klein app whose every error, routing errors included, is JSON."""
    app = Klein()

    @app.handle_errors(HTTPError)
    def http_error(request: IRequest, failure: Failure) -> bytes:
        return render_error(request, failure.value)

    @app.handle_errors(HTTPException)
    def routing_error(request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        # Keep werkzeug's headers: Location on redirects, Allow on 405.
        for name, value in error.get_response().headers:
            if name.lower() not in ("content-type", "content-length"):
                request.setHeader(name.encode("ascii"), value.encode("latin-1"))
        request.setResponseCode(error.code)
        request.setHeader(b"content-type", b"application/json")
        if isinstance(error, MethodNotAllowed):  # (valid_methods: werkzeug's router always gives them)
            message = (f"{request.method.decode()} is not allowed here; "
                       f"allowed: {', '.join(cast('Iterable[str]', error.valid_methods))}")
        elif error.code == 404:
            message = f"no such resource: {request.path.decode('utf-8', 'replace')}"
        else:
            message = error.description or error.name
        return error_body(_CODES.get(error.code, "error"), message)

    @app.handle_errors(Exception)
    def internal_error(request: IRequest, failure: Failure) -> bytes:
        return render_failure(request, failure)

    return app
