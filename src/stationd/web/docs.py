"""The API's own description: ``GET /api/openapi.json`` (OpenAPI 3.1, stationd.web.openapi)
and ``GET /api/docs``, a reference page rendered here from it, with no external assets
(nodes are often offline)."""

import html
import json
from collections.abc import Mapping
from typing import Any

from stationd import __version__
from stationd.web import openapi
from stationd.web.http import json_body, route

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#1d2430}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ccd;margin-top:2rem;text-transform:capitalize}
details{border:1px solid #dde;border-radius:6px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer}code,pre{font:13px ui-monospace,monospace}pre{background:#f4f5f8;overflow:auto;padding:.5rem}
.m{display:inline-block;min-width:4.2rem;font-weight:600}.get{color:#0a6}.post{color:#06c}.put,.patch{color:#a60}
.delete{color:#c22}table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #dde;padding:.2rem .5rem;
text-align:left;vertical-align:top}nav a{margin-right:.8rem}
"""


class ApiDocs:
    def __init__(self, groups: Mapping[str, object], components: list[str], request_path: str, node_name: str,
                 public_read: bool):
        # (groups: every component's route group, this one among them once wire() has made it)
        self.groups, self.components = groups, components
        self.request_path, self.node_name, self.public_read = request_path, node_name, public_read
        self._spec: dict[str, Any] | None = None

    def description(self) -> dict[str, Any]:
        if self._spec is None:
            mounted = {name: self.groups[name] for name in self.components}
            self._spec = openapi.spec(mounted, self.request_path, __version__, self.node_name, self.public_read)
        return self._spec

    @route("GET", "/api/openapi.json")
    def spec(self, request):
        return json_body(request, self.description())

    @route("GET", "/api/docs")
    def page(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'")
        return render(self.description()).encode("utf-8")


def render(spec: dict[str, Any]) -> str:
    """The spec as one HTML page: the operations by tag, each with its parameters, body and answers."""
    by_tag: dict[str, list[str]] = {tag["name"]: [] for tag in spec["tags"]}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            by_tag.setdefault(operation["tags"][0], []).append(_operation(method, path, operation))
    e = html.escape
    nav = "".join(f'<a href="#{e(tag)}">{e(tag)}</a>' for tag, items in by_tag.items() if items)
    sections = "".join(f'<h2 id="{e(tag)}">{e(tag)}</h2>' + "".join(items) for tag, items in by_tag.items() if items)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>{e(spec["info"]["title"])} API</title>'
            f'<style>{STYLE}</style></head><body><h1>{e(spec["info"]["title"])} <small>{e(spec["info"]["version"])}'
            f'</small></h1><p>{_text(spec["info"]["description"])}</p><p>The same as OpenAPI 3.1: '
            f'<a href="openapi.json">openapi.json</a>.  Keys: <code>Authorization: Bearer &lt;key&gt;</code> or '
            f'<code>Authorization: FPS_API APIKEY=&lt;key&gt;</code>.</p><nav>{nav}</nav>{sections}</body></html>')


def _text(markdown_ish: str) -> str:
    """Escaped, with the spec's `code` spans as <code>."""
    parts = html.escape(markdown_ish, quote=False).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td><td>{_schema_text(p['schema'])}"
                   f"</td><td>{_text(p.get('description', ''))}</td></tr>" for p in operation["parameters"])
    params = f"<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>{rows}</table>" if rows else ""
    body = ""
    if "requestBody" in operation:
        for media, content in operation["requestBody"]["content"].items():
            body += (f"<p>Body <code>{e(media)}</code> {_text(operation['requestBody'].get('description', ''))}</p>"
                     f"<pre>{e(json.dumps(content['schema'], indent=1))}</pre>")
    answers = "".join(f"<tr><td>{e(status)}</td><td>{_text(_response_text(answer))}</td></tr>"
                      for status, answer in operation["responses"].items())
    return (f'<details id="{e(operation["operationId"])}"><summary><span class="m {method}">{method.upper()}'
            f'</span> <code>{e(path)}</code> — {_text(operation["summary"])}</summary>'
            f'<p>{_text(operation.get("description", ""))}</p>{params}{body}'
            f'<table><tr><th>status</th><th>answer</th></tr>{answers}</table></details>')


def _schema_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(f"<code>{html.escape(str(v))}</code>" for v in schema["enum"])
    if schema.get("type") == "array":
        return _schema_text(schema["items"]) + " (repeatable)"
    return html.escape(str(schema.get("type", "any")))


def _response_text(answer: dict[str, Any]) -> str:
    if "$ref" in answer:
        return openapi.ERRORS[answer["$ref"].rsplit("/E", 1)[1]] + " (an error object)"
    return str(answer["description"])
