"""The dashboard page as the node serves it: headers, the request_path in it, nothing from elsewhere.

What the page draws is checked in a real browser by tests/test_e2e_dashboard.py."""

import re
from html.parser import HTMLParser

import pytest_twisted
from treq.testing import StubTreq

from conftest import call

from stationd.web import make_resource
from stationd.web.dashboard import Dashboard, render_page

SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML name in the script, never fetched


def client(prefix="/"):
    return StubTreq(make_resource({"dashboard": Dashboard(prefix)}, prefix))


class Links(HTMLParser):
    """Every URL the markup points at (src, href, action...) and every inline script's text."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"
        self.urls += [value for name, value in attrs if name in ("src", "href", "action", "srcset", "data", "poster")]
        assert tag != "script" or not dict(attrs).get("src"), "a script from a file"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def links_of(body):
    parser = Links()
    parser.feed(body.decode("utf-8"))
    return parser


@pytest_twisted.ensureDeferred
async def test_the_page_is_html_that_revalidates_and_allows_only_the_node():
    stub = client()
    response, body = await call(stub, "GET", "http://n/")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    assert response.headers.getRawHeaders("cache-control") == ["no-cache"]
    policy = response.headers.getRawHeaders("content-security-policy")[0]
    assert "default-src 'self'" in policy and "img-src 'self' data:" in policy
    assert body.startswith(b"<!doctype html>") and b'<meta name="viewport"' in body
    assert b"{{" not in body  # every placeholder filled
    etag = response.headers.getRawHeaders("etag")[0]
    response, body = await call(stub, "GET", "http://n/", headers={"If-None-Match": etag})
    assert (response.code, body) == (304, b"")


@pytest_twisted.ensureDeferred
async def test_the_page_fetches_and_links_under_the_request_path():
    stub = client("/station/")
    response, body = await call(stub, "GET", "http://n/station/")
    assert response.code == 200
    assert b'const PREFIX = "/station/";' in body
    links = links_of(body)
    assert "/station/api/docs" in links.urls and "/station/metrics" in links.urls
    script = "".join(links.scripts)
    # every request the script makes goes through get(), which starts at PREFIX
    assert script.count("fetch(") == 1 and "fetch(PREFIX + path" in script
    response, _ = await call(stub, "GET", "http://n/")
    assert response.code == 404
    response, _ = await call(stub, "POST", "http://n/station/")
    assert response.code == 405


def test_nothing_in_the_page_points_at_another_host():
    body = render_page("/")
    links = links_of(body)
    assert links.urls, "the parser found no links at all"
    for url in links.urls:
        assert url.startswith("data:") or (url.startswith("/") and not url.startswith("//")), url
    text = body.decode("utf-8")
    assert set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'`)]*", text)) == {SVG_NAMESPACE}
    assert not re.search(r"""["'(]//""", text.replace("://", "")), "a scheme-relative URL"
    assert "@import" not in text and "url(" not in text  # no stylesheet or font from a file


def test_a_request_path_cannot_break_out_of_the_script_or_the_links():
    body = render_page('/a"</script><img src=x>&/').decode("utf-8")
    assert "</script><img" not in body
    assert r'const PREFIX = "/a\"\u003c/script\u003e\u003cimg src=x\u003e\u0026/";' in body
    assert 'href="/a&quot;&lt;/script&gt;&lt;img src=x&gt;&amp;/api/docs"' in body
