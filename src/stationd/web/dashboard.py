"""The dashboard: one self-contained HTML page at ``GET /`` that draws itself from the API.

The page (dashboard.html, beside this module) carries its CSS and JavaScript
inline and loads nothing from anywhere else, so it works on a station with
no internet; its script reads ``/api/v1/status``, the sensors and their
readings, and recent quarantined events, under the node's request_path.
"""

import hashlib
import html
import json
from importlib import resources

from twisted.web import http
from twisted.web.iweb import IRequest

from stationd.web.http import route

PAGE = resources.files("stationd.web").joinpath("dashboard.html").read_text(encoding="utf-8")

# Inline script and style are the page's own; fetches, the favicon (a data: URL) and links stay on the node.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'")


def render_page(request_path: str) -> bytes:
    """The page with the node's request_path in it: as a JavaScript string, where its fetches start, and
    in its links.  Escaped for both places, since a request_path may hold any character a URL path can."""
    as_script = json.dumps(request_path).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (PAGE.replace("{{prefix_json}}", as_script)
                .replace("{{prefix_html}}", html.escape(request_path, quote=True))
                .encode("utf-8"))


class Dashboard:
    def __init__(self, request_path: str) -> None:
        self.request_path = request_path
        self.body = render_page(request_path)
        self.etag = b'"' + hashlib.sha256(self.body).hexdigest()[:32].encode("ascii") + b'"'

    @route("GET", "/")
    def page(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii"))
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        # no-cache: revalidated each load (a 304 by the ETag), so an upgraded node serves its new page at once
        request.setHeader(b"cache-control", b"no-cache")
        if request.setETag(self.etag) == http.CACHED:
            return b""
        return self.body
