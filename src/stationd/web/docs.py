"""The API's own description: ``GET /api/openapi.json`` (OpenAPI 3.1) and ``GET /api/docs``."""

from collections.abc import Mapping

from stationd.web.http import json_body, route


class ApiDocs:
    def __init__(self, groups: Mapping[str, object], components: list[str], request_path: str, node_name: str):
        self.groups, self.components = groups, components
        self.request_path, self.node_name = request_path, node_name

    @route("GET", "/api/openapi.json")
    def spec(self, request):
        return json_body(request, {"openapi": "3.1.0"})

    @route("GET", "/api/docs")
    def page(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b"<!doctype html><title>stationd API</title>"
